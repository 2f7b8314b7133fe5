"""Where a run's wall time went, phase by phase: written to run.json (`timings`) so a slow run says why.

    clock = Timings()
    with clock.phase("tokenize"):
        ...
    clock.as_dict()  # {"import": 1.9, "tokenize": 0.4, ..., "total": 93.1}

`import` is the time from the process start to the first clock (Python, torch, transformers); only
the first clock of a process has one (a later run in the same process, a test or a sweep, starts at
0 and counts from its own creation); `total` is the clock's wall time so far; what no phase covers is `other`. Phases may repeat (their
times add up) and never nest.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


def process_started() -> float:
    """When this process started (epoch seconds), from the OS; now if that cannot be read."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - a missing reading only loses the import figure
        return time.time()


_first_clock = True


class Timings:
    def __init__(self) -> None:
        global _first_clock
        self.created = time.time()
        self.started = process_started() if _first_clock else self.created
        _first_clock = False
        self.seconds: dict[str, float] = {"import": max(self.created - self.started, 0.0)}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - begun)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def as_dict(self) -> dict[str, float]:
        total = time.time() - self.started
        covered = sum(self.seconds.values())
        return {**{k: round(v, 2) for k, v in self.seconds.items()}, "other": round(max(total - covered, 0.0), 2),
                "total": round(total, 2)}
