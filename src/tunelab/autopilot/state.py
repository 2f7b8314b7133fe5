"""An autopilot folder: the goal, the plan, every step and what it gave, written as it goes.

    autopilots/<goal>-<time>/
      goal.yaml       the goal file as given
      plan.json/.md   the first experiments and the policy after them (what was approved)
      state.json      status and every step: overrides, why, parent, run, result (rewritten atomically
                      after each change, so `--resume` after a kill -9 knows what finished)
      summary.json/.md  what was tried and why, each run's metrics and forgetting, the best and why
      runs/           the run folders
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.runs.folder import atomic_write_text, now_iso

STATE = "state.json"
#: planned (waiting for approval) -> approved -> running -> finished | rejected
STATUSES = ("planned", "approved", "rejected", "running", "finished")


@dataclass
class Step:
    """One experiment: the overrides of the base config it trains, where they came from and why."""

    number: int
    overrides: list[str]
    source: str  # plan | diagnosis | search | planner
    reason: str
    parent: str | None = None  # the run whose diagnosis proposed it
    status: str = "pending"  # pending | running | succeeded | failed | interrupted
    run_id: str | None = None
    run_path: str | None = None
    value: float | None = None  # the target metric on validation
    forgetting: dict[str, float] = field(default_factory=dict)
    reached: bool = False
    seconds: float | None = None
    error: str | None = None
    sampled: dict[str, Any] | None = None  # the search's own values (to rebuild its study on resume)


@dataclass
class AutopilotState:
    folder: Path
    status: str
    created: str
    goal: str = ""  # the goal file (its base config is found relative to it)
    steps: list[Step] = field(default_factory=list)
    approved_by: str | None = None
    stopped: str | None = None  # why it stopped: target reached, budget spent, nothing left to try
    elapsed_s: float = 0.0  # wall time spent running steps, summed over resumes

    @classmethod
    def create(cls, folder: Path, goal: Path) -> "AutopilotState":
        state = cls(folder=folder, status="planned", created=now_iso(), goal=str(goal))
        state.save()
        return state

    @classmethod
    def load(cls, folder: Path) -> "AutopilotState":
        path = folder / STATE
        if not path.is_file():
            raise RunError(f"{folder} is not an autopilot folder (no {STATE})",
                           fix="pass the folder `tunelab autopilot GOAL.yaml` printed")
        raw = json.loads(path.read_text(encoding="utf-8"))
        steps = [Step(**s) for s in raw.pop("steps")]
        raw.pop("folder", None)
        return cls(folder=folder, steps=steps, **raw)

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "folder"}
        atomic_write_text(self.folder / STATE, json.dumps(data, indent=2, default=str) + "\n")

    @property
    def finished_steps(self) -> list[Step]:
        return [s for s in self.steps if s.status in ("succeeded", "failed")]

    def tried(self) -> set[tuple[str, ...]]:
        """Every override set already in the plan or run (canonical: sorted), so nothing runs twice."""
        return {canonical(s.overrides) for s in self.steps}


def canonical(overrides: list[str]) -> tuple[str, ...]:
    """An override list as a set of settings: the last value of each key, sorted by key."""
    by_key: dict[str, str] = {}
    for item in overrides:
        key, _, value = item.partition("=")
        by_key[key.strip()] = value.strip()
    return tuple(f"{k}={v}" for k, v in sorted(by_key.items()))


class Clock:
    """Wall time of this session plus what earlier sessions of the same autopilot spent."""

    def __init__(self, earlier: float) -> None:
        self.earlier, self.start = earlier, time.monotonic()

    @property
    def elapsed(self) -> float:
        return self.earlier + time.monotonic() - self.start
