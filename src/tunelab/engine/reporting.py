"""How the loop tells the outside world about progress (the CLI draws a Rich progress bar)."""

from __future__ import annotations

from typing import Any, Protocol


class RunPruned(Exception):
    """Raised by a reporter to stop a run on purpose (a sweep's pruner); the run is marked `pruned`."""


class Reporter(Protocol):
    def start(self, total_steps: int, done_steps: int) -> None: ...
    def step(self, step: int, record: dict[str, Any]) -> None: ...
    def evaluation(self, step: int, metrics: dict[str, Any], note: str) -> None: ...
    def end(self) -> None: ...


class SilentReporter:
    def start(self, total_steps: int, done_steps: int) -> None:
        pass

    def step(self, step: int, record: dict[str, Any]) -> None:
        pass

    def evaluation(self, step: int, metrics: dict[str, Any], note: str) -> None:
        pass

    def end(self) -> None:
        pass
