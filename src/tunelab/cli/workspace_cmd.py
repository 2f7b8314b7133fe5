"""`tunelab init`, `tunelab runs`, `tunelab reproduce` and `tunelab audit`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tunelab.cli.app import app, audit_app, console, out, runs_app
from tunelab.errors import GATE_FAILED



@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Project folder to hold the workspace.")] = Path("."),
    database: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL (default: SQLite in .tunelab/). A password is not stored: give it through "
        "TUNELAB_DATABASE_URL, PGPASSWORD or ~/.pgpass.")] = None,
    datasets: Annotated[str, typer.Option(help="copy: data add copies the bytes in; reference: keeps paths.")] = "copy",
) -> None:
    """Create (or migrate) a workspace: database, schema migrations, artifact folder."""
    from tunelab.errors import ConfigError
    from tunelab.workspace import Workspace
    from tunelab.workspace.db import safe_url

    if datasets not in ("copy", "reference"):
        raise ConfigError(f"--datasets {datasets!r} is not supported", fix="use copy or reference")
    folder.mkdir(parents=True, exist_ok=True)
    ws = Workspace.init(folder, database_url=database, datasets=datasets)  # type: ignore[arg-type]
    with ws.write() as txn:
        txn.audit("workspace.init", "workspace", str(ws.root), {"database": safe_url(ws.database_url),
                                                               "datasets": ws.settings.datasets})
    console.print(f"workspace: {ws.root} (database {safe_url(ws.database_url)}, datasets: {ws.settings.datasets})")


# ---- runs -----------------------------------------------------------------------------------
@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    limit: Annotated[int, typer.Option(help="Newest N runs.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Runs recorded in this workspace, newest first."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.lineage import recent_runs

    ws = Workspace.require()
    table = Table(show_edge=False)
    for column in ("run", "status", "task", "model", "data", "config", "started", "gates"):
        table.add_column(column, overflow="fold")
    with ws.read() as session:
        for run in recent_runs(session, status=status, limit=limit):
            data = ", ".join(i.dataset_version.ref if i.dataset_version else Path(i.path).name for i in run.inputs)
            gates = "" if run.gates is None else ("pass" if run.gates.get("passed") else "FAIL")
            if as_json:
                out.print(json.dumps({"id": run.id, "status": run.status, "task": run.task,
                                      "model": _model_of(run.config_yaml), "data": data, "config_sha256":
                                      run.config_sha256, "started_at": run.started_at, "gates": gates or None}),
                          highlight=False, soft_wrap=True)
                continue
            table.add_row(run.id, run.status, run.task, escape(_model_of(run.config_yaml)), escape(data),
                          run.config_sha256[:12], run.started_at, gates)
    if not as_json:
        out.print(table)


def _model_of(config_yaml: str) -> str:
    import yaml

    return str((yaml.safe_load(config_yaml) or {}).get("model", {}).get("source", ""))


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id (or a unique prefix, or its folder).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record as JSON.")] = False,
) -> None:
    """A run's lineage: inputs with hashes, config hash, code, environment, outcome, artifacts."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.lineage import get_run, run_dict

    ws = Workspace.require()
    with ws.read() as session:
        record = run_dict(get_run(session, run))
    if as_json:
        out.print_json(json.dumps(record))
        return
    _print_run(record)


def _print_run(record: dict[str, Any]) -> None:
    lines = [
        f"[bold]{record['id']}[/]  {record['status']}  ({record['task']})",
        f"folder       {record['path']}",
        f"started      {record['started_at']}   ended {record['ended_at'] or '-'}   by {record['created_by']}",
        f"config       sha256 {record['config_sha256']}",
        f"code         tunelab {record['tunelab_version']}  git {record['git_commit'] or '-'}",
        f"seed         {record['seed']}",
        f"environment  {record['environment_summary']}",
    ]
    if record.get("reproduces"):
        lines.append(f"reproduces   {record['reproduces']}")
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)
    out.print("[bold]inputs[/]")
    for item in record["inputs"]:
        named = item["dataset"] and not item["path"].startswith(item["dataset"])
        ref = f" = {item['dataset']}" if named else ""
        out.print(f"  {item['split']:<11} {escape(item['path'])}{escape(ref)}  sha256 {item['sha256'][:16]}…",
                  highlight=False, soft_wrap=True)
    check = record.get("data_check")
    if check is not None:
        out.print(f"[bold]data check[/] {'passed' if check['passed'] else 'FAILED'}, PII findings: {check['pii']}")
    if record.get("metrics"):
        out.print("[bold]metrics[/]")
        for section in ("validation", "test"):
            values = record["metrics"].get(section) or {}
            shown = ", ".join(f"{k} {v:.4f}" for k, v in values.items() if isinstance(v, float))
            if shown:
                out.print(f"  {section:<11} {shown}", highlight=False, soft_wrap=True)
    if record.get("gates"):
        for check in record["gates"].get("checks", []):
            out.print(f"  gate {'passed' if check['passed'] else '[red]failed[/]'}: {escape(check['message'])}",
                      soft_wrap=True)
    out.print(f"[bold]artifacts[/] {len(record['artifacts'])} file(s)")
    width = max((len(item["path"]) for item in record["artifacts"][:20]), default=0)
    for item in record["artifacts"][:20]:
        out.print(f"  {escape(item['path']):<{width}}  {item['bytes']:>12,} B  sha256 {item['sha256'][:16]}…",
                  highlight=False)
    if len(record["artifacts"]) > 20:
        out.print(f"  ... {len(record['artifacts']) - 20} more (--json lists all)")


@app.command()
def reproduce(
    run: Annotated[str, typer.Argument(help="Run id (or a unique prefix, or its folder).")],
    output_dir: Annotated[str | None, typer.Option("--output-dir", help="Where the new run folder goes.")] = None,
) -> None:
    """Re-run from the recorded inputs and report, per metric, whether the result matches."""
    from tunelab.recipes.reproduce import reproduce as run_reproduce

    result = run_reproduce(run, output_dir=output_dir)
    table = Table(title=f"{result.original} → {result.new_run.name}", show_edge=False)
    for column in ("metric", "original", "reproduced", "match"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in result.metrics:
        table.add_row(row["name"], _num(row["original"]), _num(row["reproduced"]),
                      "[green]exact[/]" if row["match"] else "[red]differs[/]")
    out.print(table)
    same = sum(a["match"] for a in result.artifacts)
    out.print(f"model files: {same}/{len(result.artifacts)} identical (sha256)")
    for item in result.artifacts:
        if not item["match"]:
            out.print(f"  [red]differs:[/] {escape(item['path'])}", highlight=False)
    for line in result.environment:
        out.print(f"[yellow]environment differs:[/] {escape(line)}", soft_wrap=True)
    if not result.matches:
        console.print("[bold red]not reproduced exactly[/]")
        raise typer.Exit(GATE_FAILED)
    console.print("[green]reproduced exactly[/]")


def _num(value: Any) -> str:
    return "-" if value is None else (f"{value:.6g}" if isinstance(value, float) else str(value))


# ---- audit ----------------------------------------------------------------------------------
@audit_app.command("log")
def audit_log(
    action: Annotated[str | None, typer.Option(help="Action, e.g. data.add; 'registry.*' matches a prefix.")] = None,
    actor: Annotated[str | None, typer.Option(help="Actor, e.g. os:alice or token:ci-bot.")] = None,
    obj: Annotated[str | None, typer.Option("--object", help="Object id contains this text.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time or date, e.g. 2026-11-01.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time or date.")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the newest N entries.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show audit entries, oldest first, filtered."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.audit import entry_dict, query

    ws = Workspace.require()
    with ws.read() as session:
        entries = [entry_dict(e) for e in query(session, action=action, actor=actor, object_id=obj, since=since,
                                                until=_end_of_day(until), limit=limit)]
    if as_json:
        for entry in entries:
            out.print(json.dumps(entry, ensure_ascii=False), highlight=False, soft_wrap=True)
        return
    table = Table(show_edge=False)
    for column in ("#", "time", "actor", "action", "object", "details"):
        table.add_column(column, overflow="fold")
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e["details"].items() if v not in (None, [], {}))
        table.add_row(str(e["seq"]), e["ts"], escape(e["actor"]), e["action"], escape(e["object_id"]),
                      escape(details[:160]))
    out.print(table)


def _end_of_day(until: str | None) -> str | None:
    # A bare date means "through that day": ISO timestamps of that day sort after the date itself.
    return f"{until}T23:59:59+99:99" if until and len(until) == 10 else until


@app.command("verify")
def verify_cmd(
    target: Annotated[str | None, typer.Argument(help="RUN (id or folder), NAME@vN or MODEL@vN.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every live dataset version and succeeded run.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Re-hash recorded bytes against lineage: a run's artifacts and inputs, a dataset version (exit 3 on any difference)."""
    from tunelab.recipes.verify import verify

    report = verify(target, every=all_)
    bad = {subject: found for subject, found in report.items() if found}
    if as_json:
        out.print_json(json.dumps({"ok": not bad, "checked": len(report), "findings": bad}))
    else:
        for subject, found in bad.items():
            for problem in found:
                out.print(f"[bold red]mismatch:[/] {subject}: {escape(problem)}", soft_wrap=True)
        if not bad:
            out.print(f"intact: {len(report)} checked ({', '.join(list(report)[:5])}"
                      f"{', …' if len(report) > 5 else ''})", highlight=False)
    if bad:
        raise typer.Exit(GATE_FAILED)


@audit_app.command("verify")
def audit_verify(
    expect: Annotated[str | None, typer.Option(help="Head hash recorded elsewhere earlier; must still match.")] = None,
) -> None:
    """Recompute the hash chain; any edited, deleted or reordered entry is reported (exit 3)."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.audit import verify

    ws = Workspace.require()
    with ws.read() as session:
        result = verify(session, expect_head=expect, anchor_path=ws.anchor_path)
    for problem in result.problems:
        out.print(f"[bold red]tampered:[/] {problem}", soft_wrap=True)
    if not result.ok:
        raise typer.Exit(GATE_FAILED)
    if not ws.anchor_path.is_file():
        anchored = f"the anchor file {ws.anchor_path} is missing (deleted, or made before anchoring): the next write starts it"
    else:
        anchored = f"anchored in {ws.anchor_path}" + (f" ({result.unanchored} newest not yet)" if result.unanchored else "")
    out.print(f"audit log intact: {result.entries} entries, head {result.head}; {anchored}", highlight=False)
