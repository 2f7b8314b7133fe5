"""The `tunelab` command line (Typer + Rich): the entry point.

Importing the command modules mounts every command on `app` (cli/app.py). Errors a user can fix
print one red line and exit 1; tracebacks only with --debug.
"""

from __future__ import annotations

import sys

import typer

# Each module mounts its commands on app when imported; `tunelab --help` lists them in import order.
from tunelab.cli import run_cmd  # noqa: F401  (train, eval, predict, generate, chat, export come first)
from tunelab.cli import (  # noqa: F401
    autopilot_cmd,
    config_cmd,
    data_cmd,
    launch_cmd,
    registry_cmd,
    report_cmd,
    serve_cmd,
    sweep_cmd,
    tokens_cmd,
    workspace_cmd,
)
from tunelab.cli.app import STATE, app, console
from tunelab.errors import TunelabError

__all__ = ["app", "main"]


def _terminate_as_interrupt(_signum: int, _frame: object) -> None:
    # SIGTERM (a cancelled server job, `kill`, a scheduler's stop) ends a run as Ctrl-C does: the run is
    # marked interrupted, its last checkpoint stays resumable, and the workspace records its end.
    raise KeyboardInterrupt


def main() -> None:
    import signal

    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        code = app(standalone_mode=False)  # a typer.Exit comes back as its status, not raised
        if isinstance(code, int) and code:
            sys.exit(code)
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

    console.print(Text.assemble(("error: ", "bold red"), first), soft_wrap=True)  # one line, never wrapped
    sys.exit(1)
