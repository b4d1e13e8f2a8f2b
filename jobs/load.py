"""Synthetic history for benchmarks and for trying the admin at scale
(`manage.py generate_load`): batches of finished, failed and waiting jobs with their
attempts and events, written in a few set-based statements per chunk of batches.

Not for a database that workers serve: its SUBMITTED and RUNNABLE jobs are real work to
a worker (a no-op tool, `/bin/true`), and its users have no tokens.
"""

import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Case, F, Model, Value, When
from django.db.models.functions import Mod
from django.db.models.lookups import Exact
from django.utils import timezone

from batches.catalog import check_tool
from batches.models import Batch, Tool
from batches.parameters import argument_types
from core.reason_codes import EXIT_CODE, SUCCEEDED
from jobs import sql
from jobs.models import Attempt, Job, JobEvent, Worker
from jobs.services import create_jobs
from jobs.statuses import Status

# Job states by `index % 20`: mostly done, some failed, some waiting.
_STATES = ["SUCCEEDED"] * 14 + ["FAILED"] * 2 + ["RUNNABLE", "PENDING", "SUBMITTED", "SUBMITTED"]
# (reason, exit code) of the failed ones, by `index // 20 % 4`.
_FAILURES = [("exit code 1", 1), ("timed out after 60 s", None), ("killed: out of memory (limit 256 MiB)", None), ("exit code 2", 2)]
_TOOLS = ["load-align", "load-render", "load-simulate"]
_MAX_USERS = 10_000
_WORKERS = 4
_CHUNK = 50  # batches per transaction


@dataclass(frozen=True)
class LoadSummary:
    users: int
    batches: int
    jobs: int


def generate_load(*, batches: int, jobs: int, users: int = 20, days: int = 30, seed: int = 1) -> LoadSummary:
    """Create `batches` batches holding `jobs` jobs in all (spread evenly), owned by
    `users` users named load-user-NN and using three load-* tools, created over the last
    `days` days. Jobs end in every state a user sees: 70% SUCCEEDED, 10% FAILED with a
    reason, the rest waiting; each ended job has one ended attempt on one of four stopped
    workers and one event. Idempotent in its users, tools and workers; adds batches
    each time. Raises ValueError on impossible sizes."""
    if batches < 1 or jobs < batches or users < 1:
        raise ValueError("need at least one batch, one user and one job per batch")
    if users > _MAX_USERS:
        raise ValueError(f"at most {_MAX_USERS} users")
    most = settings.BATCHES_MAX_JOBS_PER_BATCH
    if -(-jobs // batches) > most:
        raise ValueError(f"at most {most} jobs per batch (BATCHES_MAX_JOBS_PER_BATCH): give more batches")
    if not 0 <= days <= 3650:
        raise ValueError("--days must be between 0 and 3650 (batches are created in the past)")
    rng = random.Random(seed)  # noqa: S311 (made-up sizes and times, not secrets)
    people = [get_user_model().objects.get_or_create(username=f"load-user-{n:02d}")[0] for n in range(1, users + 1)]
    # Through the catalog's own check, as every writer of tools (a tool it did not pass
    # broke GET /tools for every user).
    command, parameters = check_tool(command=["/bin/true", "{message}"], parameters={"message": {"type": "string"}})
    tools = [Tool.objects.update_or_create(name=name, defaults={"command": command, "parameters": parameters})[0] for name in _TOOLS]
    workers = _workers()
    now = timezone.now()
    per_batch, extra = divmod(jobs, batches)
    made = 0
    for start in range(0, batches, _CHUNK):
        with transaction.atomic():
            chunk = []
            for number in range(start, min(start + _CHUNK, batches)):
                tool = tools[number % len(tools)]
                chunk.append(
                    Batch.objects.create(
                        owner=people[number % len(people)],
                        tool=tool,
                        command=tool.command,
                        arg_types=argument_types(tool.parameters),
                        name=f"load {number}",
                        cpu=rng.choice([1, 1, 2, 4]),
                        memory=rng.choice([256, 1024, 4096]),
                        n_jobs=per_batch + (number < extra),
                        timeout_seconds=60,
                        create_time=now - timedelta(seconds=rng.uniform(0, days * 86400)),
                    )
                )
            for batch in chunk:
                made += create_jobs(batch=batch, arguments=[{"message": f"m{i}"} for i in range(batch.n_jobs)])
            _settle(batch_ids=[batch.pk for batch in chunk], workers=workers)
    if connection.vendor == "postgresql":
        # Statistics for the planner, and the visibility map that lets counts read
        # the indexes only (what autovacuum would do a while later).
        # (VACUUM cannot run inside a transaction: a caller's, or a test's.)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE" if connection.in_atomic_block else "VACUUM ANALYZE")
    return LoadSummary(users=len(people), batches=batches, jobs=made)


def _workers() -> list[Worker]:
    found = list(Worker.objects.filter(name__startswith="load-worker-").order_by("name"))
    if found:
        return found
    now = timezone.now()
    return [
        Worker.objects.create(
            name=f"load-worker-{n}",
            node=f"load-node-{n}",
            cpus=16,
            memory_mib=65536,
            state=Worker.State.STOPPED,
            lease_expires=now,
            stopped_at=now,
        )
        for n in range(_WORKERS)
    ]


def _settle(*, batch_ids: list, workers: list[Worker]) -> None:
    """Give the chunk's jobs their states, times, attempts and events: set-based
    statements, a handful whatever the chunk's size."""
    jobs = Job.objects.filter(batch_id__in=batch_ids).order_by()
    by_index = Mod("index", len(_STATES))
    jobs.update(status=Case(*[When(Exact(by_index, n), then=Value(state)) for n, state in enumerate(_STATES)]))
    ended = jobs.filter(status__in=["SUCCEEDED", "FAILED"])
    ended.update(
        attempts=1,
        exit_code=0,
        worker_id=Case(*[When(Exact(Mod("index", len(workers)), n), then=Value(w.pk)) for n, w in enumerate(workers)]),
        start_time=F("create_time") + timedelta(seconds=2),
        stop_time=F("create_time") + timedelta(seconds=47),
    )
    by_failure = Mod(F("index") / len(_STATES), len(_FAILURES))
    jobs.filter(status="FAILED").update(
        reason=Case(*[When(Exact(by_failure, n), then=Value(reason)) for n, (reason, _) in enumerate(_FAILURES)]),
        exit_code=Case(*[When(Exact(by_failure, n), then=Value(code)) for n, (_, code) in enumerate(_FAILURES)]),
    )
    # One ended attempt and one event per ended job, copied from the job's own row: the
    # tables and columns named by the models, every constant a parameter.
    chosen, chosen_params = ended.values("id").query.sql_with_params()
    conn = sql.default_connection()

    def columns(model: type[Model], *names: str) -> str:
        return ", ".join(sql.column(model, name, conn) for name in names)

    jobs_table = sql.table(Job, conn)
    job_id, status = sql.column(Job, "id", conn), sql.column(Job, "status", conn)
    attempt_columns = columns(Attempt, "job", "number", "executor", "worker", "external_id", "node", "state", "create_time")
    attempt_columns += ", " + columns(Attempt, "start_time", "end_time", "exit_code", "reason", "charged", "log_offset", "reason_code")
    with conn.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {sql.table(Attempt, conn)} ({attempt_columns}) "  # noqa: S608 (names from the models; values are parameters)
            f"SELECT {job_id}, %s, %s, {columns(Job, 'worker')}, %s, %s, %s, {columns(Job, 'create_time', 'start_time', 'stop_time')}, "
            f"{columns(Job, 'exit_code', 'reason')}, {status} = %s, %s, CASE WHEN {status} = %s THEN %s ELSE %s END "
            f"FROM {jobs_table} WHERE {job_id} IN ({chosen})",
            [
                1,
                "local",
                "",
                "load",
                Attempt.State.ENDED.value,
                Status.FAILED.value,
                0,
                Status.FAILED.value,
                EXIT_CODE,
                SUCCEEDED,
                *chosen_params,
            ],
        )
        cursor.execute(
            f"INSERT INTO {sql.table(JobEvent, conn)} ({columns(JobEvent, 'job', 'batch', 'owner', 'from_status', 'to_status', 'reason', 'attempt', 'time')}) "  # noqa: S608 (names from the models; values are parameters)
            f"SELECT {job_id}, {columns(Job, 'batch')}, (SELECT {columns(Batch, 'owner')} FROM {sql.table(Batch, conn)} "
            f"WHERE {sql.table(Batch, conn)}.{columns(Batch, 'id')} = {jobs_table}.{columns(Job, 'batch')}), "
            f"%s, {status}, {columns(Job, 'reason')}, %s, {columns(Job, 'stop_time')} FROM {jobs_table} "
            f"WHERE {job_id} IN ({chosen})",
            [Status.RUNNING.value, 1, *chosen_params],
        )
