"""The Typer app, its sub-apps and the consoles: what every command module mounts itself on.

Each `cli/*_cmd.py` imports from here and adds its commands; `cli/main.py` imports all of them, so
the complete command tree is `tunelab.cli.main.app` (this module's `app` alone has no commands).
Command modules import recipes inside each command, not at their top: that keeps `tunelab --help`
and every command's start-up free of torch, transformers and datasets until a command needs them.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fine-tune pretrained models from one YAML file.")
models_app = typer.Typer(no_args_is_help=True, help="The built-in model catalog.")
config_app = typer.Typer(no_args_is_help=True, help="Config schema and resolved configs.")
data_app = typer.Typer(no_args_is_help=True, help="Dataset versions, data checks and examples.")
runs_app = typer.Typer(no_args_is_help=True, help="Runs recorded in the workspace, with their lineage.")
audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit trail.")
registry_app = typer.Typer(no_args_is_help=True,
                           help="Registered models: versions of runs, gated stages, model cards.")
tokens_app = typer.Typer(no_args_is_help=True, help="API tokens for the workspace server (stored hashed).")
for sub, name in ((models_app, "models"), (config_app, "config"), (data_app, "data"), (runs_app, "runs"),
                  (audit_app, "audit"), (registry_app, "registry"), (tokens_app, "tokens")):
    app.add_typer(sub, name=name)

console = Console(stderr=True)  # messages and progress
out = Console()  # results: tables, JSON
STATE = {"debug": False, "quiet": False}


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    from tunelab.logs import setup_console  # keeps `tunelab --help` from importing logging setup

    STATE.update(debug=debug, quiet=quiet)
    setup_console(quiet=quiet, debug=debug)
