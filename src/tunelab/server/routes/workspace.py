"""/v1/datasets, /v1/registry and /v1/audit: dataset versions, registered models and promotion, the audit log."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from tunelab.server.auth import Admin, Engineer, Viewer
from tunelab.workspace import audit, registry
from tunelab.workspace.datasets import get_version, list_versions, usage, version_dict
from tunelab.workspace.tokens import role_allows

router = APIRouter(prefix="/v1")


@router.get("/datasets", tags=["datasets"])
def datasets(request: Request, _who: Viewer, name: str | None = None) -> list[dict[str, Any]]:
    return list_versions(request.app.state.workspace, name)


@router.get("/datasets/{ref}", tags=["datasets"])
def dataset(ref: str, request: Request, _who: Viewer) -> dict[str, Any]:
    with request.app.state.workspace.read() as session:
        version = get_version(session, ref)
        return version_dict(version) | usage(session, version)


@router.get("/registry", tags=["registry"])
def models(request: Request, _who: Viewer) -> list[dict[str, Any]]:
    return registry.list_models(request.app.state.workspace)


@router.get("/registry/{ref}", tags=["registry"])
def model(ref: str, request: Request, _who: Viewer) -> dict[str, Any]:
    return registry.show(request.app.state.workspace, ref)


class Registration(BaseModel):
    run: str = Field(description="Run id (recorded in the workspace, succeeded).")
    name: str
    note: str | None = None


@router.post("/registry", tags=["registry"], status_code=201)
def register(body: Registration, request: Request, who: Engineer) -> dict[str, Any]:
    ws = request.app.state.workspace
    version = registry.register(ws, body.run, body.name, note=body.note)
    return registry.show(ws, f"{body.name}@v{version.version}")


class Promotion(BaseModel):
    to: str = Field(description="staging | production | archived")
    reason: str | None = None


@router.post("/registry/{ref}/promote", tags=["registry"])
def promote(ref: str, body: Promotion, request: Request,
            who: Engineer) -> dict[str, Any]:
    """Gate results either way; 409 when the policy refused (the attempt is recorded and audited).
    Who may promote is the run's policy too: `production_role` (default admin), `staging_role` (engineer)."""
    needed = _promotion_role(request, ref, body.to)
    if not role_allows(who.role, needed):
        raise HTTPException(403, detail=f"promoting to {body.to} needs the {needed} role (the run's "
                            f"governance.promotion); {who.name} has {who.role}")
    result = registry.promote(request.app.state.workspace, ref, body.to, reason=body.reason)
    outcome = {"ref": result.ref, "from": result.from_stage, "to": result.to_stage, "passed": result.passed,
               "checks": result.checks, "archived": result.archived}
    if not result.passed:
        raise HTTPException(409, detail=outcome)
    return outcome


def _promotion_role(request: Request, ref: str, stage: str) -> str:
    with request.app.state.workspace.read() as session:
        policy = registry.run_policy(registry.resolve_model_ref(session, ref).run)
    return policy.production_role if stage == "production" else policy.staging_role


@router.get("/audit", tags=["audit"])
def audit_log(request: Request, _who: Admin, action: str | None = None, actor: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    with request.app.state.workspace.read() as session:
        return [audit.entry_dict(e) for e in audit.query(session, action=action, actor=actor,
                                                         limit=min(limit, 5000))]


@router.get("/audit/verify", tags=["audit"])
def audit_verify(request: Request, _who: Admin) -> dict[str, Any]:
    ws = request.app.state.workspace
    with ws.read() as session:
        result = audit.verify(session, anchor_path=ws.anchor_path)
    return {"ok": result.ok, "entries": result.entries, "head": result.head, "problems": result.problems,
            "unanchored": result.unanchored}
