"""Where a run's cpu goes, read from /proc (Linux): a process's own cpu (all its threads,
and its live children's: a worker's launchers and fence), that of the children it and
they reaped (a worker's jobs, a raw loop's spawns), PostgreSQL's
(every process named `postgres` on the machine: the backends and the server's own work)
and the machine's busy time, as milliseconds of cpu per job.

Why: on a machine of a few cores, a throughput figure is bounded by the cpu each job
costs in all of these together. These are two /proc files; psutil reads the same ones,
and a bench-only package would have to be pinned with the service's.
"""

import os
import statistics
import time
from dataclasses import dataclass

_TICK = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Reading:
    wall: float  # monotonic seconds
    own: float  # cpu seconds of the process (every thread)
    children: float  # of its children it has reaped (and theirs)
    postgres: float  # of every process named postgres
    busy: float  # of the machine, not idle
    cores: int


def _times(stat_path: str) -> tuple[float, float]:
    """(own, reaped children's) cpu seconds from /proc/<pid>/stat."""
    with open(stat_path) as handle:
        text = handle.read()
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) * _TICK, (cutime + cstime) * _TICK


def _postgres() -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() != "postgres":
                    continue
            total += _times(f"/proc/{entry}/stat")[0]
        except OSError:  # gone meanwhile
            continue
    return total


def _busy() -> float:
    with open("/proc/stat") as handle:
        user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in handle.readline().split()[1:8])
    return (user + nice + system + irq + softirq) * _TICK  # not idle, nor waiting, nor stolen by a hypervisor


def _live_children(pid: int) -> list[str]:
    found: list[str] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:  # gone meanwhile
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(entry)
    return found


def read(pid: int) -> Reading:
    own, children = _times(f"/proc/{pid}/stat")
    # A worker's launchers start and reap its unsealed jobs: their cpu, and their
    # children's, is the worker's and its jobs'.
    for child in _live_children(pid):
        try:
            child_own, child_children = _times(f"/proc/{child}/stat")
        except OSError:  # gone meanwhile (and reaped: then it is in `children`)
            continue
        own += child_own
        children += child_children
    return Reading(time.monotonic(), own, children, _postgres(), _busy(), os.cpu_count() or 1)


def per_job(before: Reading, after: Reading, jobs: int) -> dict[str, float]:
    """Milliseconds of cpu per job between two readings of one process, by part, and the
    cores the machine kept busy on average."""
    wall = after.wall - before.wall
    return {
        "own": (after.own - before.own) * 1000 / jobs,
        "children": (after.children - before.children) * 1000 / jobs,
        "postgres": (after.postgres - before.postgres) * 1000 / jobs,
        "machine": (after.busy - before.busy) * 1000 / jobs,
        "busy_cores": (after.busy - before.busy) / wall if wall > 0 else float("nan"),
        "cores": after.cores,
    }


def describe(label: str, splits: list[dict[str, float]], *, own: str, children: str) -> str:
    """One line of medians over the rounds' splits."""

    def median(name: str) -> float:
        return statistics.median(split[name] for split in splits)

    ceiling = median("cores") * 1000 / median("machine")
    return (
        f"   {label:<38} cpu per job (ms, p50 of {len(splits)}): {own} {median('own'):.2f}, {children} {median('children'):.2f},"
        f" PostgreSQL {median('postgres'):.2f}, machine {median('machine'):.2f}; busy {median('busy_cores'):.2f}"
        f" of {median('cores'):.0f} cores (all {median('cores'):.0f} busy at that cost: {ceiling:.0f} jobs/s)"
    )
