"""The default backend: an Optuna study driven ask-and-tell, one trial at a time, in this process.

TPE samples the space (a preset's grid points are enqueued, so each runs once), a median pruner stops trials
whose intermediate validation value falls behind, and the study lives in `<sweep>/study.db`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunelab.engine.reporting import RunPruned
from tunelab.sweep.space import SearchSpace
from tunelab.sweep.trial import COMPLETE, FAIL, PRUNED, SweepSetup, TrialRecord, run_trial

OnTrial = Callable[[TrialRecord], None]


def make_sampler(seed: int | None) -> Any:
    """TPE, shared with the Ray backend. Grids need no sampler of their own: every point is enqueued
    (Optuna's GridSampler stops the study from inside, which only works under `study.optimize`)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(space: SearchSpace) -> Any:
    import optuna

    if space.grid:  # a preset compares every point: a pruned point would be a hole in the comparison
        return optuna.pruners.NopPruner()
    # Two finished trials give the median something to stand on; every evaluation may prune after that.
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)


def run_optuna(setup: SweepSetup, n_trials: int, *, seed: int | None = None,
               enqueue: list[dict[str, Any]] | None = None, on_trial: OnTrial | None = None) -> list[TrialRecord]:
    """Run `n_trials` trials; `enqueue` holds sampled values to try first (a baseline, a known point)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own per-trial lines replace Optuna's
    study = optuna.create_study(
        storage=f"sqlite:///{setup.sweep_dir / 'study.db'}", study_name=setup.sweep_dir.name,
        sampler=make_sampler(seed), pruner=make_pruner(setup.space),
        direction=setup.direction, load_if_exists=True,
    )
    for params in enqueue or []:
        study.enqueue_trial(params)
    records = []
    for _ in range(n_trials):
        record = _one_trial(study, setup)
        records.append(record)
        if on_trial:
            on_trial(record)
    return records


def _one_trial(study: Any, setup: SweepSetup) -> TrialRecord:
    from optuna.trial import TrialState

    trial = study.ask()
    sampled = setup.space.suggest(trial)

    def on_evaluation(step: int, value: float) -> None:
        trial.report(value, step)
        if trial.should_prune():
            raise RunPruned(f"pruned at step {step}")

    try:
        record = run_trial(setup, trial.number, sampled, on_evaluation)
    except KeyboardInterrupt:  # do not leave the trial RUNNING in study.db
        study.tell(trial, state=TrialState.FAIL)
        raise
    states = {COMPLETE: TrialState.COMPLETE, PRUNED: TrialState.PRUNED, FAIL: TrialState.FAIL}
    if record.error:
        trial.set_user_attr("error", record.error)
    study.tell(trial, record.value if record.state == COMPLETE else None, state=states[record.state])
    return record
