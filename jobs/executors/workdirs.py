"""Working directories of finished attempts, removed off the worker's hot path."""

import os
import shutil
import threading
from pathlib import Path


def remove_dir(path: Path) -> None:
    # Most jobs leave their working directory empty: one rmdir, the tree walk otherwise.
    try:
        os.rmdir(path)
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


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
            remove_dir(path)

    def flush(self) -> None:
        """Stop the thread and remove what is left, before returning."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._drain()
