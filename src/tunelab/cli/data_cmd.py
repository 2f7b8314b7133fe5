"""`tunelab data add/list/show/diff/delete/check/example/preview`: dataset versions, data checks,
packaged example corpora and loss-mask previews."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tunelab.cli.app import console, data_app, out
from tunelab.errors import GATE_FAILED


@data_app.command("add")
def data_add(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. support-chats.")],
    path: Annotated[Path, typer.Argument(help="Data file or folder.")],
    reference: Annotated[bool | None, typer.Option(
        "--reference/--copy", help="Keep the path instead of copying the bytes (default: the workspace setting).",
        show_default=False)] = None,
    note: Annotated[str | None, typer.Option(help="What this version is.")] = None,
) -> None:
    """Register an immutable, content-addressed version of NAME (sha256 of the bytes)."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.datasets import add_version, count_rows

    ws = Workspace.require()
    ws.check_schema()
    storage = None if reference is None else ("reference" if reference else "copy")
    added = add_version(ws, name, path, storage=storage, note=note, rows=count_rows(path))
    version = added.version
    if added.created:
        out.print(f"{version.ref}  sha256 {version.sha256}  ({version.bytes:,} bytes, "
                  f"{'?' if version.rows is None else f'{version.rows:,}'} rows, {version.storage})", highlight=False,
                  soft_wrap=True)
    else:
        out.print(f"unchanged: these bytes are already {version.ref} (sha256 {version.sha256[:16]}…)", highlight=False,
                  soft_wrap=True)


@data_app.command("list")
def data_list(name: Annotated[str | None, typer.Argument(help="Only this dataset.")] = None) -> None:
    """Dataset versions in the workspace."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.datasets import list_versions

    table = Table(show_edge=False)
    for column in ("version", "sha256", "rows", "bytes", "storage", "created", "by", "note"):
        table.add_column(column, overflow="fold", justify="right" if column in ("rows", "bytes") else "left")
    for v in list_versions(Workspace.require(), name):
        note = escape(v["note"] or "")
        if v["deleted_at"]:  # a tombstone: the number stays taken, the bytes are gone
            note = f"[dim]deleted {v['deleted_at']} by {escape(v['deleted_by'] or '')}[/]" + (f"; {note}" if note else "")
        table.add_row(v["ref"], v["sha256"][:12], "" if v["rows"] is None else f"{v['rows']:,}", f"{v['bytes']:,}",
                      "deleted" if v["deleted_at"] else v["storage"], v["created_at"], escape(v["created_by"]), note)
    out.print(table)


@data_app.command("show")
def data_show(
    ref: Annotated[str, typer.Argument(help="NAME@v2, NAME@latest or NAME.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One version: hash, files, where it is kept, which runs used it."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.datasets import get_version, usage, version_dict

    ws = Workspace.require()
    with ws.read() as session:
        version = get_version(session, ref)
        record = version_dict(version) | usage(session, version)
    if as_json:
        out.print_json(json.dumps(record))
        return
    out.print(f"[bold]{record['ref']}[/]  sha256 {record['sha256']}", highlight=False)
    for key in ("kind", "storage", "location", "source", "rows", "bytes", "created_at", "created_by", "note",
                "parent"):
        if record.get(key) is not None:
            out.print(f"  {key:<11} {escape(str(record[key]))}", highlight=False)
    out.print(f"  files ({len(record['files'])}):")
    for f in record["files"][:20]:
        out.print(f"    {escape(f['path'])}  {f['bytes']:,} B  {f['sha256'][:12]}", highlight=False)
    out.print(f"  used by runs: {', '.join(record['runs']) or '-'}")
    out.print(f"  registered models: {', '.join(record['models']) or '-'}")


@data_app.command("diff")
def data_diff(
    first: Annotated[str, typer.Argument(help="NAME@v1")],
    second: Annotated[str, typer.Argument(help="NAME@v2")],
    key: Annotated[str | None, typer.Option(help="Column that identifies a row (default: 'id' when present).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rows added, removed and changed between two versions (and files, for folders)."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.diff import diff_versions

    result = diff_versions(Workspace.require(), first, second, key=key)
    if as_json:
        out.print(json.dumps(result, ensure_ascii=False, default=str), highlight=False, soft_wrap=True)
        return
    out.print(f"{result['from']} → {result['to']}" + ("  (identical bytes)" if result["same_bytes"] else ""))
    files = result["files"]
    for kind in ("added", "removed", "changed"):
        if files[kind]:
            out.print(f"  files {kind}: {escape(', '.join(files[kind]))}")
    for name, rows in result["rows"].items():
        keyed = f" by {rows['key']}" if rows["key"] else ""
        out.print(f"  [bold]{escape(name)}[/]{keyed}: {rows['rows_before']:,} → {rows['rows_after']:,} rows; "
                  f"[green]+{rows['added']}[/] added, [red]-{rows['removed']}[/] removed, "
                  f"[yellow]~{rows['changed']}[/] changed, {rows['unchanged']:,} unchanged")
        for example in rows["examples"]["changed"][:3]:
            out.print(f"    ~ {escape(_short(example['before']))}\n      → {escape(_short(example['after']))}",
                      highlight=False)
        for example in rows["examples"]["added"][:3]:
            out.print(f"    + {escape(_short(example))}", highlight=False)
        for example in rows["examples"]["removed"][:3]:
            out.print(f"    - {escape(_short(example))}", highlight=False)


def _short(row: Any, width: int = 110) -> str:
    text = json.dumps(row, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@data_app.command("delete")
def data_delete(ref: Annotated[str, typer.Argument(help="NAME@v2")]) -> None:
    """Delete a version's bytes; its number stays taken (refused while a registered model or a running run uses it)."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.datasets import delete_version

    deleted = delete_version(Workspace.require(), ref)
    out.print(f"deleted {deleted['ref']} (sha256 {deleted['sha256'][:16]}…)", highlight=False)


@data_app.command("check")
def data_check(
    target: Annotated[str, typer.Argument(help="A config YAML (checks its splits) or a dataset NAME[@vN].")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides for a config.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for data_check.json and .html.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Dataset targets: the label column (for balance).")] = None,
    tokenizer: Annotated[bool, typer.Option(help="Config targets: measure token lengths with the model's "
                                                 "tokenizer.")] = True,
) -> None:
    """Schema, empty rows, duplicates, leakage, labels, lengths, encoding and PII; JSON plus an HTML page.

    Exit status 3 when the check fails (errors), or when PII is found and governance.pii is block."""
    from tunelab.recipes.data_check import check_target

    result = check_target(target, overrides or [], out_dir=out_dir, label_column=label_column,
                          use_tokenizer=tokenizer)
    report = result.report
    for error in report.get("errors", []):
        out.print(f"[bold red]error:[/] {escape(error)}", soft_wrap=True)
    for warning in report.get("warnings", []):
        out.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    pii = report.get("pii") or {}
    if pii.get("count"):
        kinds = ", ".join(f"{k} {v}" for k, v in (pii.get("by_entity") or {}).items())
        out.print(f"[yellow]PII:[/] {pii['count']} finding(s) ({kinds})", soft_wrap=True)
        for finding in pii.get("findings", [])[:10]:
            out.print(f"  {escape(finding['where'])} ({escape(finding['field'])}: {finding['entity']}) "
                      f"{escape(finding['preview'])}", highlight=False, soft_wrap=True)
    verdict = "[green]passed[/]" if report.get("passed") else "[bold red]FAILED[/]"
    console.print(f"data check {verdict}: {result.folder / 'data_check.html'}")
    if result.refused:
        raise typer.Exit(GATE_FAILED)


@data_app.command("example")
def data_example(
    name: Annotated[str, typer.Argument(
        help="bbc-news, bbc-news-text, bbc-headlines, bbc-headline-pairs, bbc-headline-feedback, bbc-topic-prompts, "
        "chatterbot-en, chatterbot-pairs, chatterbot-faq, clinical-ner or mnist-digits (an unknown name lists them "
        "all)")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write train/validation/test jsonl into.")],
) -> None:
    """Materialize a packaged example corpus as jsonl files, with a README.md saying how it was made."""
    from tunelab.data.corpora import materialize  # the tunelab.data package loads datasets: not at start-up

    summary = materialize(name, out_dir)
    out.print(json.dumps(summary, indent=2))


@data_app.command("preview")
def data_preview(
    config: Annotated[Path, typer.Argument(help="YAML config of a causal-lm job.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides.")] = None,
    n: Annotated[int, typer.Option("-n", help="How many training samples to show.")] = 3,
) -> None:
    """Show training samples with the trained tokens highlighted, and the masking statistics."""
    from tunelab.config import load_config
    from tunelab.recipes.preview import preview

    samples, info = preview(load_config(config, overrides or []), n)
    for sample in samples:
        out.rule(f"[bold]{sample.where}[/]")
        text = Text()
        for piece, trained in sample.pieces:
            shown = piece.replace("\n", "↵\n")
            text.append(shown, style="bold black on green" if trained else "dim")
        out.print(text)
    out.rule()
    out.print("[bold black on green] trained [/] tokens carry loss; [dim]dim[/] ones are context only. "
              "truncated: samples longer than train.max_length; dropped: left with no trained token")
    _print_lm_stats(info)


def _print_lm_stats(info: dict) -> None:
    table = Table(show_edge=False, title="data")
    for column in ("split", "samples", "tokens", "trained", "truncated", "dropped", "p50/p95 length"):
        table.add_column(column, justify="right" if column != "split" else "left", no_wrap=True)
    for split, st in info["stats"].items():
        table.add_row(split, str(st["samples"]), f"{st['tokens']:,}", f"{100 * st['trained_fraction']:.1f}%",
                      f"{st['longer_than_max_length']} ({100 * st['truncation_rate']:.1f}%)",
                      str(st["dropped_untrainable"]), f"{st['length_p50']}/{st['length_p95']}")
    out.print(table)
    records = info["records"]["train"]
    template = info.get("template")
    line = f"records: {records['records']}"
    if records.get("skipped"):
        line += f" ({records['skipped']} malformed rows skipped)"
    if template:
        line += f"; template: {template['name']}, turns end with {template['end_of_turn']!r}"
        if template["added_tokens"]:
            line += f"; added tokens: {', '.join(template['added_tokens'])}"
    out.print(f"[dim]{line}[/]")
