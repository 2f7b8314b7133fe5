"""The autopilot recipe: plan from the goal and a data check, wait for approval, run the steps with
`train`, summarise, and register the best run as a candidate.

Each step is a normal training run in the autopilot's runs/ folder; its run.json and lineage carry
`origin` (the autopilot, the step, the parent run and the reason). Inside a workspace the plan, the
approval and the end are audited, and the best run becomes a candidate version: promotion still goes
through its gates and a person.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.autopilot.goal import LoadedGoal, load_goal
from tunelab.autopilot.loop import run_steps
from tunelab.autopilot.planner import initial_plan
from tunelab.autopilot.state import AutopilotState, Step
from tunelab.autopilot.summary import best_step, write_summary
from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.recipes.train import train
from tunelab.runs.folder import atomic_write_text, read_json_object
from tunelab.workspace import Workspace
from tunelab.workspace.audit import current_actor

log = logging.getLogger(__name__)


def plan(goal_path: str | Path, out: str | Path | None = None) -> tuple[LoadedGoal, AutopilotState]:
    """Validate the goal, check the base config's data, write the plan into a new autopilot folder."""
    from tunelab.recipes.data_check import check_target

    loaded = load_goal(goal_path)
    root = Path(out) if out is not None else Path(loaded.goal.output)
    folder = root / f"{loaded.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=False)
    shutil.copy2(loaded.path, folder / "goal.yaml")
    try:
        report = check_target(str(loaded.base_path), loaded.goal.overrides, out_dir=folder / "data_check").report
    except TunelabError as err:  # the baseline will stop on it with the same message; the plan says so
        log.warning("data check of the base config: %s", err)
        report = None
    state = AutopilotState.create(folder, loaded.path)
    state.steps = initial_plan(loaded, report)
    state.save()
    _write_plan(loaded, state)
    _audit("autopilot.plan", folder, {"goal": str(loaded.path), "steps": len(state.steps)})
    return loaded, state


def _write_plan(loaded: LoadedGoal, state: AutopilotState) -> None:
    goal = loaded.goal
    policy = ("after each run: `tunelab diagnose` the best run so far and try its most severe finding's proposal, "
              "kept to the knobs; when no proposal is new, an Optuna TPE search over the knobs")
    if goal.planner == "openai" and goal.openai is not None:
        policy = (f"after each run: {goal.openai.model} at {goal.openai.base_url} proposes the next experiment, "
                  f"checked against the knobs; when its answer is unusable, the rules: {policy.partition(': ')[2]}")
    budget = f"{goal.budget.runs} runs" + (f" or {goal.budget.minutes:g} minutes" if goal.budget.minutes else "")
    data = {"goal": str(loaded.path), "target": goal.target.describe(), "budget": budget,
            "knobs": {p.key: list(p.choices) if p.kind == "categorical" else [p.low, p.high]
                      for p in loaded.knobs.params},
            "first_steps": [{"step": s.number, "overrides": s.overrides, "why": s.reason} for s in state.steps],
            "then": policy}
    atomic_write_text(state.folder / "plan.json", json.dumps(data, indent=2) + "\n")
    lines = [f"# Plan: {loaded.name}", "", f"- target: {data['target']}", f"- budget: {budget}",
             "- knobs: " + ", ".join(f"{k} {v}" for k, v in data["knobs"].items()), "", "First steps:", ""]
    lines += [f"{s.number}. {' '.join(s.overrides) or '(the base config)'} — {s.reason}" for s in state.steps]
    lines += ["", f"Then {policy}. It stops at the target or the budget; the best run is registered as a "
              "candidate, never promoted."]
    atomic_write_text(state.folder / "plan.md", "\n".join(lines) + "\n")


def decide(state: AutopilotState, approved: bool) -> None:
    """Approve or reject the plan (who decided is recorded, and audited inside a workspace)."""
    if state.status != "planned":
        raise TunelabError(f"the plan in {state.folder} is already {state.status}")
    state.status, state.approved_by = ("approved" if approved else "rejected"), current_actor()
    state.save()
    _audit("autopilot.approve" if approved else "autopilot.reject", state.folder, {})


def resume(folder: str | Path) -> tuple[LoadedGoal, AutopilotState]:
    """An autopilot folder as it was left (its goal file re-read and checked unchanged)."""
    state = AutopilotState.load(Path(folder))
    loaded = load_goal(state.goal)
    if (state.folder / "goal.yaml").read_bytes() != loaded.path.read_bytes():
        raise TunelabError(f"{loaded.path} changed since the autopilot in {state.folder} started",
                           fix="start a new autopilot with the changed goal")
    return loaded, state


def run(loaded: LoadedGoal, state: AutopilotState, on_step: Callable[[Step], None] | None = None) -> dict[str, Any]:
    """Run the approved plan to its end; write and return the summary."""
    run_steps(loaded, state, _train_step(loaded, state), on_step)
    registered = _register_best(loaded, state)
    state.status = "finished"
    summary = write_summary(loaded, state, registered)
    state.save()
    _audit("autopilot.finish", state.folder, {"stopped": state.stopped, "runs": summary["runs"],
                                              "best": (summary["best"] or {}).get("run"), "registered": registered})
    return summary


def _train_step(loaded: LoadedGoal, state: AutopilotState) -> Callable[[Step], Path]:
    def train_step(step: Step) -> Path:
        config = load_config(loaded.base_path, step.overrides)
        config.output.dir = str(state.folder / "runs")
        config.output.name = f"step-{step.number:02d}"
        origin = {"autopilot": state.folder.name, "step": step.number, "source": step.source,
                  "parent": step.parent, "reason": step.reason}
        return train(config, origin=origin).run.path

    return train_step


def _register_best(loaded: LoadedGoal, state: AutopilotState) -> str | None:
    """The best run as a candidate version, inside a workspace that recorded it; never promoted."""
    from tunelab.workspace import registry

    best, _ = best_step(loaded, state)
    ws = Workspace.find()
    if best is None or ws is None or best.run_id is None:
        return None
    name = loaded.goal.register_as or load_config(loaded.base_path, loaded.goal.overrides).output.name or loaded.name
    try:
        version = registry.register(ws, best.run_id, name, note=f"autopilot {state.folder.name}, step {best.number}")
    except TunelabError as err:
        log.warning("the best run was not registered: %s", err)
        return None
    finally:
        ws.close()
    return f"{name}@v{version.version}"


def _audit(action: str, folder: Path, details: dict[str, Any]) -> None:
    ws = Workspace.find()
    if ws is None:
        return
    try:
        with ws.write() as txn:
            txn.audit(action, "autopilot", folder.name, details)
    finally:
        ws.close()


# ---- the server's autopilots (REST and MCP) ------------------------------------------------------
def plan_submitted(ws: Workspace, goal_text: str, config_text: str, policy: Any) -> AutopilotState:
    """Plan a goal submitted as text with its base config as text, under the workspace's
    `.tunelab/autopilots/`. The base config, and every value each knob may take, must pass the job
    confinement `policy` now: an autopilot job may read no more than the jobs its steps would be."""
    import secrets

    from tunelab.config.load import parse_yaml_text
    from tunelab.workspace.confine import check_job_config
    from tunelab.workspace.jobs import validate_submission

    raw = parse_yaml_text(goal_text, "submitted goal")
    if not isinstance(raw, dict):
        raise TunelabError("submitted goal: a goal is a mapping (target, budget, knobs)")
    raw = {**raw, "base": "base.yaml", "output": str(autopilots_root(ws))}
    overrides = [str(o) for o in raw.get("overrides") or []]
    validate_submission(config_text, overrides, policy)
    inputs = autopilots_root(ws) / "inputs" / secrets.token_hex(6)
    inputs.mkdir(parents=True)
    try:
        (inputs / "base.yaml").write_text(config_text, encoding="utf-8")
        goal = inputs / "goal.yaml"
        goal.write_text(_yaml_dump(raw), encoding="utf-8")
        loaded = load_goal(goal)  # every problem as the CLI says it
        for param in loaded.knobs.params:
            for probe in param.probes():
                check_job_config(load_config(loaded.base_path, overrides + param.overrides(probe)), policy)
        return plan(goal, autopilots_root(ws))[1]
    except BaseException:
        shutil.rmtree(inputs, ignore_errors=True)  # a refused goal leaves nothing behind
        raise


def autopilots_root(ws: Workspace) -> Path:
    return ws.folder / "autopilots"


def autopilot_folder(ws: Workspace, autopilot_id: str) -> Path:
    """The folder of a server autopilot by id (its folder name); a RunError when there is none."""
    from tunelab.errors import RunError

    folder = autopilots_root(ws) / autopilot_id
    if "/" in autopilot_id or autopilot_id.startswith(".") or not (folder / "state.json").is_file():
        raise RunError(f"no autopilot {autopilot_id!r}", fix="list them with GET /v1/autopilots")
    return folder


def describe(folder: Path) -> dict[str, Any]:
    """An autopilot as the API and MCP show it: status, plan, compact steps, summary once finished."""
    state = AutopilotState.load(folder)
    plan_data = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    summary = read_json_object(folder / "summary.json")  # written when it finishes
    return {"id": folder.name, "status": state.status, "approved_by": state.approved_by, "stopped": state.stopped,
            "created": state.created, "plan": plan_data,
            "steps": [{"step": s.number, "source": s.source, "status": s.status, "overrides": s.overrides,
                       "value": s.value, "reached": s.reached, "run": s.run_id, "seconds": s.seconds,
                       "reason": s.reason} for s in state.steps],
            "best": (summary or {}).get("best")}


def _yaml_dump(raw: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(raw, sort_keys=False)
