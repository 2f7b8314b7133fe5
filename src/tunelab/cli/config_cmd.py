"""`tunelab models list` and `tunelab config schema/show`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tunelab.cli.app import config_app, models_app, out


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
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides.")] = None,
) -> None:
    """Print the resolved config, every default filled in."""
    from tunelab.config import dump_config, load_config

    out.print(dump_config(load_config(config, overrides or [])), end="", highlight=False, markup=False)
