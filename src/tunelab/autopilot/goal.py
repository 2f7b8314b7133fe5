"""The goal file of `tunelab autopilot`: a base config, a target, a budget and the knobs it may turn.

    base: news-topics.yaml            # a training config (relative to this file)
    overrides: [train.epochs=2]       # applied to the base first (optional)
    target: {metric: macro_f1, at_least: 0.90, max_forgetting: 0.02}
    budget: {runs: 6, minutes: 30}
    knobs:                            # the space-file syntax of `tunelab sweep`
      train.learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      method.name: [full, freeze, lora]
      method.r: [4, 8, 16]
      train.epochs: {type: int, low: 1, high: 8}

Everything is validated before anything runs: the base config with its overrides, every knob's
bounds and choices against that config (as `tunelab sweep` checks a space), the target metric against
what the task reports.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tunelab.config.load import describe, load_config, load_yaml_file
from tunelab.errors import ConfigError
from tunelab.sweep.space import SearchSpace, check_space, parse_param

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Target(_Strict):
    metric: str = Field(description="Validation metric the run must reach (eval.json validation).")
    at_least: float | None = Field(None, description="Reached when the metric is >= this (F1, accuracy...).")
    at_most: float | None = Field(None, description="Reached when the metric is <= this (loss, perplexity...).")
    max_forgetting: float | None = Field(
        None, ge=0, description="And forgetting at most this on every retention set (relative, as "
        "eval.max_forgetting: 0.02 is 2%).")

    @model_validator(mode="after")
    def _one_bound(self) -> "Target":
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least (higher is better) and at_most (lower is better)")
        return self

    @property
    def greater_is_better(self) -> bool:
        return self.at_least is not None

    @property
    def bound(self) -> float:
        return self.at_least if self.at_least is not None else self.at_most  # type: ignore[return-value]

    def reached(self, value: float | None, forgetting: dict[str, float]) -> bool:
        if value is None:
            return False
        good = value >= self.bound if self.greater_is_better else value <= self.bound
        kept = self.max_forgetting is None or all(lost <= self.max_forgetting for lost in forgetting.values())
        return good and kept

    def describe(self) -> str:
        text = f"validation {self.metric} {'>=' if self.greater_is_better else '<='} {self.bound:g}"
        if self.max_forgetting is not None:
            text += f" and forgetting <= {100 * self.max_forgetting:g}% on every retention set"
        return text


class Budget(_Strict):
    runs: int = Field(6, ge=1, le=200, description="Training runs at most (the baseline included).")
    minutes: float | None = Field(None, gt=0, description="No new run starts after this much wall time.")


class OpenAIPlanner(_Strict):
    base_url: str = Field(description="An OpenAI-compatible endpoint (e.g. http://127.0.0.1:8000/v1).")
    model: str = Field(description="The model name to ask.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key (never the key).")


class Goal(_Strict):
    base: str = Field(description="The training config to start from (relative to the goal file).")
    overrides: list[str] = Field(default_factory=list, description="Dotted overrides applied to base first.")
    target: Target
    budget: Budget = Field(default_factory=Budget)
    knobs: dict[str, Any] = Field(min_length=1, description="What the autopilot may change: the space-file "
                                  "syntax of `tunelab sweep` (dotted key: spec).")
    planner: Literal["rules", "openai"] = Field("rules", description="rules: diagnosis proposals, then an "
                                                "Optuna search over the knobs; openai: an LLM proposes, "
                                                "validated against the knobs, with the rules as fallback.")
    openai: OpenAIPlanner | None = None
    seed: int = Field(0, description="Seed of the search (the same goal plans the same experiments).")
    register_as: str | None = Field(None, description="Registry name for the best run (default: the base "
                                 "config's name); it is registered as a candidate, never promoted.")
    output: str = Field("autopilots", description="Folder that holds autopilot folders (relative to the goal).")


@dataclass
class LoadedGoal:
    """A validated goal: the file, its settings, the base config's path and the knobs as a search space."""

    path: Path
    goal: Goal
    base_path: Path
    knobs: SearchSpace

    @property
    def name(self) -> str:
        return self.path.stem

    def validates(self, overrides: list[str]) -> bool:
        """Whether the base config with these overrides is a valid config (logged when it is not)."""
        try:
            load_config(self.base_path, overrides)
        except ConfigError as err:
            log.info("skipped %s: %s", " ".join(overrides), err)
            return False
        return True


def load_goal(path: str | Path) -> LoadedGoal:
    """Read and validate a goal file; every problem is one ConfigError naming the file and the key."""
    path = Path(path).resolve()
    raw = load_yaml_file(path, "goal file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a goal file is a mapping (base, target, budget, knobs)",
                          fix="see `tunelab autopilot --help` for an example")
    try:
        goal = Goal.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: " + "; ".join(describe(e) for e in err.errors())) from None
    base_path = (path.parent / goal.base).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: {goal.base} is not a file", fix="name the training config to start from")
    config = load_config(base_path, goal.overrides)
    knobs = SearchSpace([parse_param(str(key), spec, path) for key, spec in goal.knobs.items()], source=str(path))
    check_space(knobs, base_path, goal.overrides)
    _check_metric(config, goal.target, path)
    if goal.planner == "openai" and goal.openai is None:
        raise ConfigError(f"{path}: planner: openai needs an openai section (base_url, model)",
                          fix="add openai: {base_url: http://127.0.0.1:8000/v1, model: NAME}")
    return LoadedGoal(path, goal, base_path, knobs)


def _check_metric(config: Any, target: Target, path: Path) -> None:
    from tunelab.objectives.base import metrics_of
    from tunelab.tasks import TASKS

    task = TASKS.get(config.task)()
    known = metrics_of(config.objective or _default_objective(task), task)
    if target.metric not in known and target.metric != "loss":
        raise ConfigError(f"{path}: target.metric: {target.metric!r} is not a validation metric of a "
                          f"{config.task} run", fix=f"use one of: {', '.join(sorted(known))}")
    if target.metric in known and known[target.metric] != target.greater_is_better:
        better = "higher" if known[target.metric] else "lower"
        raise ConfigError(f"{path}: target: {better} {target.metric} is better, so the bound is "
                          f"{'at_least' if known[target.metric] else 'at_most'}")


def _default_objective(task: Any) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(name=task.default_objective)
