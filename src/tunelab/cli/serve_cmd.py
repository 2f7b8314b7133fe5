"""`tunelab serve`: the workspace server (API, job runner, MCP at /mcp); `tunelab mcp`: MCP over stdio."""

from __future__ import annotations

from typing import Annotated

import typer

from tunelab.cli.app import app, console
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
    allow_code: Annotated[bool, typer.Option(
        "--allow-code", help="Let jobs submitted with an admin's token run user code (model.trust_remote_code, "
        "...). Without it no job may.")] = False,
    read_root: Annotated[list[str] | None, typer.Option(
        "--read-root", help="A folder outside the workspace that jobs may read (repeat for several); replaces "
        "the stored list (audited). Admins change it later with PUT /v1/server/settings.")] = None,
) -> None:
    """Serve the workspace over HTTP: datasets, jobs, runs, registry, audit (OpenAPI at /openapi.json)."""
    import uvicorn

    from tunelab.server.app import create_app
    from tunelab.server.auth import is_loopback
    from tunelab.workspace import Workspace
    from tunelab.workspace.confine import set_read_roots, stored_read_roots

    if no_auth and not is_loopback(host):
        raise ConfigError(f"--no-auth is refused on {host}: anyone who can reach it would be admin",
                          fix="bind to 127.0.0.1, or create tokens with `tunelab tokens create`")
    ws = Workspace.require()
    ws.check_schema()
    if read_root is not None:
        set_read_roots(ws, read_root)
    if allow_code:
        with ws.write() as txn:  # who allowed user code, and when, is part of the record
            txn.audit("server.allow_code", "server", f"{host}:{port}", {"allow_code": True})
    roots = stored_read_roots(ws)
    ws.close()
    server_app = create_app(ws.root, allow_anonymous=no_auth, job_slots=jobs, allow_code=allow_code)
    console.print(f"serving {ws.root} on http://{host}:{port} ({jobs} job slot(s)"
                  f"{', no auth: local requests are admin' if no_auth else ''}"
                  f"{', admins may run user code' if allow_code else ''}"
                  f"{', jobs may also read ' + ', '.join(map(str, roots)) if roots else ''})")
    uvicorn.run(server_app, host=host, port=port, log_level="warning")



@app.command()
def mcp(
    allow_code: Annotated[bool, typer.Option(
        "--allow-code", help="Let submitted jobs run user code (model.trust_remote_code, ...). Without it no job "
        "may.")] = False,
    jobs: Annotated[int, typer.Option(help="Training jobs run at the same time (0: queue them for `tunelab "
                                           "serve` to run).", min=0)] = 1,
) -> None:
    """Serve the workspace to a local agent over MCP (stdio): datasets, data checks, configs, jobs, runs,
    diagnoses, registry. Jobs run here, confined like server jobs; every call is audited as you."""
    from tunelab.server.mcp import build_server, local_caller
    from tunelab.server.runner import JobRunner
    from tunelab.workspace import Workspace

    ws = Workspace.require()
    ws.check_schema()
    runner = JobRunner(ws, slots=jobs, allow_code=allow_code) if jobs else None
    if runner is not None:
        runner.start()
    try:
        console.print(f"[dim]tunelab MCP server (stdio) on {ws.root}[/]")  # stderr: stdout is the protocol's
        build_server(ws, local_caller, allow_code=allow_code).run("stdio")
    finally:
        if runner is not None:
            runner.stop()
        ws.close()
