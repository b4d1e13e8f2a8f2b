"""Which cores a local attempt is pinned to: handed out least-loaded first, so a worker
offering more cpus than the machine has (oversubscription, set on purpose) shares them
evenly."""

import os


class CoreAllocator:
    """The cores this process may run on (its affinity), and how many attempts use each."""

    def __init__(self, cores: list[int] | None = None) -> None:
        self._load = dict.fromkeys(sorted(os.sched_getaffinity(0) if cores is None else cores), 0)

    def take(self, count: int) -> list[int]:
        """`count` cores (at least one), the least used first."""
        chosen = sorted(self._load, key=lambda core: (self._load[core], core))[: max(1, count)]
        for core in chosen:
            self._load[core] += 1
        return chosen

    def release(self, cores: list[int]) -> None:
        for core in cores:
            self._load[core] -= 1

    def load(self) -> dict[int, int]:
        return dict(self._load)
