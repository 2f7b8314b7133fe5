"""`tunelab sweep`: hyperparameter sweeps with Optuna (default) or Ray Tune, and the `layers` preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunelab.cli.app import app, console, out

STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red"}


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="YAML config the trials start from.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides for every trial.")] = None,
    space: Annotated[Path | None, typer.Option("--space", help="Search space: dotted key -> {type: float|int|"
                                                   "categorical, low, high, log, step, choices}.")] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Trials to run (a preset runs its whole grid "
                                                   "unless this is smaller).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="optuna (one trial at a time) or ray (parallel, "
                                          "--trial-cpus / --trial-gpus per trial).")] = "optuna",
    preset: Annotated[str | None, typer.Option("--preset", help="Built-in sweep instead of --space: layers "
                                                   "(freeze train_last 0..N and LoRA r 4/8/16).")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Sweep folder; default "
                                                    "sweeps/<config-name>-<timestamp>/.")] = None,
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster to use; default: "
                                                        "start a local instance.")] = None,
    trial_cpus: Annotated[int, typer.Option("--trial-cpus", min=1, help="ray: CPUs (torch threads) per trial.")] = 1,
    trial_gpus: Annotated[float, typer.Option("--trial-gpus", min=0, help="ray: GPUs per trial (fractions share "
                                              "one).")] = 0.0,
    ray_storage: Annotated[str | None, typer.Option("--ray-storage", help="ray: where Tune keeps experiment state "
                                                    "(a shared path or s3:// on a cluster); default: the sweep "
                                                    "folder.")] = None,
    tolerance: Annotated[float, typer.Option(help="layers preset: recommend the fewest trainable parameters "
                                             "within this (absolute) distance of the best metric.")] = 0.01,
) -> None:
    """Search hyperparameters; writes trials.jsonl, best.yaml, sweep.json and plots into the sweep folder."""
    from tunelab.recipes.sweep import require_best
    from tunelab.recipes.sweep import sweep as run_sweep

    outcome = run_sweep(config, overrides or [], space=space, preset=preset, trials=trials, backend=backend,
                        out=out_dir, seed=seed, ray_address=ray_address, trial_cpus=trial_cpus, trial_gpus=trial_gpus,
                        ray_storage=ray_storage, tolerance=tolerance, on_trial=_progress)
    summary = outcome.summary
    target = out if out.is_terminal else Console(width=250)  # piped: keep the table's natural width
    target.print(_table(outcome.records, summary))
    if summary.get("importance_note"):
        console.print(f"[dim]{escape(summary['importance_note'])}[/]")
    require_best(outcome)
    best = summary["best"]
    params = ", ".join(f"{k}={v}" for k, v in best["params"].items())
    out.print(f"best: trial {best['number']}, {summary['metric']} {best['value']:.4f} with {escape(params)}",
              highlight=False, soft_wrap=True)
    if summary.get("recommendation_text"):
        out.print(f"recommended: {escape(summary['recommendation_text'])}", highlight=False, soft_wrap=True)
    out.print(f"train it: tunelab train {summary['best_config']}", highlight=False, soft_wrap=True)
    out.print(f"[dim]sweep folder: {escape(str(outcome.sweep_dir))}[/]", soft_wrap=True)


def _progress(record: Any) -> None:
    value = f" {record.value:.4f}" if record.value is not None else ""
    if record.state == "PRUNED" and record.intermediate:
        step, last = record.intermediate[-1]
        value = f" at step {step:g} ({last:.4f})"
    why = f": {record.error}" if record.error else ""
    console.print(f"trial {record.number:3d} [{STATE_STYLE[record.state]}]{record.state}[/]{value}"
                  f" ({record.seconds or 0:.1f}s){escape(why)}", highlight=False, soft_wrap=True)


def _table(records: list[Any], summary: dict[str, Any]) -> Table:
    """Trials best-first: state, objective, each parameter, trainable parameters, time."""
    from tunelab.sweep.results import ranked

    keys = list(dict.fromkeys(k for r in records for k in r.params))
    table = Table(title=f"{summary['metric']} ({summary['direction']}), {summary['backend']}", show_edge=False)
    for column in ("#", "state", summary["metric"], *keys, "trainable", "seconds"):
        table.add_column(column, justify="left" if column in ("state", *keys) else "right", no_wrap=True)
    for r in ranked(records, summary["direction"] == "maximize"):
        table.add_row(str(r.number), f"[{STATE_STYLE[r.state]}]{r.state}[/]",
                      "" if r.value is None else f"{r.value:.4f}",
                      *(escape(_fmt(r.params.get(k))) for k in keys),
                      "" if r.trainable_params is None else f"{r.trainable_params:,}",
                      "" if r.seconds is None else f"{r.seconds:.1f}")
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
