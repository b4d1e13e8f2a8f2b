"""Fencing: a worker's jobs must not outlive its lease.

When a worker dies (SIGKILL, OOM killer, crash) or hangs, its lease runs out and another
worker requeues its jobs. The jobs' processes, in sessions of their own, would keep
running: two live attempts of one job. So each worker forks a small guard process at
start. The worker tells it, after every successful heartbeat, until when its lease is
safe; the guard SIGKILLs every process carrying the worker's BATCH_WORKER_ID (and its
process group) if that time passes without a renewal, or at once if the worker dies
(the pipe closes). A guard killed together with its worker leaves the job processes to
the next worker started on the machine (`Executor.recover`).
"""

import contextlib
import os
import select
import signal
import time

from jobs.executors.procs import kill_processes, processes_with_env


class Fence:
    def __init__(self, *, worker_id: str) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the guard
            # Nothing of the worker's but its pipe: a launcher's socket held here would
            # not hang up when the worker dies (nor would the database's connection).
            os.closerange(3, read_end)
            os.closerange(read_end + 1, os.sysconf("SC_OPEN_MAX"))
            try:
                _guard(read_end, worker_id)
            finally:
                os._exit(0)
        os.close(read_end)
        self.pid = pid
        self._fd = write_end

    def renew(self, *, until: float) -> None:
        """The worker's jobs may run until monotonic time `until` without a renewal."""
        with contextlib.suppress(OSError):
            os.write(self._fd, f"{until}\n".encode())

    def close(self) -> None:
        """Clean exit: the guard leaves without killing (the worker stopped its jobs)."""
        with contextlib.suppress(OSError):
            os.write(self._fd, b"stop\n")
            os.close(self._fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _kill_jobs(worker_id: str) -> None:
    pids = [pid for pid, owner in processes_with_env("BATCH_WORKER_ID").items() if owner == worker_id]
    kill_processes(pids)


def _guard(fd: int, worker_id: str) -> None:
    # Out of the worker's process group, so a Ctrl-C meant for the worker does not reach
    # it; it leaves on the worker's word or its death.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    deadline: float | None = None
    pending = b""
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            _kill_jobs(worker_id)  # no renewal in time: the lease is about to go
            deadline = None
            continue
        data = os.read(fd, 4096)
        if not data:
            _kill_jobs(worker_id)  # the worker is gone
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line == b"stop":
                return
            with contextlib.suppress(ValueError):
                deadline = float(line)
