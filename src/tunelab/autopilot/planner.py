"""What the autopilot tries next: its plan first, then the diagnosis of the best run so far, then a
search over the knobs.

- The plan: the base config as given (every later step is measured against it), then whatever the
  data check of the base config proposes within the knobs (a longer max_length for truncated rows,
  balanced class weights for imbalanced classes).
- After each run: `tunelab diagnose` of the best run so far (then of the last one), most severe
  finding first. A proposal is kept to the knobs: a value outside a knob's range is clamped into it,
  a choice the knob does not offer refuses the proposal, a setting that is no knob is left out (said
  in the step's reason). The child is the parent's overrides with the proposal applied.
- Then an Optuna TPE search over the knobs, seeded, its study rebuilt from every finished step (the
  diagnosis steps included: their knob values are read from their configs), so a resumed autopilot
  asks exactly what it would have asked.

Nothing is tried twice: a step whose settings equal an earlier step's is skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from tunelab.autopilot.goal import LoadedGoal
from tunelab.autopilot.state import AutopilotState, Step, canonical
from tunelab.config.load import load_config, yaml_value
from tunelab.diagnose import diagnose
from tunelab.diagnose.data import data_findings
from tunelab.diagnose.view import RunView
from tunelab.errors import ConfigError
from tunelab.report.load import RunData
from tunelab.sweep.optuna_backend import make_sampler

log = logging.getLogger(__name__)
ASKS = 30  # search samples tried before deciding the space holds nothing new


def initial_plan(loaded: LoadedGoal, data_check: dict[str, Any] | None) -> list[Step]:
    """The first experiments and why: the baseline, then the data check's proposals within the knobs."""
    base = list(loaded.goal.overrides)
    steps = [Step(1, base, "plan", "baseline: the base config as given; every later step is measured against it")]
    if data_check:
        config = load_config(loaded.base_path, base).model_dump(mode="json")
        view = RunView(run=RunData(path=loaded.base_path.parent, run={}, config=config, config_text="", metrics=[]),
                       data_check=data_check, suspects=[], model_config=None)
        for finding in data_findings(view):
            if not finding.proposal or not finding.proposal.overrides:
                continue
            kept = within_knobs(loaded, finding.proposal.overrides)
            if kept is None:
                continue
            overrides, dropped = kept
            candidate = merge(base, overrides)
            if canonical(candidate) in {canonical(s.overrides) for s in steps} or not loaded.validates(candidate):
                continue
            steps.append(Step(len(steps) + 1, candidate, "plan",
                              _reason(f"data check, {finding.id}: {finding.proposal.reason}", dropped)))
    return steps


def next_step(loaded: LoadedGoal, state: AutopilotState) -> Step | None:
    """The next experiment after the finished ones, or None when neither diagnosis nor search has
    anything new."""
    number = len(state.steps) + 1
    diagnosed = [(parent, _diagnosis(parent)) for parent in _parents(loaded, state)]  # each run read once
    fallback = ""
    if loaded.goal.planner == "openai":
        from tunelab.autopilot.llm import propose

        step, problem = propose(loaded, state, number, diagnosed[0][1] if diagnosed else None)
        if step is not None:
            return step
        log.warning("planner openai: %s; the rules planner picks this step", problem)
        fallback = f"planner openai fell back to the rules: {problem}. "
    step = None
    for parent, found in diagnosed:
        step = _from_diagnosis(loaded, state, parent, found, number) if found is not None else None
        if step is not None:
            break
    else:
        step = _from_search(loaded, state, number)
    if step is not None and fallback:
        step.reason = fallback + step.reason
    return step


def _diagnosis(step: Step) -> dict[str, Any] | None:
    try:
        return diagnose(Path(step.run_path))  # type: ignore[arg-type]
    except Exception as err:  # noqa: BLE001 - a run folder that cannot be read proposes nothing
        log.warning("could not diagnose %s: %s", step.run_path, err)
        return None


def _parents(loaded: LoadedGoal, state: AutopilotState) -> list[Step]:
    done = [s for s in state.steps if s.status == "succeeded" and s.value is not None and s.run_path]
    if not done:
        return []
    sign = 1 if loaded.goal.target.greater_is_better else -1
    best = max(done, key=lambda s: sign * s.value)  # type: ignore[operator]
    return [best] + ([done[-1]] if done[-1] is not best else [])


def _from_diagnosis(loaded: LoadedGoal, state: AutopilotState, parent: Step, found: dict[str, Any],
                    number: int) -> Step | None:
    """The first of the parent's proposals (most severe first) that is new and fits the knobs."""
    tried = state.tried()
    for finding in found["findings"]:
        proposal = finding.get("proposal") or {}
        if not proposal.get("overrides"):
            continue
        kept = within_knobs(loaded, proposal["overrides"])
        if kept is None:
            continue
        overrides, dropped = kept
        child = merge(parent.overrides, overrides)
        if canonical(child) in tried or not loaded.validates(child):
            continue
        reason = _reason(f"{finding['id']} in step {parent.number} ({finding['summary']}): {proposal['reason']}",
                         dropped)
        return Step(number, child, "diagnosis", reason, parent=parent.run_id)
    return None


def _from_search(loaded: LoadedGoal, state: AutopilotState, number: int) -> Step | None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = loaded.goal.target
    study = optuna.create_study(direction="maximize" if target.greater_is_better else "minimize",
                                sampler=make_sampler(loaded.goal.seed + number))
    distributions = loaded.knobs.distributions()
    for step in state.steps:
        params = _knob_values(loaded, step)
        if step.status == "succeeded" and step.value is not None and params is not None:
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=step.value))
    tried, by_key = state.tried(), {p.key: p for p in loaded.knobs.params}
    for _ in range(ASKS):
        trial = study.ask()
        # 3 significant digits: a learning rate of 0.00859 reads (and reproduces) better than 0.008591315698733486
        sampled = {k: _round(v, by_key[k]) for k, v in loaded.knobs.suggest(trial).items()}
        overrides = merge(list(loaded.goal.overrides), loaded.knobs.overrides(sampled))
        if canonical(overrides) not in tried and loaded.validates(overrides):
            shown = ", ".join(f"{k}={yaml_value(v)}" for k, v in sampled.items())
            return Step(number, overrides, "search", f"Optuna TPE over the knobs ({len(study.trials) - 1} "
                        f"finished runs informing it): {shown}", sampled=sampled)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return None


def _round(value: Any, param: Any) -> Any:
    if not isinstance(value, float) or param.kind != "float":
        return value
    return min(max(float(f"{value:.3g}"), param.low), param.high)


def _knob_values(loaded: LoadedGoal, step: Step) -> dict[str, Any] | None:
    """The labels the search space would give this step's configuration (None when one does not fit)."""
    if step.sampled is not None:
        return step.sampled
    try:
        config = load_config(loaded.base_path, step.overrides).model_dump(mode="json")
    except ConfigError:
        return None
    values = {}
    for param in loaded.knobs.params:
        value = _lookup(config, param.key)
        if param.kind == "categorical":
            if value not in param.choices:
                return None
            values[param.key] = param.labels[param.choices.index(value)]
        elif value is None or not (param.low <= value <= param.high):  # type: ignore[operator]
            return None
        else:
            values[param.key] = value
    return values


def _lookup(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def within_knobs(loaded: LoadedGoal, overrides: list[str]) -> tuple[list[str], list[str]] | None:
    """The proposal kept to the knobs, and what was left out; None when it needs a choice no knob offers."""
    params = {p.key: p for p in loaded.knobs.params}
    kept, dropped = [], []
    for item in overrides:
        key, _, text = item.partition("=")
        param = params.get(key)
        if param is None:
            dropped.append(item)
            continue
        value = yaml.safe_load(text)
        if param.kind == "categorical":
            if value not in param.choices:
                return None
        else:
            value = min(max(value, param.low), param.high)
            value = int(round(value)) if param.kind == "int" else float(value)
        kept.append(f"{key}={yaml_value(value)}")
    # A new kind without its settings is another experiment (freeze with no layer frozen): refused.
    switched = {_section(k) for k in kept if k.partition("=")[0].endswith(".name")}
    if any(_section(d) in switched for d in dropped):
        return None
    # a section's kind goes with the settings of it that are kept (objective.name with class_weights)
    sections = {_section(k) for k in kept}
    companions = [d for d in dropped if d.partition("=")[0].endswith(".name") and _section(d) in sections]
    kept = companions + kept
    dropped = [d for d in dropped if d not in companions]
    return (kept, dropped) if kept else None


def _section(item: str) -> str:
    return item.partition("=")[0].rsplit(".", 1)[0]


def merge(parent: list[str], change: list[str]) -> list[str]:
    """The parent's overrides with `change` applied: a new kind (`method.name=freeze`) drops the
    parent's settings of the old kind, whose keys the new one may not have."""
    by_key: dict[str, str] = {}
    for item in parent:
        key, _, value = item.partition("=")
        by_key[key] = value
    for item in change:
        key, _, value = item.partition("=")
        if key.endswith(".name") and by_key.get(key) != value:
            section = key.rsplit(".", 1)[0] + "."
            by_key = {k: v for k, v in by_key.items() if not k.startswith(section)}
        by_key[key] = value
    return [f"{k}={v}" for k, v in by_key.items()]


def _reason(text: str, dropped: list[str]) -> str:
    return text + (f" (left out, not a knob: {' '.join(dropped)})" if dropped else "")
