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
- from the worker: {"argv", "env", "cwd", "cores", "umask"}, with the fd the program
  writes its output to (SCM_RIGHTS);
- to the worker, once for each request, in order: {"pid", "peak_rss"} (the launcher's
  own peak RSS after the spawn: a vfork child's maxrss is never below it), or
  {"errno", "message"} when it could not start;
- to the worker, when a child has ended: {"ended": pid, "status", "rusage",
  "monotonic", "wall"} (Popen's returncode, wait4's 16 rusage fields, and the clocks'
  readings at the reap).

When the worker's end of the socket closes, the launcher exits; the attempts it started
run on, and a worker's recovery stops them (they carry BATCH_WORKER_ID).
"""

import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time

MAX_MESSAGE = 1 << 20


def _spawn(request: dict, out_fd: int, mask: set[int]) -> tuple[dict, subprocess.Popen | None]:
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
            os.sched_setaffinity(0, mask)
    except OSError as exc:
        return {"errno": exc.errno or 0, "message": exc.strerror or str(exc)}, None
    except Exception as exc:  # noqa: BLE001 (reported to the worker as the attempt's launch failure)
        return {"errno": 0, "message": f"launcher: {exc!r}"}, None
    finally:
        os.close(out_fd)
    return {"pid": popen.pid, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}, popen


def _ended(popen: subprocess.Popen) -> dict:
    _, status, usage = os.wait4(popen.pid, 0)
    popen.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    return {
        "ended": popen.pid,
        "status": popen.returncode,
        "rusage": list(usage),
        "monotonic": time.monotonic(),
        "wall": time.time(),
    }


def serve(sock: socket.socket) -> None:
    """Answer the worker's requests and report ends until the worker hangs up."""
    mask = os.sched_getaffinity(0)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, None)
    while True:
        for key, _ in selector.select():
            popen = key.data
            if popen is not None:  # a child's pidfd: it has ended
                selector.unregister(key.fd)
                os.close(key.fd)
                sock.send(json.dumps(_ended(popen)).encode())
                continue
            message, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
            if not message:
                return
            answer, popen = _spawn(json.loads(message), fds[0], mask) if fds else ({"errno": 0, "message": "launcher: no output fd"}, None)
            if popen is not None:
                selector.register(os.pidfd_open(popen.pid), selectors.EVENT_READ, popen)
            sock.send(json.dumps(answer).encode())


def main() -> None:
    fd, limit = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with socket.socket(fileno=fd) as sock:
        serve(sock)


if __name__ == "__main__":
    main()
