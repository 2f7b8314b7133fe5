"""One sweep trial, the same for every backend: sampled values -> config -> train recipe -> a record.

The backends only decide *which* values to try and *whether* to stop a trial early; both call
`run_trial`, which applies the values as dotted overrides, trains into `<sweep>/trials/trial-NNN-*`,
and turns the outcome (finished, pruned, failed) into a `TrialRecord`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config import Config, load_config
from tunelab.engine.reporting import RunPruned
from tunelab.errors import TunelabError
from tunelab.sweep.space import SearchSpace

log = logging.getLogger(__name__)

COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"

# Called after every validation evaluation with (step, metric value); raise RunPruned to stop the trial.
OnEvaluation = Callable[[int, float], None]
# The train recipe, handed in by the sweep recipe (sweep/ sits below recipes/ and never imports it):
# train(config, reporter=...) -> an outcome with .run, .fit and .results.
TrainFn = Callable[..., Any]


@dataclass
class SweepSetup:
    """Everything a trial needs, picklable so a Ray worker gets it whole. Paths are absolute: Ray
    workers run in another working directory."""

    config_path: Path
    overrides: list[str]  # the user's, applied before the sampled values
    space: SearchSpace
    sweep_dir: Path
    metric: str
    greater_is_better: bool
    cwd: str  # where the config's relative paths (data, model folders) resolve
    train: TrainFn  # a module-level function, so it pickles by name for Ray workers
    trial_overrides: list[str] = field(default_factory=list)  # e.g. train.num_threads=1 for Ray trials

    @property
    def direction(self) -> str:
        return "maximize" if self.greater_is_better else "minimize"

    @property
    def trials_dir(self) -> Path:
        return self.sweep_dir / "trials"

    def trial_config(self, number: int, sampled: dict[str, Any]) -> Config:
        """The validated config of trial `number`; a bad sampled value is the usual one-line ConfigError."""
        config = load_config(self.config_path, [*self.overrides, *self.space.overrides(sampled), *self.trial_overrides])
        # Set after loading, not as overrides: a path is not YAML and must not be parsed as such.
        config.output.dir = str(self.trials_dir)
        config.output.name = trial_name(number)
        return config


@dataclass
class TrialRecord:
    """One line of trials.jsonl."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    params: dict[str, Any]
    value: float | None = None  # best validation value of the metric (the objective)
    run: str | None = None  # the trial's run folder
    trainable_params: int | None = None
    total_params: int | None = None
    seconds: float | None = None
    error: str | None = None
    intermediate: list[list[float]] = field(default_factory=list)  # [step, value] of each evaluation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def trial_name(number: int) -> str:
    return f"trial-{number:03d}"


class EvaluationReporter:
    """A train-loop Reporter that hands each validation value of the sweep's metric to the backend."""

    def __init__(self, metric: str, on_evaluation: OnEvaluation) -> None:
        self.metric = metric
        self.on_evaluation = on_evaluation
        self.history: list[list[float]] = []

    def start(self, total_steps: int, done_steps: int) -> None:
        pass

    def step(self, step: int, record: dict[str, Any]) -> None:
        pass

    def evaluation(self, step: int, metrics: dict[str, Any], note: str) -> None:
        value = metrics.get(self.metric)
        if value is None:
            return
        self.history.append([step, float(value)])
        self.on_evaluation(step, float(value))

    def end(self) -> None:
        pass


def run_trial(setup: SweepSetup, number: int, sampled: dict[str, Any], on_evaluation: OnEvaluation) -> TrialRecord:
    """Train one trial; never raises for a trial's own failure (the sweep goes on), only for interrupts."""
    record = TrialRecord(number=number, state=FAIL, params=dict(sampled))
    reporter = EvaluationReporter(setup.metric, on_evaluation)
    started = time.perf_counter()
    try:
        outcome = setup.train(setup.trial_config(number, sampled), reporter=reporter)
    except RunPruned:
        record.state = PRUNED
        record.run = find_run(setup.trials_dir, number)
    except TunelabError as err:
        record.error = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        record.run = find_run(setup.trials_dir, number)
    except Exception as err:  # a crash (out of memory, a bug) fails this trial only; --debug shows the traceback
        log.debug("trial %d crashed", number, exc_info=True)
        record.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        record.run = find_run(setup.trials_dir, number)
    else:
        _complete(record, setup, outcome)
    record.seconds = round(time.perf_counter() - started, 2)
    record.intermediate = reporter.history
    return record


def _complete(record: TrialRecord, setup: SweepSetup, outcome: Any) -> None:
    best = outcome.fit.best
    value = best["value"] if best else outcome.results.get("validation", {}).get(setup.metric)
    record.run = str(outcome.run.path)
    info = outcome.run.read_json("run.json")
    record.trainable_params, record.total_params = info.get("trainable_params"), info.get("total_params")
    if value is None or not math.isfinite(float(value)):
        record.error = f"validation {setup.metric} is {value}"
        return
    record.state, record.value = COMPLETE, float(value)


def find_run(trials_dir: Path, number: int) -> str | None:
    """The run folder a trial created (run ids are `trial-NNN-<time>-<hex>`); None when it failed earlier."""
    found = sorted(trials_dir.glob(f"{trial_name(number)}-*"), key=os.path.getmtime) if trials_dir.is_dir() else []
    return str(found[-1]) if found else None
