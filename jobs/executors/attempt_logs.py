"""What the local executor reads from and does to an attempt's section of its job's log
(`<BATCHES_LOG_DIR>/<log_id>.log`, the attempt's part starting at `start`): its size
against the cap, cutting it there, and the messages that tell an allocation failed."""

import contextlib
import os
import re
from typing import Any

from jobs.logs import log_path

MIB = 1024 * 1024
# Messages programs print when an allocation fails under RLIMIT_AS (Python, glibc,
# C++, Java, Go, numpy, R): a failed job whose log ends with one ran out of memory.
_OOM_RE = re.compile(
    rb"MemoryError|Cannot allocate memory|std::bad_alloc|[Oo]ut of memory|OutOfMemoryError|Unable to allocate|cannot allocate"
)
_OOM_TAIL = 4096


def human_size(count: int) -> str:
    return f"{count // MIB} MiB" if count % MIB == 0 else f"{count} bytes"


def grew_past(*, log_id: Any, start: int, cap: int) -> bool:
    """The attempt has written more than `cap` bytes."""
    try:
        return log_path(log_id).stat().st_size - start > cap
    except OSError:
        return False


def cut(*, log_id: Any, start: int, cap: int) -> None:
    """Cut the attempt's section at `cap` (what was written between two checks goes) and
    end the log with a line saying so."""
    with contextlib.suppress(OSError), open(log_path(log_id), "r+b") as handle:
        handle.truncate(start + cap)
        handle.seek(0, os.SEEK_END)
        handle.write(f"\n--- log cut at {human_size(cap)}: the attempt was stopped ---\n".encode())


def says_out_of_memory(*, log_id: Any, start: int) -> bool:
    """The end of the attempt's section holds an allocation failure message."""
    try:
        with log_path(log_id).open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(start, size - _OOM_TAIL))
            return bool(_OOM_RE.search(handle.read()))
    except OSError:
        return False
