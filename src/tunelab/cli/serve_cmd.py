"""`tunelab serve`: the workspace server (API, job runner)."""

from __future__ import annotations

from typing import Annotated

import typer

from tunelab.cli.main import app, console
from tunelab.errors import ConfigError


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; 127.0.0.1 keeps the server on this machine.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    jobs: Annotated[int, typer.Option(help="Training jobs run at the same time.", min=1)] = 1,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Accept requests without a token (admin rights) — only from this machine, only "
        "when bound to a loopback address.")] = False,
) -> None:
    """Serve the workspace over HTTP: datasets, jobs, runs, registry, audit (OpenAPI at /openapi.json)."""
    import uvicorn

    from tunelab.server.app import create_app
    from tunelab.server.auth import is_loopback
    from tunelab.workspace import Workspace

    if no_auth and not is_loopback(host):
        raise ConfigError(f"--no-auth is refused on {host}: anyone who can reach it would be admin",
                          fix="bind to 127.0.0.1, or create tokens with `tunelab tokens create`")
    ws = Workspace.require()
    server_app = create_app(ws.root, allow_anonymous=no_auth, job_slots=jobs)
    console.print(f"serving {ws.root} on http://{host}:{port} ({jobs} job slot(s)"
                  f"{', no auth: local requests are admin' if no_auth else ''})")
    uvicorn.run(server_app, host=host, port=port, log_level="warning")

