"""Why an attempt ended, for programs: the one list of `reason_code`s.

Every attempt that ends gets one of these beside its `reason` (the sentence a person
reads: `exit code 3`, `killed: out of memory (limit 256 MiB)`). Clients, retry rules
(`on_reason`) and the usage reports match on the code, never on the sentence. The README
points here; `GET /api/schema/` lists the values. No imports: executors, the state
machine and the API all read it.

A code is **infrastructure** when the attempt ended through no fault of the job (the
machine, the cluster or the service failed it): see `INFRASTRUCTURE`.
"""

SUCCEEDED = "succeeded"  # exit code 0
EXIT_CODE = "exit_code"  # the program exited with a non-zero code
SIGNAL = "signal"  # the program was killed by a signal it was not sent by the service (its own kill -9, a crash)
OUT_OF_MEMORY = "out_of_memory"  # killed at (or failed for) its memory limit
TIMEOUT = "timeout"  # stopped at its wall-clock limit (the batch's, or the cluster's)
CANCELLED = "cancelled"  # stopped because a user or operator cancelled the job
LOG_LIMIT = "log_limit"  # stopped for writing more than BATCHES_LOG_MAX_BYTES to its log
LAUNCH_FAILED = "launch_failed"  # the program could not be started (missing, not executable, no job account)
NODE_FAILURE = "node_failure"  # the node running it failed, or the cluster forgot it without an exit status
WORKER_LOST = "worker_lost"  # its worker stopped heartbeating (or lost the database) and its attempts were recovered
WORKER_STOPPED = "worker_stopped"  # its worker was stopped (SIGTERM, deploy) and gave the job back
PREEMPTED = "preempted"  # the cluster preempted it for a job of higher priority
BOOT_FAILURE = "boot_failure"  # the node it was placed on failed to boot
CLUSTER_CANCELLED = "cluster_cancelled"  # the cluster (an operator's scancel, a revoked job), not this service, cancelled it
NOT_SUBMITTED = "not_submitted"  # it never reached the cluster before its worker went away
STAGING_FAILED = "staging_failed"  # a task's input could not be fetched or an output not delivered (see the reason)
INTERNAL_ERROR = "internal_error"  # the service failed to run it (a bug, an unwritable folder): see the reason

# code -> what it means, in the order the README lists them.
DESCRIPTIONS: dict[str, str] = {
    SUCCEEDED: "exited 0",
    EXIT_CODE: "exited with a non-zero code (`exit_code`)",
    SIGNAL: "killed by a signal the service did not send (`signal`)",
    OUT_OF_MEMORY: "killed at, or failed for, its memory limit",
    TIMEOUT: "stopped at its wall-clock limit",
    CANCELLED: "stopped because the job was cancelled",
    LOG_LIMIT: "stopped for writing more than BATCHES_LOG_MAX_BYTES to its log",
    LAUNCH_FAILED: "the program could not be started (missing, not executable, no job account, refused by the cluster)",
    NODE_FAILURE: "the node failed, or the cluster forgot the attempt and it left no exit status",
    WORKER_LOST: "its worker stopped heartbeating or lost the database; the attempt was recovered",
    WORKER_STOPPED: "its worker was stopped and gave the job back",
    PREEMPTED: "preempted by the cluster for a job of higher priority",
    BOOT_FAILURE: "the node it was placed on failed to boot",
    CLUSTER_CANCELLED: "cancelled by the cluster (an operator, a revoked job), not by this service",
    NOT_SUBMITTED: "never reached the cluster before its worker went away",
    STAGING_FAILED: "a task's input could not be fetched, or an output not delivered (see `reason`)",
    INTERNAL_ERROR: "the service failed to run it (see `reason`)",
}

ALL: tuple[str, ...] = tuple(DESCRIPTIONS)

# Not the job's fault: the machine, the cluster or the service ended the attempt.
INFRASTRUCTURE: frozenset[str] = frozenset(
    {NODE_FAILURE, WORKER_LOST, WORKER_STOPPED, PREEMPTED, BOOT_FAILURE, CLUSTER_CANCELLED, NOT_SUBMITTED, INTERNAL_ERROR}
)


def is_infrastructure(code: str) -> bool:
    """True when an attempt that ended with `code` ended through no fault of the job."""
    return code in INFRASTRUCTURE


# What a retry rule's `on_reason` may name (batches.retry_rules): the failures a job can
# have of its own. Infrastructure ones are requeued whatever the rules say, and a
# success or a cancel is never retried.
RULE_REASONS: frozenset[str] = frozenset(ALL) - INFRASTRUCTURE - {SUCCEEDED, CANCELLED}
