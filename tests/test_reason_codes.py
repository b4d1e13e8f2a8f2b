"""The one list of reason codes (core/reason_codes.py), documented in the README, and how
a local attempt's end becomes its Outcome (jobs/executors/local_outcomes.py): pure
functions, no process."""

import resource
from pathlib import Path

import pytest

from core import reason_codes
from jobs.executors.local_outcomes import LocalEnd, describe

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_code_is_documented_in_the_readme_and_infrastructure_is_a_subset():
    assert set(reason_codes.INFRASTRUCTURE) <= set(reason_codes.ALL)
    section = README.split("### What an attempt used", 1)[1].split("\n## ", 1)[0]
    for code in reason_codes.ALL:
        assert f"`{code}`" in section, code
    assert not reason_codes.is_infrastructure("exit_code") and reason_codes.is_infrastructure("node_failure")


def rusage(maxrss_kib: int, user: float, system: float) -> resource.struct_rusage:
    return resource.struct_rusage((user, system, maxrss_kib, *([0] * 13)))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"returncode": 0}, (True, 0, None, "succeeded", "")),
        ({"returncode": 3}, (False, 3, None, "exit_code", "exit code 3")),
        ({"returncode": -9}, (False, None, 9, "signal", "killed by signal 9 (SIGKILL)")),
        ({"returncode": 137, "sandboxed": True}, (False, None, 9, "signal", "killed by signal 9 (SIGKILL)")),
        ({"returncode": -9, "out_of_memory": True}, (False, None, 9, "out_of_memory", "killed: out of memory (limit 256 MiB)")),
        (
            {"returncode": 1, "log_says_out_of_memory": True},
            (False, 1, None, "out_of_memory", "out of memory (limit 256 MiB): exit code 1"),
        ),
        (
            {"returncode": -15, "stop_reason": "timed out after 2 s", "stop_code": "timeout"},
            (False, None, 15, "timeout", "timed out after 2 s"),
        ),
        (
            {"returncode": -15, "stop_reason": "Cancelled by user", "stop_code": "cancelled"},
            (False, None, 15, "cancelled", "Cancelled by user"),
        ),
        ({"returncode": -15, "stop_reason": "log over 1 MiB", "stop_code": "log_limit"}, (False, None, 15, "log_limit", "log over 1 MiB")),
    ],
)
def test_a_local_end_and_its_reason_code(options, expected):
    outcome = describe(LocalEnd(job_id="j", attempt=1, memory_mib=256, sandboxed=options.pop("sandboxed", False), **options))
    assert (outcome.succeeded, outcome.exit_code, outcome.signal, outcome.reason_code, outcome.reason) == expected


def test_the_cgroup_figures_win_over_the_leaders_rusage():
    common = {"job_id": "j", "attempt": 1, "memory_mib": 256, "returncode": 0, "sandboxed": False, "elapsed_seconds": 2.0004}
    leader = rusage(300 * 1024, 1.5, 0.25)
    unsealed = describe(LocalEnd(**common, rusage=leader)).usage
    assert (unsealed.max_rss_mib, unsealed.cpu_seconds, unsealed.elapsed_seconds) == (300.0, 1.75, 2.0)
    sealed = describe(LocalEnd(**common, rusage=leader, cgroup_peak_bytes=400 << 20, cgroup_cpu_seconds=3.5)).usage
    assert (sealed.max_rss_mib, sealed.cpu_seconds) == (400.0, 3.5)
    # Not above the worker's own peak at the spawn: the image it was started from, not its own.
    assert describe(LocalEnd(**common, rusage=leader, rss_floor_bytes=300 << 20)).usage.max_rss_mib is None
    assert describe(LocalEnd(**common, rusage=leader, rss_floor_bytes=(300 << 20) - 1)).usage.max_rss_mib == 300.0
    # In a sandbox without a cgroup the leader is bubblewrap, whose rusage misses the program.
    boxed = describe(LocalEnd(**{**common, "sandboxed": True}, rusage=leader)).usage
    assert (boxed.max_rss_mib, boxed.cpu_seconds, boxed.elapsed_seconds) == (None, None, 2.0)
    nothing = describe(LocalEnd(**common)).usage
    assert (nothing.max_rss_mib, nothing.cpu_seconds) == (None, None)


def test_every_outcome_the_service_makes_names_its_reason_code():
    """Every place an attempt ends says why for programs: each `Outcome(...)` built in
    jobs/ passes `reason_code` (a failed one without it would be stored as
    internal_error)."""
    import ast

    missing, seen = [], 0
    for path in (Path(__file__).resolve().parent.parent / "jobs").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Outcome":
                seen += 1
                names = {keyword.arg for keyword in node.keywords}
                if "reason_code" not in names and None not in names:  # None: **kwargs
                    missing.append(f"{path.name}:{node.lineno}")
    assert missing == [] and seen > 15
