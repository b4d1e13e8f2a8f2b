"""A local attempt's stdout and stderr: a pipe the worker drains into the job's log, up
to the cap. The job never holds the log file, so it cannot take disk past what it
wrote (preallocation, holes), and what it writes past the cap is read and dropped (it
is never blocked on a full pipe while it is being stopped)."""

import contextlib
import os
from pathlib import Path

from jobs.executors import attempt_logs

_READ_SIZE = 1 << 16  # bytes read from the pipe at a time
_READS_PER_TURN = 16  # per drain: one fast writer cannot hold the other attempts up


class AttemptOutput:
    """Open the job's log (appending; its section starts at `start`, after a line
    marking attempts from 2 on) and a pipe for the program. `group`: the log file's
    group (the log folder's, for the web server), or None to leave it."""

    def __init__(self, *, path: Path, attempt: int, cap: int, group: int | None) -> None:
        self.cap = cap
        self.written = 0
        self.cut = False
        self.ended = False  # every writer has closed the pipe
        self.failed = ""  # why the log could not be written (a full disk...), once it could not
        self.log_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            if group is not None:
                os.fchown(self.log_fd, -1, group)
            self.start = os.lseek(self.log_fd, 0, os.SEEK_END)
            if attempt > 1:
                os.write(self.log_fd, f"--- attempt {attempt} ---\n".encode())
            self.read_fd: int | None
            self.write_fd: int | None
            self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)
        except BaseException:
            os.close(self.log_fd)
            raise

    def started(self) -> None:
        """The program (or its launcher) has its end of the pipe: the worker keeps only its own."""
        os.close(self.write_fd)
        self.write_fd = None
        os.set_blocking(self.read_fd, False)

    def note(self, message: str) -> None:
        try:
            os.write(self.log_fd, f"{message}\n".encode())
        except OSError as exc:
            self.failed = self.failed or f"could not write the log: {exc.strerror or exc}"

    def drain(self, *, everything: bool = False) -> bool:
        """Move what the program wrote into the log. True when this read crossed the cap
        (the attempt is to be stopped). Returns once the pipe is empty or after a few
        reads; `ended` is then True if every writer has closed it. `everything`: the
        attempt is gone, read to the end (at most a cap's worth more)."""
        if self.read_fd is None:
            return False
        crossed = False
        for _ in range(self.cap // _READ_SIZE + 2 if everything else _READS_PER_TURN):
            try:
                chunk = os.read(self.read_fd, _READ_SIZE)
            except BlockingIOError:
                break
            if not chunk:
                self.ended = True
                break
            if self.cut:
                continue
            room = self.cap - self.written
            if len(chunk) > room:
                chunk, self.cut, crossed = chunk[:room], True, True
            try:
                os.write(self.log_fd, chunk)
            except OSError as exc:  # the rest is dropped; the attempt is stopped, saying why
                self.failed, self.cut, crossed = f"could not write the log: {exc.strerror or exc}", True, True
                continue
            self.written += len(chunk)
        return crossed

    def close_pipe(self) -> None:
        if self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None

    def close(self) -> None:
        """End the log's section (saying where it was cut) and close everything."""
        try:
            self.close_pipe()
            if self.cut and not self.failed:
                self.note(f"\n--- log cut at {attempt_logs.human_size(self.cap)}: the attempt was stopped ---")
        finally:
            os.close(self.log_fd)

    def withdraw(self) -> None:
        """The program was never started, and the attempt may start again later: take
        back what was written for it (the attempt's marker line), and close."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.log_fd, self.start)
        self.abandon()

    def abandon(self) -> None:
        """The program never started: close without a word more."""
        for fd in (self.read_fd, self.write_fd, self.log_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    continue
