"""The FastAPI app of `tunelab serve`: one workspace, its job runner, and the API under /v1.

Every route is authorized (`auth.require(role)`): viewers read, engineers submit and cancel jobs and
register models, admins promote to production and manage tokens. Changes made during a request are
audited under the token's identity. The OpenAPI schema is at /openapi.json; /mcp serves the same
workspace to MCP clients (server/mcp.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

import tunelab
from tunelab.config.load import short_repr
from tunelab.errors import TunelabError
from tunelab.server.routes import autopilots, inference, jobs, runs, server, ui, uploads, workspace
from tunelab.server.routes.inference import ModelCache
from tunelab.server.mcp import mount_http
from tunelab.server.runner import JobRunner
from tunelab.workspace import Workspace


def create_app(root: Path, *, allow_anonymous: bool = False, job_slots: int = 1, run_jobs: bool = True,
               allow_code: bool = False) -> FastAPI:
    """The app for the workspace at `root`; `run_jobs=False` serves the API without running jobs (tests).
    `allow_code` lets admins' jobs run user code (trust_remote_code, ...); other jobs never may."""
    ws = Workspace.open(root)
    ws.check_schema()
    runner = JobRunner(ws, slots=job_slots, allow_code=allow_code)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_jobs:
            runner.start()
        async with mcp_sessions():  # the MCP SDK's session manager behind /mcp
            yield
        if run_jobs:
            runner.stop()
        ws.close()

    app = FastAPI(title="tunelab", version=tunelab.__version__, lifespan=lifespan,
                  description="A governed fine-tuning workspace: datasets, jobs, runs, registry, audit.")
    app.state.workspace = ws
    app.state.allow_anonymous = allow_anonymous
    app.state.allow_code = allow_code
    app.state.runner = runner
    app.state.model_cache = ModelCache()  # models served by /v1/models/.../predict and /v1/chat/completions

    @app.exception_handler(TunelabError)
    async def _user_error(_request: Request, err: TunelabError) -> JSONResponse:
        # A TunelabError is a request the caller can fix: say what and how, as the CLI does.
        status = getattr(err, "http_status", None) or (
            404 if type(err).__name__ in ("JobError", "RegistryError", "RunError") and "no " in err.message else 422)
        return JSONResponse({"detail": err.message, "fix": err.fix}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, err: RequestValidationError) -> JSONResponse:
        # FastAPI echoes each offending input whole: a 50 MB field would come back as a 50 MB error.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type"),
                   **({"input": short_repr(e["input"])} if "input" in e else {})} for e in err.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    for module in (jobs, runs, workspace, uploads, inference, autopilots, server, ui):
        app.include_router(module.router)
    # The same workspace for the user's own agent: MCP over streamable HTTP, same tokens and roles.
    mcp_sessions = mount_http(app, ws, allow_anonymous=allow_anonymous, allow_code=allow_code)

    @app.get("/v1/health", tags=["server"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": tunelab.__version__}

    return app
