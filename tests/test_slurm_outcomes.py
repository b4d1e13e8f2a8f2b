"""How Slurm's states and the job script's exit-status file become a job's outcome, and
the small parsers of the slurm executor: pure functions, no cluster needed."""

import json
import os

import pytest

from jobs.executors.cluster_folders import read_json
from jobs.executors.cluster_scheduler import Phase
from jobs.executors.slurm import array_ranges
from jobs.executors.slurm_commands import _unreachable, parse_squeue
from jobs.executors.slurm_outcomes import describe_end, phase


def end(state, status=None, **options):
    result = describe_end(state=state, status=status, timeout=options.pop("timeout", 60), memory_mib=256, **options)
    return (result.succeeded, result.exit_code, result.reason)


@pytest.mark.parametrize(
    ("state", "status", "expected"),
    [
        ("COMPLETED", {"code": 0}, (True, 0, "")),
        ("COMPLETED", None, (True, 0, "")),
        ("FAILED", {"code": 3}, (False, 3, "exit code 3 (Slurm: FAILED)")),
        (None, {"code": 3}, (False, 3, "exit code 3")),
        ("TIMEOUT", {"signal": 15}, (False, None, "timed out after 60 s: killed at Slurm's time limit (Slurm: TIMEOUT)")),
        ("FAILED", {"code": None, "timed_out": True, "signal": 15}, (False, None, "timed out after 60 s")),
        ("OUT_OF_MEMORY", {"signal": 9}, (False, None, "killed: out of memory (limit 256 MiB) (Slurm: OUT_OF_MEMORY)")),
        ("NODE_FAIL", None, (False, None, "node failure (Slurm: NODE_FAIL)")),
        ("PREEMPTED", {"signal": 15}, (False, None, "preempted by a job of higher priority (Slurm: PREEMPTED)")),
        ("BOOT_FAIL", None, (False, None, "the node failed to boot (Slurm: BOOT_FAIL)")),
        ("CANCELLED", {"signal": 15}, (False, None, "cancelled in Slurm (not by this service) (Slurm: CANCELLED)")),
        ("FAILED", {"signal": 9}, (False, None, "killed by signal 9 (SIGKILL) (Slurm: FAILED)")),
        (
            "FAILED",
            {"error": "could not start /nope: No such file or directory"},
            (False, None, "could not start /nope: No such file or directory (Slurm: FAILED)"),
        ),
        ("FAILED", None, (False, None, "the job script failed before running the command (Slurm: FAILED)")),
        (None, None, (False, None, "Slurm no longer reports this job and it left no exit status (node failure?)")),
    ],
)
def test_every_slurm_end_has_a_reason_a_person_understands(state, status, expected):
    assert end(state, status) == expected


def test_a_cancel_of_ours_says_so_whatever_slurm_calls_it():
    assert end("CANCELLED", {"signal": 15}, cancel_reason="Cancelled by user") == (False, None, "Cancelled by user")


def test_array_ranges_and_squeue_lines():
    assert array_ranges([0]) == "0"
    assert array_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    states = parse_squeue(
        "12_3|12|3|PENDING|Resources||batches-ab\n13|13|N/A|RUNNING|None|vm|other\n12_4|12|4|RUNNING|None|vm|batches-ab\n"
    )
    # squeue's "None" is no reason; each state comes with its phase, Slurm's word told.
    assert [(s.external_id, s.state, s.phase, s.reason, s.nodes) for s in states] == [
        ("12_3", "PENDING", Phase.WAITING, "Resources", ""),
        ("12_4", "RUNNING", Phase.RUNNING, "", "vm"),
    ]
    assert [phase(state) for state in ("CONFIGURING", "COMPLETING", "COMPLETED", "OUT_OF_MEMORY", "NEW_IN_SLURM_99")] == [
        Phase.PLACED,
        Phase.RUNNING,
        Phase.COMPLETED,
        Phase.ENDED,
        Phase.UNKNOWN,
    ]


def test_an_unreachable_controller_is_told_from_a_refusal():
    assert _unreachable("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)")
    assert _unreachable("slurm_load_jobs error: Socket timed out on send/recv operation")
    assert not _unreachable("sbatch: error: Batch job submission failed: Invalid partition name specified")


def test_a_status_file_a_task_planted_is_never_followed_or_waited_on(tmp_path):
    """A sealed task's account owns `status/`: a fifo there would hold the worker's read
    forever, a link would have root read another file."""
    (tmp_path / "real").write_text(json.dumps({"code": 0}))
    os.mkfifo(tmp_path / "0.exit")
    (tmp_path / "1.exit").symlink_to(tmp_path / "real")
    (tmp_path / "2.exit").write_text("[1, 2]")
    assert read_json(tmp_path / "0.exit", plain_only=True) is None  # returns at once
    assert read_json(tmp_path / "1.exit", plain_only=True) is None
    assert read_json(tmp_path / "2.exit", plain_only=True) is None
    assert read_json(tmp_path / "real", plain_only=True) == {"code": 0}


def test_a_status_file_with_values_of_the_wrong_kind_is_an_unreadable_exit():
    """A task's account could write {"log_over": "x"} or {"log_offset": "abc"}: each
    raised in the worker's loop on every turn, and the worker recorded nothing again."""
    from jobs.executors.cluster_folders import clean_status

    assert clean_status({"log_over": "x", "code": 2**70}, kind="exit")["error"] == "the task's exit status file could not be read"
    assert clean_status({"code": 3, "signal": None}, kind="exit") == {
        "code": 3,
        "signal": None,
        "timed_out": False,
        "log_over": None,
        "error": "",
        "error_kind": "",
        "ended_at": None,
        "usage": {"max_rss_bytes": None, "cpu_seconds": None, "elapsed_seconds": None},
    }
    assert clean_status({"node": "n" * 300, "log_offset": "abc"}, kind="start") == {"node": "n" * 255, "log_offset": None, "time": None}
    # What the node measured: numbers in range only (NaN, infinities, strings, negatives dropped).
    forged = {"code": 0, "usage": {"max_rss_bytes": -1, "cpu_seconds": float("nan"), "elapsed_seconds": "1"}, "ended_at": float("inf")}
    assert clean_status(forged, kind="exit")["usage"] == {"max_rss_bytes": None, "cpu_seconds": None, "elapsed_seconds": None}
    assert clean_status(forged, kind="exit")["ended_at"] is None
    measured = {"code": 0, "usage": {"max_rss_bytes": 324_000_000, "cpu_seconds": 2.03, "elapsed_seconds": 3}, "ended_at": 1.8e9}
    assert clean_status(measured, kind="exit")["usage"] == {"max_rss_bytes": 324e6, "cpu_seconds": 2.03, "elapsed_seconds": 3.0}
    assert end("FAILED", clean_status({"log_over": "x"}, kind="exit"))[2].startswith("the task's exit status file could not be read")


@pytest.mark.parametrize(
    ("state", "status", "code", "signal"),
    [
        ("COMPLETED", {"code": 0}, "succeeded", None),
        ("FAILED", {"code": 3}, "exit_code", None),
        ("FAILED", {"signal": 9}, "signal", 9),
        ("FAILED", {"timed_out": True, "signal": 15}, "timeout", 15),
        ("TIMEOUT", {"signal": 15}, "timeout", 15),
        ("DEADLINE", None, "timeout", None),
        ("FAILED", {"log_over": 100}, "log_limit", None),
        ("OUT_OF_MEMORY", {"signal": 9}, "out_of_memory", 9),
        ("NODE_FAIL", None, "node_failure", None),
        ("PREEMPTED", {"signal": 15}, "preempted", 15),
        ("BOOT_FAIL", None, "boot_failure", None),
        ("CANCELLED", {"signal": 15}, "cluster_cancelled", 15),
        ("REVOKED", None, "cluster_cancelled", None),
        ("FAILED", {"error": "could not start /nope: No such file", "error_kind": "launch"}, "launch_failed", None),
        ("FAILED", {"error": "the task failed on vm: boom", "error_kind": "task"}, "internal_error", None),
        ("FAILED", None, "internal_error", None),
        (None, None, "node_failure", None),
    ],
)
def test_every_slurm_end_has_a_reason_code(state, status, code, signal):
    result = describe_end(state=state, status=status, timeout=60, memory_mib=256)
    assert (result.reason_code, result.signal) == (code, signal)
    assert (
        describe_end(state=state, status=status, timeout=60, memory_mib=256, cancel_reason="Cancelled by user").reason_code == "cancelled"
    )
