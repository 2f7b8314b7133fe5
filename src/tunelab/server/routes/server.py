"""/v1/server/settings: what an admin may change while the server runs (extra read-only roots of jobs)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from tunelab.server.auth import Admin
from tunelab.workspace.confine import set_read_roots, stored_read_roots

router = APIRouter(prefix="/v1/server", tags=["server"])


class ServerSettings(BaseModel):
    read_roots: list[str] = Field(
        description="Absolute folders outside the workspace that jobs may read (data, models); jobs never "
        "write there. Replaces the current list; every change is audited.", max_length=64)


def _settings(request: Request) -> dict[str, Any]:
    return {"read_roots": [str(p) for p in stored_read_roots(request.app.state.workspace)],
            "allow_code": request.app.state.allow_code}


@router.get("/settings")
def get_settings(request: Request, _who: Admin) -> dict[str, Any]:
    """The read roots, and whether this server was started with --allow-code (a process flag)."""
    return _settings(request)


@router.put("/settings")
def put_settings(body: ServerSettings, request: Request, _who: Admin) -> dict[str, Any]:
    set_read_roots(request.app.state.workspace, body.read_roots)
    return _settings(request)
