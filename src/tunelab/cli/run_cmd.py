"""`tunelab train/eval/predict/generate/chat/export`: the commands of one run's life."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from tunelab.cli.app import STATE, app, console, out
from tunelab.errors import GATE_FAILED, TunelabError


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML config (omit with --resume).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides: train.learning_rate=3e-5")] = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this run folder from its last checkpoint.")] = None,
) -> None:
    """Fine-tune, evaluate and write runs/<id>/."""
    from tunelab.config import load_config
    from tunelab.logs import is_main_process
    from tunelab.recipes.train import train as run_train
    from tunelab.runs import RunFolder

    if resume is not None:
        # Rank 0 holds the run folder; a process on another machine needs only a copy of its config.yaml
        # (docs/scaling.md): it never reads or writes the folder.
        elsewhere = not is_main_process() and not (resume / "run.json").is_file() and (resume / "config.yaml").is_file()
        previous = RunFolder(resume) if elsewhere else RunFolder.open(resume)
        cfg = previous.config()
    elif config is None:
        raise TunelabError("no config given", fix="tunelab train CONFIG.yaml [key=value ...] or --resume RUN")
    else:
        cfg = load_config(config, overrides or [])
        previous = None
    reporter = None
    if not STATE["quiet"] and is_main_process():
        from tunelab.cli.progress import RichReporter

        reporter = RichReporter(console)
    outcome = run_train(cfg, resume=previous, reporter=reporter)
    if is_main_process():
        _print_results(outcome.run.path, outcome.results)
        _print_retention(outcome.results)
    gates = outcome.results.get("gates")
    if gates and not gates["passed"]:
        raise typer.Exit(GATE_FAILED)


def _print_results(run_path: Path, results: dict) -> None:
    splits = [s for s in ("validation", "test", "generation") if isinstance(results.get(s), dict)]
    names = [n for n in dict.fromkeys(k for s in splits for k in results[s]) if n not in HIDDEN_METRICS
             and all(isinstance(results[s].get(n, 0.0), (int, float)) for s in splits)]
    base = results.get("base") or {}
    trivial = base.get("kind") not in (None, "pretrained")  # a baseline, not the starting model
    base_label = base.get("label") or ("majority" if trivial else "base")
    rows: list[tuple[str, dict, str]] = []  # (label, metrics, style): each split after its baseline
    for split in splits:
        if split in base:
            rows.append((f"{split} ({base_label})", base[split], "dim"))
        rows.append((split, results[split], ""))
    table = Table(title=f"{run_path}", show_edge=False)
    wide = 20 + sum(max(len(n), 8) + 3 for n in names)  # a split column, then each metric's
    if wide <= out.width:  # one row per split
        table.add_column("split", no_wrap=True)
        for name in names:
            table.add_column(name, justify="right")
        for label, metrics, style in rows:
            table.add_row(label, *(_fmt_metric(metrics.get(n)) for n in names), style=style or None)
    else:  # too many metrics for the terminal (preference and RL runs): one row per metric, never cut
        table.add_column("metric", no_wrap=True)
        for label, _, style in rows:
            table.add_column(label, justify="right", style=style or None)
        for name in names:
            table.add_row(name, *(_fmt_metric(metrics.get(name)) for _, metrics, _ in rows))
    out.print(table)
    if trivial:
        out.print(f"[dim]{base['note']}[/]")
    if results.get("best_reason"):
        out.print(f"[dim]{results['best_reason']}; model saved with the {results['weights']} weights[/]")


def _print_retention(results: dict) -> None:
    """Retention sets (before, after, forgetting, gate), then gate failures and warnings."""
    retention = results.get("retention") or {}
    if retention:
        table = Table(title="retention (forgetting = relative loss of ability)", show_edge=False)
        for column in ("set", "metric", "before", "after", "forgetting", "limit", "gate"):
            table.add_column(column, justify="left" if column in ("set", "metric") else "right")
        for name, entry in retention.items():
            metric = entry["metric"]
            limit = "" if entry["limit"] is None else f"{100 * entry['limit']:.1f}%"
            gate = "" if entry["limit"] is None else ("[green]pass[/]" if entry["passed"] else "[bold red]FAIL[/]")
            table.add_row(name, metric, _fmt_metric(entry["before"][metric]), _fmt_metric(entry["after"][metric]),
                          f"{100 * entry['forgetting']:+.1f}%", limit, gate)
        out.print(table)
    for check in (results.get("gates") or {}).get("checks", []):
        if not check["passed"]:
            out.print(f"[bold red]gate failed:[/] {check['message']}", soft_wrap=True)
    for warning in results.get("warnings") or []:
        out.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)


HIDDEN_METRICS = {"tokens", "samples", "per_class", "confusion_matrix", "labels", "support", "queries",
                  "documents"}


def _fmt_metric(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


@app.command("eval")
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/<id>).")],
    data: Annotated[Path, typer.Option("--data", help="Held-out file or folder, same columns as training.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print metrics as JSON.")] = False,
) -> None:
    """Evaluate a trained run on new held-out data; writes runs/<id>/evals/<name>.json."""
    from tunelab.recipes.evaluate import evaluate_run

    metrics, written = evaluate_run(run, data)
    if as_json:
        out.print_json(json.dumps(metrics))
        return
    _print_results(run, {"test": metrics})
    out.print(f"[dim]written: {written}[/]")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run folder (runs/<id>).")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify; '-' reads one per line from stdin.")],
    top_k: Annotated[int, typer.Option(help="How many labels to show per text.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Predict with a trained run."""
    from tunelab.recipes.predict import predict_texts

    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    predictions = predict_texts(run, texts, top_k=top_k)
    if as_json:
        for item in predictions:
            out.print(json.dumps(item), soft_wrap=True)
        return
    if predictions and "entities" in predictions[0]:
        _print_entities(predictions)
        return
    if predictions and "embedding" in predictions[0]:
        _print_embeddings(predictions)
        return
    values = bool(predictions) and "values" in predictions[0]  # regression: numbers, not labels
    table = Table(show_edge=False)
    for column in ("text", "target", "value") if values else ("text", "label", "score"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for item in predictions:
        text = item["text"] if len(item["text"]) < 60 else item["text"][:57] + "..."
        pairs = list(item["values"].items()) if values else [(g["label"], g["score"]) for g in item["labels"]]
        for i, (name, number) in enumerate(pairs or [("(none)", None)]):  # multi-label: none may pass
            shown = "" if number is None else f"{number:.4g}" if values else f"{number:.3f}"
            table.add_row(text if i == 0 else "", name, shown)
    out.print(table)


@app.command()
def search(
    run: Annotated[Path, typer.Argument(help="Run folder of an embedding run.")],
    queries: Annotated[list[str], typer.Argument(help="Queries (image runs: image paths); '-' reads one per line "
                                                     "from stdin.")],
    corpus: Annotated[Path, typer.Option("--corpus", help="Documents to search: .jsonl/.csv/.parquet/.txt, or an "
                                                         "image folder for image runs.")],
    column: Annotated[str | None, typer.Option(help="The corpus column holding each document (default: text; "
                                                    "image for image runs).")] = None,
    top_k: Annotated[int, typer.Option(help="How many documents to show per query.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """The documents of a corpus nearest to each query (the corpus is indexed once, in the run folder)."""
    from tunelab.recipes.search import search as run_search

    if queries == ["-"]:
        queries = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    found = run_search(run, queries, corpus, column=column, top_k=top_k)
    if as_json:
        for item in found:
            out.print(json.dumps(item), soft_wrap=True)
        return
    for item in found:
        table = Table(title=item["query"], show_edge=False)
        for name in ("rank", "score", "document"):
            table.add_column(name, justify="right" if name != "document" else "left")
        for hit in item["results"]:
            table.add_row(str(hit["rank"]), f"{hit['score']:.3f}", hit["document"])
        out.print(table)


def _print_embeddings(predictions: list[dict]) -> None:
    """Embedding runs: each input's dimension, length and first values (--json prints the vectors)."""
    table = Table(show_edge=False, caption="--json prints the whole vectors")
    for column in ("input", "dimension", "norm", "first values"):
        table.add_column(column)
    for item in predictions:
        vector = item["embedding"]
        text = item["text"] if len(item["text"]) < 60 else item["text"][:57] + "..."
        norm = sum(v * v for v in vector) ** 0.5
        table.add_row(text, str(len(vector)), f"{norm:.3f}", " ".join(f"{v:+.3f}" for v in vector[:4]) + " ...")
    out.print(table)


def _print_entities(predictions: list[dict]) -> None:
    """Token classification: each text with its entities highlighted, then a span table."""
    for item in predictions:
        text, at = Text(), 0
        for entity in item["entities"]:
            text.append(item["text"][at : entity["start"]])
            text.append(item["text"][entity["start"] : entity["end"]], style="bold black on cyan")
            text.append(f" {entity['label']}", style="cyan")
            at = entity["end"]
        text.append(item["text"][at:])
        out.print(text)
        table = Table(show_edge=False)
        for column in ("entity", "label", "start", "end", "score"):
            table.add_column(column)
        for entity in item["entities"]:
            table.add_row(entity["text"], entity["label"], str(entity["start"]), str(entity["end"]),
                          f"{entity['score']:.3f}")
        if item["entities"]:
            out.print(table)


@app.command()
def generate(
    run: Annotated[Path, typer.Argument(help="Run folder of a causal-lm run.")],
    input: Annotated[Path, typer.Option("--input", help="jsonl: one {\"prompt\": ...} or {\"messages\": [...]} per line.")],
    output: Annotated[Path, typer.Option("--output", help="jsonl to write: each input row plus 'output'.")],
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens to generate at most.")] = None,
    sample: Annotated[bool | None, typer.Option("--sample/--greedy", help="Sample, or decode greedily.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
    top_k: Annotated[int | None, typer.Option(help="Sample among the k most likely tokens.")] = None,
    repetition_penalty: Annotated[float | None, typer.Option(help="Penalty for repeated tokens.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
) -> None:
    """Answer a file of prompts with a trained causal-lm run."""
    from tunelab.recipes.generate import generate_file, load_lm, settings

    lm = load_lm(run)
    cfg = settings(lm.config, max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature,
                   top_p=top_p, top_k=top_k, repetition_penalty=repetition_penalty, seed=seed)
    count = generate_file(lm, input, output, cfg, batch_size=batch_size)
    console.print(f"wrote {count} answers to {output}")


@app.command()
def chat(
    run: Annotated[Path, typer.Argument(help="Run folder of a causal-lm run.")],
    system: Annotated[str | None, typer.Option(help="System message (default: the run's lm.system_prompt).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens to generate at most.")] = None,
    sample: Annotated[bool | None, typer.Option("--sample/--greedy", help="Sample, or decode greedily.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
) -> None:
    """Talk to a trained causal-lm run (streamed answers; /reset clears the history, /exit quits)."""
    from tunelab.recipes.generate import load_lm, settings, stream_reply

    lm = load_lm(run)
    cfg = settings(lm.config, max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, top_p=top_p)
    conversational = lm.task.template is not None
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    console.print(f"[dim]{lm.run.path} ({'chat' if conversational else 'completion'}); /reset, /exit[/]")
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if line.strip() in ("/exit", "/quit"):
            break
        if line.strip() == "/reset":
            history = history[:1] if system else []
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        item = {"messages": history} if conversational else {"prompt": line}
        out.print("bot> ", end="")
        reply = ""
        for piece in stream_reply(lm, item, cfg):
            reply += piece
            out.print(piece, end="", highlight=False, markup=False)
        out.print()
        history.append({"role": "assistant", "content": reply.strip()})


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    format: Annotated[str, typer.Option("--format", help="merged (safetensors folder), adapter, gguf, onnx, or "
                                                        "index (embedding runs: a corpus's vectors).")] = "merged",
    out_path: Annotated[Path | None, typer.Option("--out", help="Where to write; default runs/<id>/exports/.")] = None,
    dtype: Annotated[str, typer.Option(help="GGUF tensor type: f16 or f32.")] = "f16",
    corpus: Annotated[Path | None, typer.Option("--corpus", help="--format index: the documents (a table, or an "
                                                                 "image folder) to embed.")] = None,
    column: Annotated[str | None, typer.Option(help="--format index: the corpus column (default text / image).")]
    = None,
) -> None:
    """Export a trained run: merged safetensors (default), the adapter alone, GGUF (Llama-family causal
    LMs), ONNX (classifiers, verified in onnxruntime) or an embedding index of a corpus (numpy,
    safetensors, and FAISS when installed)."""
    from tunelab.recipes.export import export_run

    if format not in ("merged", "adapter", "gguf", "onnx", "index"):
        raise TunelabError(f"--format {format!r} is not supported", fix="use merged, adapter, gguf, onnx or index")
    if dtype not in ("f16", "f32"):
        raise TunelabError(f"--dtype {dtype!r} is not supported", fix="use f16 or f32")
    summary = export_run(run, format, out_path, dtype, corpus, column)  # type: ignore[arg-type]
    from tunelab.workspace.workspace import record_action

    record_action("model.export", "run", Path(run).name, {"format": summary["format"], "path": str(summary["path"]),
                                                          "dtype": dtype})
    console.print(f"exported {summary['format']} to {summary['path']}")
