"""`tunelab tokens`: API tokens of the workspace server (create, list, revoke)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tunelab.cli.app import console, out, tokens_app



@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Argument(help="Token name: letters, digits, '.', '_', '-'; never reused.")],
    role: Annotated[str, typer.Option(help="viewer: read; engineer: also submit jobs, add data; admin: everything.")
                    ] = "viewer",
) -> None:
    """Create a token and print it once, alone on stdout: TOKEN=$(tunelab tokens create ci --role engineer)."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.tokens import create_token

    ws = Workspace.require()
    token = create_token(ws, name, role)
    ws.close()
    typer.echo(token)  # plain echo: no Rich wrapping or markup may touch the secret
    console.print(f"token {escape(name)} ({role}) created; it will not be shown again — store it now")


@tokens_app.command("list")
def tokens_list() -> None:
    """Tokens with their role, public prefix and use; never their secrets."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.tokens import list_tokens

    ws = Workspace.require()
    rows = list_tokens(ws)
    ws.close()
    table = Table(show_edge=False)
    for column in ("name", "role", "prefix", "created", "last used", "revoked"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(escape(row["name"]), row["role"], f"tl_{row['prefix']}_…", row["created_at"],
                      row["last_used_at"] or "-", row["revoked_at"] or "-")
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a token: requests with it are refused from now on (its name stays taken)."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.tokens import revoke_token

    ws = Workspace.require()
    revoke_token(ws, name)
    ws.close()
    console.print(f"token {escape(name)} revoked")
