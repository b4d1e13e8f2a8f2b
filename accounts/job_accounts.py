"""Job accounts: which unix account each service user's jobs run under.

Rules, for every way an account is given (the admin, `job_accounts`, the dispatcher):
- an account is never root and never the service's own user (the owner of its data and
  code), and serves one service user only;
- a pool account given to a user stays theirs: it is never given to another, so the
  files it owns in shared filesystems never change hands;
- a deployment with no job accounts at all runs every tenant's jobs as the one
  `BATCHES_JOB_USER` (as before accounts existed); once any exists, each tenant needs
  their own, and a tenant without one gets the next free pool account at their next job,
  or their jobs wait, saying so.
"""

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import JobAccount

NO_ACCOUNT_REASON = (
    "Waiting for a job account: your jobs run under a unix account of your own, and none is free; "
    "an operator can map one to you or add to the pool (python manage.py job_accounts --pool N)"
)


NOBODY_UID = 65534


class JobAccountError(ValueError):
    """An account that cannot be given (the message says why)."""


@dataclass(frozen=True)
class PoolResult:
    created: list[str]  # unix accounts made now
    adopted: list[str]  # existing unix accounts of the pool's names, recorded now
    total: int  # pool accounts now recorded


def accounts_in_use() -> bool:
    """Tenants run under accounts of their own (any job account exists)."""
    return JobAccount.objects.exists()


def service_gids() -> set[int]:
    """The groups the service's files belong to (its data, logs, code): never a job's."""
    gids = {0}
    for path in (settings.BASE_DIR, settings.DATA_DIR, settings.BATCHES_LOG_DIR):
        with contextlib.suppress(OSError):
            gids.add(path.stat().st_gid)
    return gids


def service_uids() -> set[int]:
    """The uids the service itself runs as or owns its files with: never a job's."""
    uids = {0, os.geteuid()}
    for path in (settings.BASE_DIR, settings.DATA_DIR):
        try:
            uids.add(path.stat().st_uid)
        except OSError:
            continue
    return uids


def first_user_uid() -> int:
    """The lowest uid of people's accounts on this machine (UID_MIN of login.defs)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/etc/login.defs").read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "UID_MIN":
                return int(parts[1])
    return 1000


def account_errors(*, username: str, user: AbstractBaseUser | None = None, pooled: bool = False) -> list[str]:
    """What forbids running `user`'s jobs as the unix account `username` (empty: nothing).
    A mapped account must be a person's (uid from UID_MIN, not nobody): a system
    account's uid is a daemon's (postgres, munge, slurm), whose files and limits the
    tenant would share; only the pool's own system accounts are taken."""
    try:
        entry = pwd.getpwnam(username)
    except KeyError:
        return [f"there is no unix account {username!r} on this machine"]
    errors = []
    pooled = pooled or JobAccount.objects.filter(username=username, pooled=True).exists()
    if not pooled and (entry.pw_uid < first_user_uid() or entry.pw_uid == NOBODY_UID):
        errors.append(
            f"{username!r} (uid {entry.pw_uid}) is a system account, not a person's: map accounts from uid "
            f"{first_user_uid()} on, or use the pool (job_accounts --pool N)"
        )
    if entry.pw_gid in service_gids():
        errors.append(f"{username!r}'s group (gid {entry.pw_gid}) is the service's or root's: its jobs would read the service's files")
    same_uid = JobAccount.objects.filter(uid=entry.pw_uid).exclude(username=username).first()
    if same_uid is not None:
        errors.append(f"{username!r} has uid {entry.pw_uid}, which is job account {same_uid.username!r}'s too")
    if username == settings.BATCHES_JOB_USER:
        errors.append(f"{username!r} is BATCHES_JOB_USER, which every tenant's jobs ran as: its files are everyone's")
    if entry.pw_uid in service_uids():
        errors.append(f"{username!r} (uid {entry.pw_uid}) is root or the service's own user: jobs never run as it")
    taken = JobAccount.objects.filter(username=username).exclude(user__isnull=True)
    if user is not None:
        taken = taken.exclude(user=user)
    if taken.exists():
        errors.append(f"{username!r} already runs another user's jobs")
    elif (
        JobAccount.objects.filter(username=username, assigned_at__isnull=False, user__isnull=True)
        .exclude(previous_user_id=getattr(user, "pk", None))
        .exists()
    ):
        errors.append(f"{username!r} was another user's: its files may still be theirs")
    return errors


def map_job_account(*, user: AbstractBaseUser, username: str) -> JobAccount:
    """Run `user`'s jobs as the existing unix account `username` from now on (their
    running attempts keep the account they started with)."""
    errors = account_errors(username=username, user=user)
    if errors:
        raise JobAccountError("; ".join(errors))
    uid = pwd.getpwnam(username).pw_uid
    now = timezone.now()
    with transaction.atomic():
        JobAccount.objects.filter(user=user).exclude(username=username).update(user=None, previous_user_id=user.pk)
        account, _ = JobAccount.objects.update_or_create(username=username, defaults={"uid": uid, "user": user, "assigned_at": now})
    return account


def unmap_job_account(*, user: AbstractBaseUser) -> bool:
    """`user` has no account any more: their next job takes the next free pool account,
    or waits for one. The account stays out of the pool (its files are theirs); only
    they may have it back. False if they had none."""
    return bool(JobAccount.objects.filter(user=user).update(user=None, previous_user_id=user.pk))


def assign_from_pool(*, user_id: object) -> JobAccount | None:
    """The user's account, giving them the next free pool account if they have none;
    None when the pool has none free."""
    with transaction.atomic():
        own = JobAccount.objects.filter(user_id=user_id).first()
        if own is not None:
            return own
        free = (
            JobAccount.objects.select_for_update(skip_locked=True)
            .filter(pooled=True, user__isnull=True, assigned_at__isnull=True)
            .order_by("username")
            .first()
        )
        if free is None:
            return None
        free.user_id, free.assigned_at = user_id, timezone.now()
        try:
            with transaction.atomic():
                free.save(update_fields=["user", "assigned_at"])
        except IntegrityError:  # given an account by someone else meanwhile
            return JobAccount.objects.filter(user_id=user_id).first()
        return free


def pool_name(index: int, *, prefix: str) -> str:
    return f"{prefix}{index:04d}"


def ensure_pool(*, size: int, prefix: str) -> PoolResult:
    """At least `size` pool accounts: the missing ones of `<prefix>0001`... are created
    (useradd: a system account, its own group, no home, no login shell) or, when a unix
    account of that name exists already (made by an earlier run), recorded. Idempotent.
    Needs root. The accounts are made on this machine only: every other machine that
    runs jobs (Slurm nodes, other workers) needs the same names with the same uids,
    from the site's directory service (or made there by hand with those uids)."""
    if size < 0:
        raise JobAccountError("the pool's size cannot be negative")
    if len(pool_name(size, prefix=prefix)) > 32:
        raise JobAccountError(f"{pool_name(size, prefix=prefix)!r} is longer than a unix account name may be (32)")
    recorded = set(JobAccount.objects.filter(pooled=True).values_list("username", flat=True))
    created: list[str] = []
    adopted: list[str] = []
    index = 0
    while len(recorded) < size:
        index += 1
        name = pool_name(index, prefix=prefix)
        if name in recorded or JobAccount.objects.filter(username=name).exists():
            continue
        try:
            pwd.getpwnam(name)
        except KeyError:
            _useradd(name)
            created.append(name)
        else:
            adopted.append(name)
        errors = account_errors(username=name, pooled=True)
        if errors:
            raise JobAccountError("; ".join(errors))
        JobAccount.objects.create(username=name, uid=pwd.getpwnam(name).pw_uid, pooled=True)
        recorded.add(name)
    return PoolResult(created=created, adopted=adopted, total=len(recorded))


def _useradd(name: str) -> None:
    useradd = shutil.which("useradd", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if useradd is None:
        raise JobAccountError("useradd is not installed: create the accounts another way and map them")
    if os.geteuid() != 0:
        raise JobAccountError("creating unix accounts needs root")
    result = subprocess.run(  # noqa: S603 (an argv list; the name is the pool's own)
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise JobAccountError(f"useradd {name} failed: {result.stderr.strip() or result.returncode}")
