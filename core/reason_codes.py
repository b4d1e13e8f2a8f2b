"""Why an attempt ended, as a machine reads it: the one list of `reason_code`s.

Each attempt records one of these beside its human `reason`. Retry rules name them
(`on_reason`), the usage route counts by them, and the infrastructure group decides who
pays: an attempt that ended for an infrastructure reason is never charged to the user
(the job is requeued without using an attempt, up to BATCHES_MAX_REQUEUES).
"""

SUCCEEDED = "succeeded"
EXIT_CODE = "exit_code"
SIGNAL = "signal"
OUT_OF_MEMORY = "out_of_memory"
TIMEOUT = "timeout"
CANCELLED = "cancelled"
LOG_LIMIT = "log_limit"
START_FAILED = "start_failed"
NODE_FAILURE = "node_failure"
BOOT_FAILURE = "boot_failure"
PREEMPTED = "preempted"
CLUSTER_CANCELLED = "cluster_cancelled"
WORKER_LOST = "worker_lost"
WORKER_STOPPED = "worker_stopped"
INTERNAL_ERROR = "internal_error"

# code -> what it means, in the order the README lists them.
DESCRIPTIONS: dict[str, str] = {
    SUCCEEDED: "the command exited 0",
    EXIT_CODE: "the command exited with a non-zero code (`exit_code`)",
    SIGNAL: "the command was killed by a signal (`signal`) that was not the service's",
    OUT_OF_MEMORY: "the attempt went over its memory and was killed",
    TIMEOUT: "the attempt ran past its `timeout_seconds` and was stopped",
    CANCELLED: "a cancel was asked for (by the user or an operator)",
    LOG_LIMIT: "the attempt wrote more log than the service keeps, and was stopped",
    START_FAILED: "the command could not be started (not found, not executable)",
    NODE_FAILURE: "the cluster node running it failed",
    BOOT_FAILURE: "the cluster could not boot the node for it",
    PREEMPTED: "the cluster preempted it for other work",
    CLUSTER_CANCELLED: "the cluster (an administrator, not the service) cancelled it",
    WORKER_LOST: "the worker running it stopped answering and was declared lost",
    WORKER_STOPPED: "the worker running it was stopped (its jobs are requeued)",
    INTERNAL_ERROR: "the service failed around the attempt (a bug or a broken set-up)",
}
ALL = frozenset(DESCRIPTIONS)

# Not the user's doing: requeued without using an attempt.
INFRASTRUCTURE = frozenset({NODE_FAILURE, BOOT_FAILURE, PREEMPTED, CLUSTER_CANCELLED, WORKER_LOST, WORKER_STOPPED})

# What a retry rule's `on_reason` may name: the failures the user's job can have. The
# infrastructure ones are always requeued whatever the rules say; a success or a cancel
# is never retried.
RULE_REASONS = ALL - INFRASTRUCTURE - {SUCCEEDED, CANCELLED}
