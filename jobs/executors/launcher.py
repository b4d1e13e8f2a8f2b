"""Launchers: small processes that start the local executor's attempts that have no
cgroup, one launcher per memory limit, so that the limit costs no exec per job.

Without a cgroup an attempt's memory limit is RLIMIT_AS, which must be in force before
the program's first instruction. The worker cannot set it in the child (a preexec_fn
forces a full fork() of the worker, about 4 times slower than vfork), so it used to run
every job through `prlimit --as=N -- argv...`, whose exec doubles what a short job costs
the machine. A launcher holds the limit itself, hard and soft (it cannot be raised
again, so one process serves one limit), and starts the jobs of that limit by vfork:
they inherit it, exactly as prlimit would give it. A launcher starts and reaps its
children and reports each end with wait4's status and rusage
(`jobs/executors/launcher_process.py` says what goes over the socket).

What does not go through a launcher (prlimit still does it): limits under
SMALLEST_LIMIT (a launcher's own address space, about 15 MiB, must fit under the limit
it serves), more distinct limits than MOST_LAUNCHERS with none idle, a request larger
than MAX_REQUEST, and spawns with a cgroup or a sandbox's extra file descriptors.

A launcher that dies leaves the attempts it started without anyone to report their
ends: they are killed and end failed, with that reason.
"""

import itertools
import json
import logging
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from jobs.executors.procs import signal_group

logger = logging.getLogger("jobs.executors.launcher")

MIB = 1024 * 1024
SCRIPT = Path(__file__).with_name("launcher_process.py")
SMALLEST_LIMIT = 128 * MIB
MOST_LAUNCHERS = 4
MAX_REQUEST = 64 * 1024  # a packet must fit the socket's buffer; larger ones use prlimit
ANSWER_SECONDS = 10.0  # a launcher answers in about a millisecond; one that does not is stuck
LOST = "lost: the worker's launcher process that started it ended, so its end could not be seen; it was killed"


class LauncherGone(Exception):
    """The launcher hung up or stopped answering."""


class NotHeld(Exception):
    """An attempt to be held behind another cannot be (it would not go through that
    one's launcher)."""


class Launched:
    """An attempt's leader asked of a launcher: what the local executor reads of a
    Popen (`pid`, `returncode`) once the launcher has answered, and what it
    reported of its start and end. `after`: the spawn it is held behind (it starts the
    moment that one's process is reaped), or None."""

    def __init__(self, launcher: "Launcher", spawn_id: int, after: "Launched | None" = None) -> None:
        self.launcher = launcher
        self.id = spawn_id
        self.after = after
        self.asked = time.monotonic()
        self.answered = False  # the launcher said whether it started
        self.withdrawn = False  # it was held and given back unstarted
        self.pid: int | None = None  # once started
        self.spawned: float | None = None  # monotonic, at the spawn
        self.spawned_wall: float | None = None
        self.error: OSError | None = None  # once it could not start
        self.launcher_peak_rss: int | None = None  # a vfork child's maxrss is never below it
        self.returncode: int | None = None
        self.rusage: resource.struct_rusage | None = None
        self.ended: float | None = None  # monotonic
        self.ended_wall: float | None = None
        self.lost = False  # its launcher died first: killed, its end unseen (or its start)

    def answer_due(self) -> float | None:
        """When the launcher should have answered (monotonic), None while it is held
        behind a spawn that has not ended."""
        if self.after is None or self.after.error is not None:
            return self.asked
        if self.after.ended is None:
            return None
        return max(self.asked, self.after.ended)


class Launcher:
    """One launcher process, serving one address-space limit in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(  # noqa: S603 (our own script, an argv list)
                [sys.executable, "-I", "-S", str(SCRIPT), str(theirs.fileno()), str(limit)],
                pass_fds=(theirs.fileno(),),
                env={},  # it needs none, and the worker's (the database's password) is not its jobs' business
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a terminal's ^C is the worker's to handle, not its
            )
        self.sock = ours
        self._ids = itertools.count(1)
        self.waiting: dict[int, Launched] = {}  # asked, not yet answered, by id
        self.live: dict[int, Launched] = {}  # started, not yet ended
        self.gone = False

    def request(self, request: dict, out_fd: int, *, after: Launched | None = None) -> Launched | None:
        """Ask for one spawn (held behind `after`, one of this launcher's, if given); the
        answer comes through `pump`. None when the request is too large for a packet.
        Raises LauncherGone when the launcher cannot be reached."""
        spawn_id = next(self._ids)
        payload = json.dumps({**request, "id": spawn_id, "after": after.id if after is not None else None}).encode()
        if len(payload) > MAX_REQUEST:
            return None
        self._send(payload, [out_fd])
        launched = Launched(self, spawn_id, after)
        self.waiting[spawn_id] = launched
        return launched

    def withdraw(self, launched: Launched) -> None:
        """Ask for a held spawn back; the launcher answers `withdrawn`, unless it has
        started it already (that answer then comes first)."""
        self._send(json.dumps({"withdraw": launched.id}).encode(), [])

    def _send(self, payload: bytes, fds: list[int]) -> None:
        try:
            socket.send_fds(self.sock, [payload], fds)
        except OSError as exc:
            self._lost()
            raise LauncherGone(f"the worker's launcher process could not be reached ({exc.strerror or exc})") from exc

    def pump(self) -> None:
        """Take in every answer and end reported since the last call (never waits). A
        launcher that has left a request unanswered for ANSWER_SECONDS is stuck: it is
        killed, and what it started is lost."""
        while not self.gone:
            try:
                message = self.sock.recv(MAX_REQUEST, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError:
                message = b""
            if not message:
                self._lost()
                return
            self._take(json.loads(message))
        now = time.monotonic()
        due = (launched.answer_due() for launched in self.waiting.values())
        if any(when is not None and now - when > ANSWER_SECONDS for when in due):
            logger.error(
                "the launcher for %s MiB (pid %s) did not answer within %g s: killed", self.limit // MIB, self.process.pid, ANSWER_SECONDS
            )
            self.process.kill()
            self._lost()

    def _take(self, message: dict) -> None:
        if "ended" not in message:  # the answer to a request
            launched = self.waiting.pop(message["id"])
            launched.answered = True
            if "pid" in message:
                launched.pid, launched.launcher_peak_rss = message["pid"], message["peak_rss"]
                launched.spawned, launched.spawned_wall = message["monotonic"], message["wall"]
                self.live[launched.pid] = launched
            elif message.get("withdrawn"):
                launched.withdrawn = True
            else:
                launched.error = OSError(message["errno"] or None, message["message"])
            return
        end = message
        launched = self.live.pop(end["ended"], None)
        if launched is None:
            return
        launched.rusage = resource.struct_rusage(end["rusage"])
        launched.ended, launched.ended_wall = end["monotonic"], end["wall"]
        launched.returncode = end["status"]

    def _lost(self) -> None:
        """The launcher is gone: what it started can no longer be watched, so it is
        stopped (its process group) and ends as lost."""
        if self.gone:
            return
        self.gone = True
        logger.error("the launcher for %s MiB (pid %s) ended with %s jobs running", self.limit // MIB, self.process.pid, len(self.live))
        now, wall = time.monotonic(), time.time()
        for launched in self.waiting.values():  # whether it started is unknown: nothing to stop
            launched.answered = launched.lost = True
            launched.error = OSError(None, "the worker's launcher process ended before it answered")
        self.waiting.clear()
        for launched in self.live.values():
            signal_group(launched.pid, signal.SIGKILL)
            launched.lost = True
            launched.ended, launched.ended_wall = now, wall
            launched.returncode = -signal.SIGKILL
        self.live.clear()
        self.close()

    def close(self) -> None:
        """Hang up; the launcher exits, and what it started runs on."""
        self.sock.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Launchers:
    """The local executor's launchers, by limit (see the module's docstring)."""

    def __init__(self) -> None:
        self._by_limit: dict[int, Launcher] = {}

    def start(
        self,
        *,
        limit: int,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        out_fd: int,
        cores: list[int],
        umask: int,
        after: Launched | None = None,
    ) -> Launched | None:
        """Ask for `argv` to start under an address-space limit of `limit` bytes, pinned
        to `cores`, its output into `out_fd`; with `after`, held until that spawn's
        process has been reaped (it must be of the same limit). None when no launcher
        takes it (the caller starts it through prlimit, or does not hold it). Raises
        LauncherGone when the launcher cannot be reached."""
        if after is not None:
            launcher = after.launcher if after.launcher.limit == limit and not after.launcher.gone else None
        else:
            launcher = self._launcher(limit)
        if launcher is None:
            return None
        request = {"argv": argv, "env": env, "cwd": str(cwd), "cores": cores, "umask": umask}
        return launcher.request(request, out_fd, after=after)

    def _launcher(self, limit: int) -> Launcher | None:
        if limit < SMALLEST_LIMIT:
            return None
        launcher = self._by_limit.get(limit)
        if launcher is not None and not launcher.gone:
            return launcher
        self._by_limit.pop(limit, None)
        if len(self._by_limit) >= MOST_LAUNCHERS:
            idle = next((each for each in self._by_limit.values() if not each.live and not each.waiting), None)
            if idle is None:
                return None
            del self._by_limit[idle.limit]
            idle.close()
        try:
            launcher = Launcher(limit)
        except OSError:
            logger.exception("could not start a launcher for %s MiB: its jobs go through prlimit", limit // MIB)
            return None
        self._by_limit[limit] = launcher
        return launcher

    def pump(self) -> None:
        for launcher in list(self._by_limit.values()):
            launcher.pump()
            if launcher.gone:
                self._by_limit.pop(launcher.limit, None)

    def fds(self) -> tuple[int, ...]:
        """The sockets to wait on: each becomes readable when a child has ended."""
        return tuple(launcher.sock.fileno() for launcher in self._by_limit.values())

    def close(self) -> None:
        for launcher in self._by_limit.values():
            launcher.close()
        self._by_limit.clear()
