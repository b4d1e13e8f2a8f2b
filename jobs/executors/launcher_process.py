"""A launcher: the small process that starts a local worker's unsealed attempts of one
memory limit (see `jobs.executors.launcher`, which starts it and speaks to it).

    python -I -S launcher_process.py SOCKET_FD LIMIT_BYTES

It sets its own RLIMIT_AS to LIMIT_BYTES, soft and hard, before it reads a request, so
every process it starts has the limit before its own first instruction, exactly as
`prlimit --as=LIMIT_BYTES -- argv...` would give it, without prlimit's exec per job.
It is its children's parent: it reaps each and reports its status and rusage.

It runs outside the service's imports (no Django, standard library only), to stay
small: its own address space must fit under the limit it serves.

The socket is a SOCK_SEQPACKET pair, one JSON message a packet:
- from the worker, a spawn: {"id", "argv", "env", "cwd", "cores", "umask", "after"},
  with the fd the program writes its output to (SCM_RIGHTS). "after" is null, or the id
  of an earlier spawn of this launcher: the program is then held and started the moment
  that one's process has been reaped (at once if it has been already), so a slot goes
  from one job to the next without waiting for the worker; if that spawn failed, the
  held one is given back ("withdrawn");
- from the worker, {"withdraw": id}: give back that held spawn, if it is still held;
- to the worker, once for each spawn: {"id", "pid", "peak_rss", "monotonic", "wall"}
  (the launcher's own peak RSS after the spawn: a vfork child's maxrss is never below
  it; the clocks' readings at the spawn), or {"id", "errno", "message"} when it could
  not start, or {"id", "withdrawn": true} when it was given back unstarted;
- to the worker, when a child has ended: {"ended": pid, "status", "rusage",
  "monotonic", "wall"} (Popen's returncode, wait4's 16 rusage fields, and the clocks'
  readings at the reap), always before the answer of a spawn held behind it.

When the worker's end of the socket closes, the launcher exits; the attempts it started
run on, and a worker's recovery stops them (they carry BATCH_WORKER_ID).
"""

import collections
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

MAX_MESSAGE = 1 << 20
FAILED_KEPT = 1024  # ids of failed spawns remembered, for a spawn held behind one sent meanwhile


class Launcher:
    """The spawns: those running (by id), those held behind one of them, and the ids of
    recent spawns that failed (a spawn held behind one of those is given back)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.mask = os.sched_getaffinity(0)
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ, None)
        self.running: dict[int, subprocess.Popen] = {}  # id -> its process, until reaped
        self.held: dict[int, tuple[dict, int]] = {}  # id of the spawn it waits for -> (request, output fd)
        self.failed: collections.deque[int] = collections.deque(maxlen=FAILED_KEPT)

    def serve(self) -> None:
        """Answer the worker's requests and report ends until the worker hangs up."""
        while True:
            for key, _ in self.selector.select():
                if key.data is not None:  # a child's pidfd: it has ended
                    self._ended(key.fd, *key.data)
                    continue
                message, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
                if not message:
                    return
                self._request(json.loads(message), fds[0] if fds else None)

    def _request(self, request: dict, out_fd: int | None) -> None:
        if "withdraw" in request:
            for after, (held, fd) in list(self.held.items()):
                if held["id"] == request["withdraw"]:
                    del self.held[after]
                    os.close(fd)
                    self._send({"id": held["id"], "withdrawn": True})
            return
        if out_fd is None:
            self._send({"id": request["id"], "errno": 0, "message": "launcher: no output fd"})
            return
        after = request.get("after")
        if after is None or (after not in self.running and after not in self.failed):
            self._spawn(request, out_fd)  # its predecessor has ended already
        elif after in self.running and after not in self.held:
            self.held[after] = (request, out_fd)
        else:  # its predecessor never started (or has one held already): its slot is not its
            os.close(out_fd)
            self._send({"id": request["id"], "withdrawn": True})

    def _spawn(self, request: dict, out_fd: int) -> None:
        popen = None
        try:
            os.sched_setaffinity(0, request["cores"])  # a new process inherits its creator's mask
            try:
                popen = subprocess.Popen(  # noqa: S603 (an argv list: no shell ever runs)
                    request["argv"],
                    cwd=request["cwd"],
                    env=request["env"],
                    stdin=subprocess.DEVNULL,
                    stdout=out_fd,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                    umask=request["umask"],
                )
            finally:
                os.sched_setaffinity(0, self.mask)
            answer = {
                "id": request["id"],
                "pid": popen.pid,
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "monotonic": time.monotonic(),
                "wall": time.time(),
            }
        except OSError as exc:
            answer = {"id": request["id"], "errno": exc.errno or 0, "message": exc.strerror or str(exc)}
        except Exception as exc:  # noqa: BLE001 (reported to the worker as the attempt's launch failure)
            answer = {"id": request["id"], "errno": 0, "message": f"launcher: {exc!r}"}
        finally:
            os.close(out_fd)
        if popen is None:
            self.failed.append(request["id"])
        else:
            self.running[request["id"]] = popen
            self.selector.register(os.pidfd_open(popen.pid), selectors.EVENT_READ, (request["id"], popen))
        self._send(answer)

    def _ended(self, pidfd: int, spawn_id: int, popen: subprocess.Popen) -> None:
        self.selector.unregister(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(popen.pid, 0)
        popen.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
        del self.running[spawn_id]
        self._send(
            {
                "ended": popen.pid,
                "status": popen.returncode,
                "rusage": list(usage),
                "monotonic": time.monotonic(),
                "wall": time.time(),
            }
        )
        held = self.held.pop(spawn_id, None)
        if held is not None:
            self._spawn(*held)

    def _send(self, message: dict) -> None:
        self.sock.send(json.dumps(message).encode())


def main() -> None:
    fd, limit = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with socket.socket(fileno=fd) as sock:
        Launcher(sock).serve()


if __name__ == "__main__":
    main()
