"""What an attempt used, as plain data an executor reports in its `Outcome`.

Figures are None when the backend could not measure them (an attempt that never
started, one recovered after its worker died), never made up. Where they come from:
- a sealed local attempt: its cgroup (peak memory; cpu time of every process in it);
- an unsealed local attempt: `wait4`'s rusage of its leader, which includes what the
  leader's own descendants used once they were waited for (a process left behind and
  reaped by someone else is not counted). Its peak RSS is only known above a floor:
  the kernel counts in it the image the program was started from (the worker's own
  peak, tens of MiB: `execve` keeps the old image's high-water mark), so a figure not
  above the worker's peak at the spawn (`own_peak_rss_bytes`) is reported as null;
- a Slurm task: its wrapper's `wait4` on the node (`slurm_task.py`), reported in the
  task's exit-status file, with the same floor (the wrapper's own peak).
Elapsed time is the executor's own clock, from the spawn to the reap.
"""

import resource
from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Usage:
    max_rss_mib: float | None = None  # peak resident memory, MiB
    cpu_seconds: float | None = None  # user + system, all its processes
    elapsed_seconds: float | None = None  # wall clock, millisecond precision

    @classmethod
    def measured(cls, *, max_rss_bytes: float | None, cpu_seconds: float | None, elapsed_seconds: float | None) -> "Usage":
        """Rounded as stored: MiB to 0.1, seconds to the millisecond."""
        return cls(
            max_rss_mib=round(max_rss_bytes / MIB, 1) if max_rss_bytes is not None else None,
            cpu_seconds=round(cpu_seconds, 3) if cpu_seconds is not None else None,
            elapsed_seconds=round(elapsed_seconds, 3) if elapsed_seconds is not None else None,
        )

    @classmethod
    def from_status(cls, status: dict) -> "Usage | None":
        """The figures a Slurm task wrote in its exit-status file (None: it wrote none)."""
        figures = status.get("usage")
        if not isinstance(figures, dict):
            return None

        def number(name: str) -> float | None:
            value = figures.get(name)
            return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

        return cls.measured(
            max_rss_bytes=number("max_rss_bytes"), cpu_seconds=number("cpu_seconds"), elapsed_seconds=number("elapsed_seconds")
        )


def own_peak_rss_bytes() -> int:
    """This process's peak resident memory: getrusage's ru_maxrss, which on Linux is at
    least /proc/self/status's VmHWM (the larger of it and the peak of the image this
    process was exec'd from), read with one system call. Parsing /proc/self/status for
    VmHWM took a tenth of a millisecond, once per spawned job."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rusage_figures(usage: resource.struct_rusage) -> tuple[float, float]:
    """(max RSS in bytes, user + system cpu seconds) of a `wait4` or `getrusage`
    answer (Linux gives ru_maxrss in KiB)."""
    return usage.ru_maxrss * 1024.0, usage.ru_utime + usage.ru_stime
