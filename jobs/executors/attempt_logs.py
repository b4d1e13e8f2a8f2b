"""What the executors read from an attempt's section of its job's log
(a file of the executor's log store, the attempt's part starting at `start`): the
messages that tell an allocation failed; and how the cap is named."""

import re
from pathlib import Path

MIB = 1024 * 1024
# Messages programs print when an allocation fails under RLIMIT_AS (Python, glibc,
# C++, Java, Go, numpy, R): a failed job whose log ends with one ran out of memory.
_OOM_RE = re.compile(
    rb"MemoryError|Cannot allocate memory|std::bad_alloc|[Oo]ut of memory|OutOfMemoryError|Unable to allocate|cannot allocate"
)
_OOM_TAIL = 4096


def human_size(count: int) -> str:
    return f"{count // MIB} MiB" if count % MIB == 0 else f"{count} bytes"


def says_out_of_memory(*, path: Path, start: int) -> bool:
    """The end of the attempt's section holds an allocation failure message."""
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(start, size - _OOM_TAIL))
            return bool(_OOM_RE.search(handle.read()))
    except OSError:
        return False
