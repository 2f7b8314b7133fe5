"""`tunelab registry`: register runs as model versions, promote them through gated stages, print cards.

Mounts itself on the app when cli/main.py imports it. Errors are TunelabErrors,
printed as one line by `main()`; a refused promotion exits with GATE_FAILED (3), like a run that
failed its evaluation gates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tunelab.cli.app import console, out, registry_app
from tunelab.errors import GATE_FAILED


DASH = "\u2013"


def _workspace() -> Any:
    from tunelab.workspace import Workspace

    ws = Workspace.require()
    ws.check_schema()
    return ws


@registry_app.command("add")
def add(
    run: Annotated[str, typer.Argument(help="Run id or run folder (recorded in this workspace, succeeded).")],
    name: Annotated[str, typer.Option("--name", help="Model name; created on first use.")],
    note: Annotated[str | None, typer.Option("--note", help="Why this version was registered.")] = None,
) -> None:
    """Register a succeeded run as the next version of NAME (stage candidate) and write its model card."""
    from tunelab.workspace.registry import register

    version = register(_workspace(), run, name, note=note)
    out.print(f"registered: {escape(version.ref)} (candidate) from run {escape(version.run_id)}",
              highlight=False, soft_wrap=True)
    console.print(f"[dim]card: {escape(str(version.card_path))}[/]", soft_wrap=True)


@registry_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List registered models and which versions are in staging and production."""
    from tunelab.workspace.registry import list_models

    models = list_models(_workspace())
    if as_json:
        out.print_json(json.dumps(models))
        return
    if not models:
        console.print("no models registered yet: tunelab registry add RUN --name NAME")
        return
    table = Table(show_edge=False)
    for column in ("name", "versions", "latest", "staging", "production", "created"):
        table.add_column(column, no_wrap=column == "name")
    for m in models:
        table.add_row(escape(m["name"]), str(m["versions"]), _v(m["latest"]),
                      ", ".join(_v(n) for n in m["staging"]) or DASH, _v(m["production"]), m["created_at"])
    out.print(table)


@registry_app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="NAME (all versions) or NAME@vN / @latest / @production.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a model's versions, or one version's lineage and stage history."""
    from tunelab.workspace.registry import show as show_ref

    info = show_ref(_workspace(), ref)
    if as_json:
        out.print_json(json.dumps(info))
    elif "ref" in info:
        _print_version(info)
    else:
        _print_model(info)


def _print_model(info: dict[str, Any]) -> None:
    table = Table(title=escape(info["name"]), show_edge=False)
    for column in ("version", "stage", "run", "registered", "by"):
        table.add_column(column, no_wrap=column in ("version", "run"))
    for v in info["versions"]:
        table.add_row(_v(v["version"]), v["stage"], escape(v["run"]), v["created_at"], escape(v["created_by"]))
    out.print(table)


def _print_version(info: dict[str, Any]) -> None:
    fields = [("stage", info["stage"]), ("run", info["run"]), ("run folder", info["run_path"]),
              ("task", info["task"]), ("config sha256", info["config_sha256"]),
              ("gates passed", info["gates_passed"]), ("data check passed", info["data_check_passed"]),
              ("PII findings", info["pii_count"]), ("card", info["card_path"]),
              ("started from", " <- ".join(info["started_from"]) or None)]
    out.print(f"[bold]{escape(info['ref'])}[/]", highlight=False)
    for key, value in fields:
        out.print(f"  {key}: {escape(DASH if value is None else str(value))}", highlight=False, soft_wrap=True)
    for item in info["inputs"]:
        source = item["dataset"] or item["path"]
        out.print(f"  data {item['split']}: {escape(source)} ({item['sha256'][:12]})", highlight=False,
                  soft_wrap=True)
    table = Table(title="history", show_edge=False)
    for column in ("when", "change", "outcome", "by", "reason"):
        table.add_column(column)
    for h in info["history"]:
        change = f"registered as {h['to']}" if h["from"] is None else f"{h['from']} -> {h['to']}"
        outcome = "[green]accepted[/]" if h["passed"] else "[bold red]refused[/]"
        table.add_row(h["created_at"], change, outcome, escape(h["created_by"]), escape(h["reason"] or ""))
    out.print(table)


@registry_app.command("promote")
def promote(
    ref: Annotated[str, typer.Argument(help="NAME@vN (or @latest, @staging, ...).")],
    to: Annotated[str, typer.Option("--to", help="staging, production or archived.")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why; kept in the history and audit log.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="YAML with PromotionPolicy keys (min_metrics, "
                                                "max_metrics, max_forgetting, require_*) instead of the run's "
                                                "governance.promotion.")] = None,
) -> None:
    """Move a version to another stage; staging and production must pass the promotion policy (exit 3 if not)."""
    from tunelab.workspace.registry import load_policy
    from tunelab.workspace.registry import promote as run_promote

    override = load_policy(policy) if policy is not None else None
    result = run_promote(_workspace(), ref, to, reason=reason, policy_override=override)
    if not result.passed:
        out.print(f"[bold red]refused:[/] {escape(result.ref)} -> {result.to_stage}", highlight=False, soft_wrap=True)
        for check in result.failed:
            out.print(f"  gate failed: {escape(check['message'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(GATE_FAILED)
    out.print(f"promoted: {escape(result.ref)} {result.from_stage} -> {result.to_stage}", highlight=False,
              soft_wrap=True)
    for check in result.checks:
        out.print(f"  [green]\u2713[/] {escape(check['message'])}", highlight=False, soft_wrap=True)
    for ref_ in result.archived:
        out.print(f"  archived: {escape(ref_)} (was production)", highlight=False, soft_wrap=True)


@registry_app.command("card")
def card(
    ref: Annotated[str, typer.Argument(help="NAME@vN (or @latest, @production, ...).")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the Markdown here instead of printing.")]
    = None,
) -> None:
    """Print (or write) a version's model card in Markdown, rendered from its current records."""
    from tunelab.runs.folder import atomic_write_text
    from tunelab.workspace.registry import render

    text = render(_workspace(), ref)
    if out_file is None:
        out.print(text, end="", highlight=False, markup=False, soft_wrap=True)
        return
    atomic_write_text(out_file, text)
    console.print(f"written: {escape(str(out_file))}", highlight=False, soft_wrap=True)


@registry_app.command("delete")
def delete(ref: Annotated[str, typer.Argument(help="NAME@vN; a production version cannot be deleted.")]) -> None:
    """Remove a version (not production) and its card; the audit log keeps the record and its number."""
    from tunelab.workspace.registry import delete_version

    gone = delete_version(_workspace(), ref)
    out.print(f"deleted: {escape(gone)}", highlight=False, soft_wrap=True)


def _v(number: int | None) -> str:
    return DASH if number is None else f"v{number}"
