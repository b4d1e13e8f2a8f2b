"""The 'cluster' side of one attempt of the fake cluster (`fake_cluster.py`): run the
argv with its output appended to the job's log, then record its exit code where the
executor looks, as a cluster's accounting would. Standard library only.

    python fake_cluster_step.py STATE_DIR EXTERNAL_ID LOG ARGV...
"""

import os
import subprocess
import sys
from pathlib import Path


def main(state: Path, external_id: str, log: str, argv: list[str]) -> int:
    (state / f"{external_id}.pid").write_text(str(os.getpid()))
    with open(log, "ab") as out:
        code = subprocess.call(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # noqa: S603
    temporary = state / f"{external_id}.exit.tmp"
    temporary.write_text(str(code))
    temporary.rename(state / f"{external_id}.exit")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]))
