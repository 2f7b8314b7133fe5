"""The `tunelab` command line (Typer + Rich).

Errors a user can fix print one red line and exit 1; tracebacks only with --debug.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from tunelab.errors import TunelabError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune pretrained models from one YAML file.")
models_app = typer.Typer(no_args_is_help=True, help="The built-in model catalog.")
config_app = typer.Typer(no_args_is_help=True, help="Config schema and resolved configs.")
data_app = typer.Typer(no_args_is_help=True, help="Data helpers.")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")

console = Console(stderr=True)
out = Console()
STATE = {"debug": False, "quiet": False}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    from tunelab.logs import setup_console

    STATE.update(debug=debug, quiet=quiet)
    setup_console(quiet=quiet, debug=debug)


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Argument(help="YAML config (omit with --resume).")] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides: train.learning_rate=3e-5")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its last checkpoint.")] = None,
) -> None:
    """Fine-tune, evaluate and write runs/<id>/."""
    from tunelab.config import load_config
    from tunelab.logs import is_main_process
    from tunelab.recipes.train import train as run_train
    from tunelab.runs import RunFolder

    if resume is not None:
        previous = RunFolder.open(resume)
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


def _print_results(run_path: Path, results: dict) -> None:
    table = Table(title=f"{run_path}", show_edge=False)
    table.add_column("split")
    names = ["accuracy", "macro_f1", "weighted_f1", "loss"]
    for name in names:
        table.add_column(name, justify="right")
    for split in ("validation", "test"):
        if split in results:
            table.add_row(split, *(f"{results[split].get(n, float('nan')):.4f}" for n in names))
    out.print(table)
    if results.get("best_reason"):
        out.print(f"[dim]{results['best_reason']}; model saved with the {results['weights']} weights[/]")


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
    table = Table(show_edge=False)
    for column in ("text", "label", "score"):
        table.add_column(column)
    for item in predictions:
        text = item["text"] if len(item["text"]) < 60 else item["text"][:57] + "..."
        for i, guess in enumerate(item["labels"]):
            table.add_row(text if i == 0 else "", guess["label"], f"{guess['score']:.3f}")
    out.print(table)


@models_app.command("list")
def models_list() -> None:
    """List the built-in catalog of models."""
    from tunelab.models import CATALOG

    table = Table(show_edge=False)
    for column in ("name", "family", "params", "provider", "description"):
        table.add_column(column)
    for name, entry in CATALOG.items():
        table.add_row(name, entry.family, entry.params, entry.provider, entry.description)
    out.print(table)


@config_app.command("schema")
def config_schema() -> None:
    """Print the config's JSON schema."""
    from tunelab.config import config_schema as schema

    out.print_json(json.dumps(schema()))


@config_app.command("show")
def config_show(
    config: Annotated[Path, typer.Argument(help="YAML config.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides.")] = None,
) -> None:
    """Print the resolved config, every default filled in."""
    from tunelab.config import dump_config, load_config

    out.print(dump_config(load_config(config, overrides or [])), end="", highlight=False, markup=False)


@data_app.command("example")
def data_example(
    name: Annotated[str, typer.Argument(help="bbc-news")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write train/validation/test jsonl into.")],
) -> None:
    """Materialize a packaged example corpus as jsonl files."""
    from tunelab.data.corpora import CORPORA

    summary = CORPORA.get(name)(out_dir)
    out.print(json.dumps(summary, indent=2))


def main() -> None:
    try:
        app(standalone_mode=False)
    except TunelabError as err:
        _fail(str(err))
    except (KeyboardInterrupt, typer.Abort):
        console.print("[yellow]interrupted[/]")
        sys.exit(130)
    except Exception as err:  # click usage errors, and anything we did not foresee
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(err.exit_code)
        if STATE["debug"]:
            raise
        _fail(f"{type(err).__name__}: {err} (run with --debug for the traceback)")


def _fail(message: str) -> None:
    if STATE["debug"]:
        console.print_exception()
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    from rich.text import Text

    console.print(Text.assemble(("error: ", "bold red"), first))
    sys.exit(1)
