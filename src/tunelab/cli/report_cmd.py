"""`tunelab report` and `tunelab compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunelab.cli.app import app, console, out

DASH = "\u2013"  # en dash: no value


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/<id>).")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write into; default runs/<id>/report/.")] = None,
) -> None:
    """Write one self-contained HTML report of a run (curves, base vs tuned, retention, gates, errors)."""
    from tunelab.recipes.report import write_report

    page = write_report(run, out_dir)
    out.print(str(page), highlight=False, soft_wrap=True)


@app.command()
def diagnose(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/<id>).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print diagnosis.json instead of the text.")] = False,
) -> None:
    """What went wrong or could be better in a run (overfitting, divergence, forgetting, data problems),
    the numbers it rests on, and the next experiment as overrides; writes runs/<id>/diagnosis.json."""
    import json

    from tunelab.recipes.diagnose import diagnose_run

    result = diagnose_run(run)
    if as_json:
        out.print_json(json.dumps(result))
        return
    _print_diagnosis(result, run)


SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def _print_diagnosis(result: dict[str, Any], run: Path) -> None:
    findings = result["findings"]
    if not findings:
        out.print(f"[green]no findings[/]: {escape(result['run'])} looks healthy", highlight=False)
        return
    for finding in findings:
        style = SEVERITY_STYLE[finding["severity"]]
        out.print(f"[{style}]{finding['severity']}[/] [bold]{finding['id']}[/]: {escape(finding['summary'])}",
                  highlight=False, soft_wrap=True)
        for item in finding["evidence"]:
            out.print(f"  [dim]{escape(item['what'])}: {escape(str(item['value']))} ({item['file']})[/]",
                      highlight=False, soft_wrap=True)
        proposal = finding.get("proposal")
        if proposal and proposal["overrides"]:
            command = f"tunelab train {run / 'config.yaml'} {' '.join(proposal['overrides'])}"
            out.print(f"  try: [bold]{escape(command)}[/]", highlight=False, soft_wrap=True)
        if proposal:
            out.print(f"  why: {escape(proposal['reason'])}", highlight=False, soft_wrap=True)
    console.print(f"[dim]written: {run / 'diagnosis.json'}[/]")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run folders.")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Folder to write into; default comparisons/compare-<timestamp>/.")] = None,
    metric: Annotated[str | None, typer.Option(
        help="Metric to compare; default: the first run's eval.metric.")] = None,
) -> None:
    """Compare runs side by side; writes curves.png, config_diff.txt and summary.json."""
    from tunelab.recipes.compare import compare_runs

    result = compare_runs(list(runs), out_dir, metric)
    # Piped into a file the table keeps its natural width instead of being folded into 80 columns.
    (out if out.is_terminal else Console(width=250)).print(_table(result.metric, result.rows))
    for key, values in result.differing[:12]:
        out.print(f"[dim]{escape(key)}:[/] {escape(' | '.join(values))}", highlight=False, soft_wrap=True)
    if len(result.differing) > 12:
        out.print(f"[dim]... {len(result.differing) - 12} more differing keys in config_diff.txt[/]")
    console.print(f"[dim]written: {result.folder}[/]")


def _table(metric: str, rows: list[dict[str, Any]]) -> Table:
    from tunelab.report import display as fmt

    table = Table(show_edge=False, title=f"val/test: {metric}")
    for column in ("run", "task", "model", "method", "status", "val", "test", "test loss", "gates", "train time",
                   "trainable"):
        numeric = column in ("val", "test", "test loss", "train time", "trainable")
        # the run id is what a reader looks up later: never broken across lines
        table.add_column(column, justify="right" if numeric else "left", overflow="fold",
                         no_wrap=column == "run" or numeric)
    for row in rows:
        own = "" if row["metric"] == metric else f" ({row['metric']})"  # a run that lacks the compared metric
        table.add_row(
            escape(row["run"]), escape(str(row["task"] or DASH)), escape(str(row["model"] or DASH)),
            escape(row["method"]),
            _status(row["status"]), _value(row["validation"], own), _value(row["test"], own),
            fmt.number(row["test_loss"]), _gates(row["gates"]), fmt.duration(row["train_seconds"]),
            _trainable(row["trainable_params"], row["total_params"]),
        )
    return table


def _value(value: Any, own: str) -> str:
    from tunelab.report import display as fmt

    return DASH if value is None else fmt.number(value) + own


def _status(status: str | None) -> str:
    color = {"succeeded": "green", "failed": "red", "running": "yellow"}.get(status or "", "")
    return f"[{color}]{status}[/]" if color else str(status or DASH)


def _gates(gates: str | None) -> str:
    return {"pass": "[green]pass[/]", "fail": "[bold red]fail[/]"}.get(gates or "", DASH)


def _trainable(trainable: Any, total: Any) -> str:
    if trainable is None:
        return DASH
    share = f" ({100 * trainable / total:.3g}%)" if total else ""
    return f"{trainable:,}{share}"
