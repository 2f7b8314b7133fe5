"""/v1/autopilots: submit a goal (and its base config) to be planned, read the plan, approve or
reject it; an approved plan runs as one job in the queue (`kind: autopilot`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from tunelab.recipes import autopilot as recipe
from tunelab.server.auth import Engineer, Viewer
from tunelab.workspace import jobs as queue
from tunelab.workspace.confine import job_policy

router = APIRouter(prefix="/v1/autopilots", tags=["autopilots"])


class AutopilotSubmission(BaseModel):
    goal: str = Field(description="The goal file's YAML (target, budget, knobs; its base is `config`).",
                      max_length=100_000)
    config: str = Field(description="The base training config's YAML (data: workspace paths or NAME@vN).",
                        max_length=200_000)


@router.post("", status_code=201)
def submit(body: AutopilotSubmission, request: Request, who: Engineer) -> dict[str, Any]:
    """Validate the goal and its config (as a job would be, confinement included), run the data check,
    and write the plan. Nothing trains until the plan is approved."""
    return plan_submission(request.app.state.workspace, who, body.goal, body.config)


def plan_submission(ws: Any, who: Any, goal: str, config: str) -> dict[str, Any]:
    """Plan a submitted goal under the submitter's job policy (the REST route and the MCP tool share it);
    server autopilots never run user code."""
    policy = job_policy(ws, server_allows_code=False, admin=who.role == "admin")
    return recipe.describe(recipe.plan_submitted(ws, goal, config, policy).folder)


@router.get("")
def list_autopilots(request: Request, _who: Viewer) -> list[dict[str, Any]]:
    root = recipe.autopilots_root(request.app.state.workspace)
    folders = sorted((p for p in root.glob("*") if (p / "state.json").is_file()), reverse=True) if root.is_dir() else []
    return [{k: v for k, v in recipe.describe(f).items() if k in ("id", "status", "stopped", "best")}
            for f in folders[:100]]


@router.get("/{autopilot_id}")
def get_autopilot(autopilot_id: str, request: Request, _who: Viewer) -> dict[str, Any]:
    return recipe.describe(recipe.autopilot_folder(request.app.state.workspace, autopilot_id))


@router.post("/{autopilot_id}/approve")
def approve(autopilot_id: str, request: Request, who: Engineer) -> dict[str, Any]:
    """Approve the plan (audited as the token) and queue it as one job; returns the job."""
    return decide_and_queue(request.app.state.workspace, autopilot_id, who, approved=True)


@router.post("/{autopilot_id}/reject")
def reject(autopilot_id: str, request: Request, who: Engineer) -> dict[str, Any]:
    return decide_and_queue(request.app.state.workspace, autopilot_id, who, approved=False)


def decide_and_queue(ws: Any, autopilot_id: str, who: Any, *, approved: bool) -> dict[str, Any]:
    """Approve (and queue) or reject a planned autopilot; the REST routes and the MCP tools share it."""
    from tunelab.autopilot.state import AutopilotState

    folder = recipe.autopilot_folder(ws, autopilot_id)
    recipe.decide(AutopilotState.load(folder), approved)
    result = recipe.describe(folder)
    if approved:
        policy = job_policy(ws, server_allows_code=False, admin=who.role == "admin")
        result["job"] = queue.job_dict(queue.submit_autopilot(ws, folder, policy=policy))
    return result
