"""The seccomp filter of sealed jobs: a few system calls a job never needs and that let
one tenant reach past its own account and cgroup, answered ENOSYS (as on a kernel
without them, so programs fall back).

- `io_setup`: asynchronous I/O contexts come from one pool for the whole machine
  (fs.aio-max-nr): one job holding them all made every other tenant's libaio fail;
- `io_uring_*`: a large kernel surface, the way around most other limits;
- `perf_event_open`, `bpf`, `userfaultfd`: kernel interfaces that observe or stall
  other processes.

System calls of another ABI than the machine's (32-bit, x32) are refused whole: their
numbers differ, and a filter on the native numbers alone would let them through.

The filter is classic BPF (as bubblewrap's `--seccomp FD` reads it: an array of
`struct sock_filter`), built here with the standard library; on a machine whose
architecture is not known here, there is none (`program()` is None).
"""

import errno
import platform
import struct

# seccomp_data: the system call number at offset 0, the architecture at offset 4.
_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_X32_SYSCALL_BIT = 0x40000000

# machine -> (AUDIT_ARCH_*, {name: number})
_DENIED = {
    "x86_64": (
        0xC000003E,
        {
            "io_setup": 206,
            "perf_event_open": 298,
            "bpf": 321,
            "userfaultfd": 323,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
        },
    ),
    "aarch64": (
        0xC00000B7,
        {
            "io_setup": 0,
            "perf_event_open": 241,
            "bpf": 280,
            "userfaultfd": 282,
            "io_uring_setup": 425,
            "io_uring_enter": 426,
            "io_uring_register": 427,
        },
    ),
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine's architecture, or None where it is not known."""
    known = _DENIED.get(machine or platform.machine())
    if known is None:
        return None
    arch, numbers = known
    denied = sorted(set(numbers.values()))
    refuse = _RET_ERRNO | errno.ENOSYS
    # 0 ld arch; 1 jeq arch ? 2 : refuse; 2 ld nr; 3 jge x32 ? refuse : 4; 4.. jeq nr ? refuse; allow; refuse
    checks = len(denied)
    body = [_op(_LD_W_ABS, 4)]
    deny_at = 4 + checks + 1  # index of the final refuse
    body.append(_op(_JEQ_K, arch, jt=0, jf=deny_at - 2))
    body.append(_op(_LD_W_ABS, 0))
    body.append(_op(_JGE_K, _X32_SYSCALL_BIT, jt=deny_at - 4, jf=0))
    for position, number in enumerate(denied):
        index = 4 + position
        body.append(_op(_JEQ_K, number, jt=deny_at - index - 1, jf=0))
    body.append(_op(_RET_K, _RET_ALLOW))
    body.append(_op(_RET_K, refuse))
    return b"".join(body)
