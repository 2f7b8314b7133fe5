"""`tunelab autopilot`: toward a goal by plan, approval, and one experiment at a time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tunelab.cli.app import app, console, out
from tunelab.errors import TunelabError


@app.command()
def autopilot(
    goal: Annotated[Path | None, typer.Argument(help="Goal file: base config, target, budget, knobs.")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue the autopilot in this folder "
                                                "(finished runs are kept, not re-run).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Approve the plan without asking.")] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for autopilot folders; default the "
                                                 "goal's output (autopilots/).")] = None,
) -> None:
    """Plan experiments toward a target (e.g. macro_f1 >= 0.90 with forgetting <= 2%) within a budget,
    wait for approval, then train one at a time: the plan, each run's diagnosis, a search over the knobs.
    Writes summary.md/json and registers the best run as a candidate (never promotes)."""
    from tunelab.recipes import autopilot as recipe

    if (goal is None) == (resume is None):
        raise TunelabError("give a goal file or --resume FOLDER (one of them)",
                           fix="tunelab autopilot goal.yaml, or tunelab autopilot --resume autopilots/<name>-<time>")
    if goal is not None:
        loaded, state = recipe.plan(goal, out_dir)
        console.print(f"[dim]plan written: {state.folder / 'plan.md'}[/]")
    else:
        loaded, state = recipe.resume(resume)  # type: ignore[arg-type]
    if state.status == "planned":
        out.print((state.folder / "plan.md").read_text(encoding="utf-8"), highlight=False, soft_wrap=True)
        if not yes and not sys.stdin.isatty():
            raise TunelabError(f"the plan in {state.folder} waits for approval",
                               fix=f"approve it: tunelab autopilot --resume {state.folder} --yes")
        recipe.decide(state, yes or typer.confirm("Run this plan?", default=False))
    if state.status == "rejected":
        console.print(f"plan rejected; nothing ran ({state.folder})")
        return
    if state.status == "finished":
        console.print(f"this autopilot has finished: {state.stopped}")
        out.print(str(state.folder / "summary.md"), highlight=False, soft_wrap=True)
        return

    def progress(step) -> None:  # noqa: ANN001 - autopilot.state.Step
        value = "" if step.value is None else f"{loaded.goal.target.metric} {step.value:.4f}"
        mark = " [green]target reached[/]" if step.reached else ""
        console.print(f"step {step.number} ({step.source}) {step.status} {value}{mark} "
                      f"[dim]{step.seconds or 0:.0f} s — {escape(step.reason[:160])}[/]")

    summary = recipe.run(loaded, state, progress)
    best = summary["best"]
    console.print(f"stopped: {summary['stopped']}")
    if best:
        registered = f"; registered as {best['registered']} (candidate)" if best["registered"] else ""
        out.print(f"best: step {best['step']} ({best['run']}): {escape(best['why'])}{registered}",
                  highlight=False, soft_wrap=True)
    out.print(str(state.folder / "summary.md"), highlight=False, soft_wrap=True)
