"""Running an approved autopilot: one step at a time until the target, the budget or the ideas run out.

The training itself is handed in (`TrainStep`, from recipes/autopilot.py), as sweeps get theirs, so
this package never imports the recipes. State is saved before and after every step: a kill -9 loses
at most the step that was training, and `resume` adopts it when its run had already finished.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from tunelab.autopilot.goal import LoadedGoal
from tunelab.autopilot.planner import next_step
from tunelab.autopilot.state import AutopilotState, Clock, Step
from tunelab.errors import TunelabError
from tunelab.runs.folder import read_json_object

log = logging.getLogger(__name__)

#: trains one step (its overrides of the base config) into the autopilot's runs/ folder; the run's path
TrainStep = Callable[[Step], Path]


def run_steps(loaded: LoadedGoal, state: AutopilotState, train_step: TrainStep,
              on_step: Callable[[Step], None] | None = None) -> AutopilotState:
    """Run steps until one reaches the target, the budget is spent, or nothing new is left to try."""
    if state.status not in ("approved", "running"):
        raise TunelabError(f"the plan in {state.folder} is {state.status}, not approved",
                           fix="approve it (answer yes, or pass --yes) before it runs")
    _recover(loaded, state)
    clock = Clock(state.elapsed_s)
    state.status = "running"
    state.save()
    while (stop := _stop_reason(loaded, state, clock)) is None:
        step = next((s for s in state.steps if s.status == "pending"), None) or next_step(loaded, state)
        if step is None:
            stop = "nothing left to try: every proposal and search sample within the knobs was run"
            break
        if step not in state.steps:
            state.steps.append(step)
        _run_one(loaded, state, step, train_step, clock)
        if on_step is not None:
            on_step(step)
    # still `running` on disk: the caller marks it finished once the summary is written, so a reader
    # never sees a finished autopilot without one
    state.stopped, state.elapsed_s = stop, clock.elapsed
    state.save()
    return state


def _run_one(loaded: LoadedGoal, state: AutopilotState, step: Step, train_step: TrainStep, clock: Clock) -> None:
    step.status = "running"
    state.save()
    started = clock.elapsed
    try:
        path = train_step(step)
    except KeyboardInterrupt:
        step.status = "interrupted"
        state.elapsed_s = clock.elapsed
        state.save()
        raise
    except Exception as err:  # noqa: BLE001 - a failed experiment is a result; the autopilot goes on
        log.warning("step %d failed: %s", step.number, err)
        step.status, step.error = "failed", str(err).splitlines()[0][:500]
    else:
        _record(loaded, step, path)
    step.seconds = round(clock.elapsed - started, 1)
    state.elapsed_s = clock.elapsed
    state.save()


def _record(loaded: LoadedGoal, step: Step, path: Path) -> None:
    """The step's result from its run folder: the target metric, forgetting per retention set."""
    run = read_json_object(path / "run.json") or {}
    results = read_json_object(path / "eval.json") or {}
    step.run_id, step.run_path = run.get("id") or path.name, str(path)
    value = (results.get("validation") or {}).get(loaded.goal.target.metric)
    step.value = float(value) if isinstance(value, (int, float)) else None
    step.forgetting = {name: float(entry["forgetting"]) for name, entry in (results.get("retention") or {}).items()
                       if isinstance(entry.get("forgetting"), (int, float))}
    step.status = "succeeded" if run.get("status") == "succeeded" else "failed"
    step.reached = step.status == "succeeded" and loaded.goal.target.reached(step.value, step.forgetting)


def _stop_reason(loaded: LoadedGoal, state: AutopilotState, clock: Clock) -> str | None:
    goal = loaded.goal
    reached = [s for s in state.steps if s.reached]
    if reached:
        return f"target reached by step {reached[0].number}: {goal.target.describe()}"
    ran = [s for s in state.steps if s.status in ("succeeded", "failed")]
    if len(ran) >= goal.budget.runs:
        return f"budget spent: {len(ran)} of {goal.budget.runs} runs"
    if goal.budget.minutes is not None and clock.elapsed >= 60 * goal.budget.minutes:
        return f"budget spent: {clock.elapsed / 60:.1f} of {goal.budget.minutes:g} minutes"
    return None


def _recover(loaded: LoadedGoal, state: AutopilotState) -> None:
    """After a crash: a step left `running` whose run finished is adopted as it is (never re-run); any
    other runs again from the start."""
    for step in state.steps:
        if step.status not in ("running", "interrupted"):
            continue
        finished = [p for p in sorted((state.folder / "runs").glob(f"step-{step.number:02d}-*"))
                    if (read_json_object(p / "run.json") or {}).get("status") == "succeeded"
                    and (p / "eval.json").is_file()]
        if finished:
            log.info("step %d finished before the autopilot stopped: its run %s is kept", step.number,
                     finished[-1].name)
            _record(loaded, step, finished[-1])
        else:
            log.info("step %d did not finish before the autopilot stopped; it runs again", step.number)
            step.status, step.run_id, step.run_path = "pending", None, None
    state.save()
