"""Working directories of finished attempts, removed off the worker's hot path."""

import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

logger = logging.getLogger("jobs.executors.workdirs")
_RM = shutil.which("rm", path="/usr/bin:/bin") or "/bin/rm"


def remove_dir(path: Path) -> None:
    """Remove an attempt's working directory, whatever the job left in it. Most jobs
    leave it empty: one rmdir. Otherwise `rm -rf --one-file-system`, which walks a tree
    of any depth without following symlinks (shutil.rmtree recurses once per level: a
    job's tree 1,000 folders deep raised RecursionError)."""
    try:
        os.rmdir(path)
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    result = subprocess.run(  # noqa: S603 (an argv list, no shell)
        [_RM, "-rf", "--one-file-system", "--", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        logger.warning("could not remove %s: %s", path, result.stderr.strip()[:500])


class Remover:
    """Removes finished attempts' working directories on a thread of its own, a batch at
    a time: an rmdir costs a quarter of a millisecond here, as much as starting a job,
    and nothing waits for it (every attempt has a directory of its own). The thread
    wakes on a timer rather than per directory, which would cost a thread switch each."""

    _EVERY = 0.2

    def __init__(self) -> None:
        self._paths: list[Path] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def remove(self, path: Path) -> None:
        self._paths.append(path)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="workdir-remover", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._EVERY):
            self._drain()

    def _drain(self) -> None:
        paths, self._paths = self._paths, []  # a swap: atomic under the GIL
        for path in paths:
            try:
                remove_dir(path)
            except Exception:  # the thread must outlive any one directory
                logger.exception("could not remove %s", path)

    def flush(self) -> None:
        """Stop the thread and remove what is left, before returning."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._drain()
