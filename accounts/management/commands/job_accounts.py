"""python manage.py job_accounts: the unix accounts tenants' jobs run under.

job_accounts                      list them (account, uid, user, pool or mapped)
job_accounts --pool N             make sure N pool accounts exist (idempotent)
job_accounts --map USER ACCOUNT   run USER's jobs as the existing unix account ACCOUNT
job_accounts --unmap USER         USER's next job takes a free pool account, or waits
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.job_accounts import JobAccountError, ensure_pool, map_job_account, unmap_job_account
from accounts.models import JobAccount


class Command(BaseCommand):
    help = (
        "List, create (a pool) or map the unix accounts that tenants' jobs run under. Each service user's jobs run "
        "as their own account: mapped here or in the admin, or the next free pool account at their first job."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        action = parser.add_mutually_exclusive_group()
        action.add_argument("--pool", type=int, metavar="N", help="make sure N pool accounts exist (creates them with useradd; root)")
        action.add_argument("--map", nargs=2, metavar=("USER", "ACCOUNT"), help="run USER's jobs as the existing unix account ACCOUNT")
        action.add_argument(
            "--unmap",
            metavar="USER",
            help="USER's next job takes a free pool account, or waits for one (the old account stays theirs alone)",
        )
        parser.add_argument(
            "--prefix",
            default=settings.BATCHES_JOB_ACCOUNT_PREFIX,
            help="pool accounts' names: PREFIX0001... (default BATCHES_JOB_ACCOUNT_PREFIX, %(default)s)",
        )

    def handle(self, *args, **options) -> None:
        try:
            if options["pool"] is not None:
                result = ensure_pool(size=options["pool"], prefix=options["prefix"])
                self.stdout.write(
                    f"pool: {result.total} account(s); created {len(result.created)}"
                    + (f", recorded {len(result.adopted)} that existed already" if result.adopted else "")
                )
            elif options["map"]:
                username, account = options["map"]
                account = map_job_account(user=self._user(username), username=account)
                self.stdout.write(f"{username}'s jobs run as {account.username} (uid {account.uid})")
            elif options["unmap"]:
                had = unmap_job_account(user=self._user(options["unmap"]))
                self.stdout.write(f"{options['unmap']} has no job account now" if had else f"{options['unmap']} had no job account")
            else:
                self._list()
        except JobAccountError as exc:
            raise CommandError(str(exc)) from exc

    def _user(self, username: str):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        return user

    def _list(self) -> None:
        accounts = JobAccount.objects.select_related("user").order_by("username")
        if not accounts:
            if settings.BATCHES_JOB_USER:
                self.stdout.write(f"no job accounts: every tenant's jobs run as {settings.BATCHES_JOB_USER}")
            else:
                self.stdout.write("no job accounts and no BATCHES_JOB_USER: a root worker refuses to run jobs (see --pool)")
            return
        for account in accounts:
            kind = "pool" if account.pooled else "mapped"
            owner = account.user.get_username() if account.user else ("(retired)" if account.assigned_at else "(free)")
            self.stdout.write(f"{account.username}\t{account.uid}\t{kind}\t{owner}")
