"""The sweep recipe: validate config and space, create the sweep folder, run the trials, write the results.

Like `train`, everything a user can get wrong (config, space file, preset, options) is checked before
the sweep folder exists; a trial that fails later is recorded as FAIL and the sweep goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.config import Config, load_config
from tunelab.errors import ConfigError, TunelabError
from tunelab.recipes.train import train
from tunelab.sweep.presets import PRESETS
from tunelab.sweep.results import write_outputs
from tunelab.sweep.space import SearchSpace, check_space, load_space
from tunelab.sweep.trial import SweepSetup, TrialRecord
from tunelab.tasks import TASKS

BACKENDS = ("optuna", "ray")


@dataclass
class SweepOutcome:
    sweep_dir: Path
    records: list[TrialRecord]
    summary: dict[str, Any]  # also in sweep.json


def sweep(
    config_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    space: str | Path | None = None,
    preset: str | None = None,
    trials: int | None = None,
    backend: str = "optuna",
    out: str | Path | None = None,
    seed: int | None = 0,
    ray_address: str | None = None,
    trial_cpus: int = 1,
    trial_gpus: float = 0.0,
    ray_storage: str | None = None,
    tolerance: float = 0.01,
    enqueue: list[dict[str, Any]] | None = None,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> SweepOutcome:
    """Run a hyperparameter sweep of `config_path` and write its outputs into the sweep folder.

    `space` is a space file (ignored with a `preset`); `enqueue` lists sampled values to try first;
    `on_trial` is called with each finished trial's record (progress lines in the CLI).
    """
    config_path = Path(config_path).resolve()
    overrides = list(overrides)
    base = load_config(config_path, overrides)
    metric, greater = _objective(base)
    _check_options(backend, trials, tolerance, space, preset)
    search = PRESETS.get(preset)(base) if preset else load_space(Path(space))  # type: ignore[arg-type]
    check_space(search, config_path, overrides)
    n_trials = _trial_count(search, trials)
    setup = SweepSetup(config_path=config_path, overrides=overrides, space=search, sweep_dir=_sweep_dir(out, base),
                       metric=metric, greater_is_better=greater, cwd=os.getcwd(), train=train)
    if search.grid:  # every grid point is enqueued in order, so each one runs exactly once
        enqueue = [*(enqueue or []), *search.grid_points()]

    finished: list[TrialRecord] = []

    def collect(record: TrialRecord) -> None:
        finished.append(record)
        if on_trial:
            on_trial(record)

    try:
        ray_options = {"address": ray_address, "cpus": trial_cpus, "gpus": trial_gpus, "storage": ray_storage}
        records = _run(setup, backend, n_trials, seed=seed, enqueue=enqueue, on_trial=collect, **ray_options)
    except KeyboardInterrupt:  # Ctrl-C: the trials that finished still get their table, best.yaml and plots
        if finished:
            write_outputs(setup, finished, base, backend=backend, seed=seed, tolerance=tolerance)
        raise
    summary = write_outputs(setup, records, base, backend=backend, seed=seed, tolerance=tolerance)
    return SweepOutcome(setup.sweep_dir, records, summary)


def _objective(base: Config) -> tuple[str, bool]:
    """The metric trials are compared on (eval.metric, else the task's default) and which way is better."""
    task = TASKS.get(base.task)()
    task.validate_config(base)
    return base.eval.metric, task.run_metrics(base)[base.eval.metric]  # type: ignore[index]


def _check_options(backend: str, trials: int | None, tolerance: float, space: Any, preset: str | None) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is not supported", fix="use optuna or ray")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be 0 or more, got {tolerance}")
    if preset is None and space is None:
        raise ConfigError("no search space given", fix="pass --space space.yaml or --preset layers")
    if preset is None and trials is None:
        raise ConfigError("--trials is required with --space", fix="e.g. --trials 20")


def _trial_count(space: SearchSpace, trials: int | None) -> int:
    """A grid runs every point once (fewer when --trials says so); a search runs --trials."""
    if space.grid:
        return min(trials or space.grid_size(), space.grid_size())
    return trials  # type: ignore[return-value]


def _sweep_dir(out: str | Path | None, base: Config) -> Path:
    """Default sweeps/<config-name>-<time>; an existing non-empty folder is refused, not mixed into."""
    path = Path(out) if out else Path("sweeps") / f"{base.output.name or 'sweep'}-{time.strftime('%Y%m%d-%H%M%S')}"
    path = path.resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(f"{path} already exists and is not empty", fix="choose another --out folder")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(setup: SweepSetup, backend: str, n_trials: int, **options: Any) -> list[TrialRecord]:
    if backend == "ray":
        # each backend imports its optional dependency (ray, optuna) only when chosen
        from tunelab.sweep.ray_backend import TrialResources, run_ray

        resources = TrialResources(options.pop("cpus"), options.pop("gpus"), options.pop("storage"))
        return run_ray(setup, n_trials, resources=resources, **options)
    from tunelab.sweep.optuna_backend import run_optuna

    for ray_only in ("address", "cpus", "gpus", "storage"):
        options.pop(ray_only, None)
    return run_optuna(setup, n_trials, **options)


def require_best(outcome: SweepOutcome) -> None:
    """Raise the one-line error of a sweep in which no trial finished (the CLI exits 1 with it)."""
    if outcome.summary.get("best") is None:
        failed = [r for r in outcome.records if r.error]
        reason = f"; first failure: {failed[0].error}" if failed else ""
        raise TunelabError(f"no trial of the sweep finished ({len(outcome.records)} ran){reason}",
                           fix=f"see {outcome.sweep_dir / 'trials.jsonl'}")
