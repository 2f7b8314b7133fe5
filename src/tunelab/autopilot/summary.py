"""summary.json and summary.md of an autopilot: what was tried and why, each run's metrics and
forgetting, the best run and why it won, and the time spent."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from tunelab.autopilot.goal import LoadedGoal
from tunelab.autopilot.state import AutopilotState, Step
from tunelab.runs.folder import atomic_write_text


def best_step(loaded: LoadedGoal, state: AutopilotState) -> tuple[Step | None, str]:
    """The winner and why: a run that reached the target (the best of those), else the best run whose
    forgetting stayed within the limit, else the best run."""
    target = loaded.goal.target
    done = [s for s in state.steps if s.status == "succeeded" and s.value is not None]
    if not done:
        return None, "no run succeeded"
    sign = 1 if target.greater_is_better else -1
    reached = [s for s in done if s.reached]
    if reached:
        best = max(reached, key=lambda s: sign * s.value)  # type: ignore[operator]
        return best, f"it reached the target ({target.describe()}) with {target.metric} {best.value:.4f}"
    kept = [s for s in done if target.max_forgetting is None
            or all(v <= target.max_forgetting for v in s.forgetting.values())]
    pool = kept or done
    best = max(pool, key=lambda s: sign * s.value)  # type: ignore[operator]
    within = " among the runs within the forgetting limit" if kept and len(kept) < len(done) else ""
    return best, (f"the target was not reached; it has the {'highest' if sign > 0 else 'lowest'} validation "
                  f"{target.metric} ({best.value:.4f}){within} of {len(done)} finished runs")


def write_summary(loaded: LoadedGoal, state: AutopilotState, registered: str | None) -> dict[str, Any]:
    best, why = best_step(loaded, state)
    summary = {
        "goal": str(loaded.path), "target": loaded.goal.target.describe(), "status": state.status,
        "stopped": state.stopped, "approved_by": state.approved_by, "elapsed_s": round(state.elapsed_s, 1),
        "training_s": round(sum(s.seconds or 0 for s in state.steps), 1),
        "runs": len([s for s in state.steps if s.status in ("succeeded", "failed")]),
        "best": None if best is None else {"step": best.number, "run": best.run_id, "value": best.value,
                                           "forgetting": best.forgetting, "overrides": best.overrides,
                                           "why": why, "registered": registered},
        "steps": [asdict(s) for s in state.steps],
    }
    atomic_write_text(state.folder / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    atomic_write_text(state.folder / "summary.md", _markdown(loaded, summary))
    return summary


def _markdown(loaded: LoadedGoal, summary: dict[str, Any]) -> str:
    metric = loaded.goal.target.metric
    lines = [f"# Autopilot: {loaded.name}", "", f"- target: {summary['target']}", f"- stopped: {summary['stopped']}",
             f"- runs: {summary['runs']}, time: {summary['elapsed_s'] / 60:.1f} min "
             f"({summary['training_s'] / 60:.1f} min in the runs)", ""]
    best = summary["best"]
    if best:
        lines += [f"**Best: step {best['step']}, run `{best['run']}`** — {best['why']}."]
        if best["registered"]:
            lines += [f"Registered as `{best['registered']}` (candidate; promotion goes through its gates and a "
                      "person)."]
        lines += [""]
    lines += [f"| step | source | {metric} | forgetting | seconds | overrides | why |", "|---|---|---|---|---|---|---|"]
    for step in summary["steps"]:
        value = "" if step["value"] is None else f"{step['value']:.4f}" + (" ✔" if step["reached"] else "")
        lost = ", ".join(f"{k} {100 * v:.1f}%" for k, v in step["forgetting"].items()) or "–"
        shown = value if step["status"] == "succeeded" else f"{step['status']}" + (
            f": {step['error']}" if step.get("error") else "")
        overrides = " ".join(f"`{o}`" for o in step["overrides"]) or "(base)"
        lines.append(f"| {step['number']} | {step['source']} | {shown} | {lost} | {step['seconds'] or ''} | "
                     f"{overrides} | {step['reason'].replace('|', '/')} |")
    return "\n".join(lines) + "\n"
