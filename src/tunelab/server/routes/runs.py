"""/v1/runs: the runs recorded in the workspace, their lineage, metrics curve and evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse

from tunelab.errors import RunError
from tunelab.recipes.diagnose import diagnose_run
from tunelab.recipes.report import write_report
from tunelab.server.auth import Viewer
from tunelab.workspace.lineage import get_run, recent_runs, run_dict
from tunelab.workspace.orm import Run

router = APIRouter(prefix="/v1/runs", tags=["runs"])


@router.get("")
def list_runs(request: Request, _who: Viewer, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    ws = request.app.state.workspace
    with ws.read() as session:
        return [_summary(run) for run in recent_runs(session, status=status, limit=min(limit, 1000))]


def _summary(run: Run) -> dict[str, Any]:
    metrics = run.metrics or {}
    return {"id": run.id, "status": run.status, "task": run.task, "started_at": run.started_at,
            "ended_at": run.ended_at, "config_sha256": run.config_sha256, "created_by": run.created_by,
            "validation": metrics.get("validation"), "test": metrics.get("test"),
            "gates_passed": (run.gates or {}).get("passed"), "data_check_passed": run.data_check_passed}


@router.get("/{run_id}")
def get_run_record(run_id: str, request: Request, _who: Viewer) -> dict[str, Any]:
    """Everything recorded: inputs with hashes, config, environment, metrics, gates, data check, artifacts."""
    with request.app.state.workspace.read() as session:
        return run_dict(get_run(session, run_id))


@router.get("/{run_id}/metrics")
def metrics(run_id: str, request: Request, _who: Viewer) -> list[dict[str, Any]]:
    """metrics.jsonl: one object per logged step and per evaluation (the loss curve)."""
    path = _folder(request, run_id) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@router.get("/{run_id}/eval")
def evaluation(run_id: str, request: Request, _who: Viewer) -> dict[str, Any]:
    return _run_json(request, run_id, "eval.json", "wait until it has finished")


@router.get("/{run_id}/data-check")
def data_check(run_id: str, request: Request, _who: Viewer) -> dict[str, Any]:
    return _run_json(request, run_id, "data_check.json", "runs from before data checks have none")


@router.get("/{run_id}/diagnosis")
def diagnosis(run_id: str, request: Request, _who: Viewer) -> dict[str, Any]:
    """`tunelab diagnose` of the run: findings (id, severity, evidence, proposed overrides) and the
    next experiment; diagnosed afresh on each request, so a running job's curves are read as they are."""
    return diagnose_run(_folder(request, run_id))


def _run_json(request: Request, run_id: str, name: str, fix: str) -> dict[str, Any]:
    path = _folder(request, run_id) / name
    if not path.is_file():
        raise RunError(f"run {run_id} has no {name}", fix=fix)
    return json.loads(path.read_text(encoding="utf-8"))


@router.get("/{run_id}/report", response_class=HTMLResponse)
def report(run_id: str, request: Request, _who: Viewer) -> FileResponse:
    """The run's self-contained HTML report (curves, base vs tuned, retention, gates, worst samples),
    written on first request and when the run has changed since."""
    folder = _folder(request, run_id)
    page = folder / "report" / "report.html"
    if not page.is_file() or page.stat().st_mtime < (folder / "run.json").stat().st_mtime:
        page = write_report(folder, None)
    return FileResponse(page, media_type="text/html")


def _folder(request: Request, run_id: str) -> Path:
    with request.app.state.workspace.read() as session:
        return Path(get_run(session, run_id).path)
