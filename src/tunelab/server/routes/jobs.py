"""/v1/jobs: submit a config, watch it (status, server-sent events, log), cancel it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from tunelab.server.auth import Engineer, Viewer
from tunelab.workspace import jobs as queue
from tunelab.workspace.confine import job_policy

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
LOG_TAIL_BYTES = 256 * 1024
EVENT_POLL_SECONDS = 1.0


class JobSubmission(BaseModel):
    config: str = Field(description="The YAML config, as a file would hold it (data paths are relative to the "
                        "workspace, or dataset versions NAME@vN).", max_length=200_000)
    overrides: list[str] = Field(default_factory=list, description="Dotted overrides: train.epochs=1",
                                 max_length=200)
    processes: int = Field(1, ge=1, le=64, description="Training processes on the server's machine: more than 1 "
                           "runs under `accelerate launch` (on a GPU machine, one per GPU), sharing the work as "
                           "the config's distributed.strategy says.")


# Job ids are database integers: a larger number is a 422 here, not an overflow (500) in the driver.
JobId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The job's id.")]


def _ws(request: Request) -> Any:
    return request.app.state.workspace


@router.post("", status_code=201)
def submit(body: JobSubmission, request: Request, who: Engineer) -> dict[str, Any]:
    """Queue a training job; the config is validated first (422 with the problem and fix if not). Jobs read
    only inside the workspace (and the admin's read roots); user code needs --allow-code and an admin (403)."""
    ws = _ws(request)
    policy = job_policy(ws, server_allows_code=request.app.state.allow_code, admin=who.role == "admin")
    job = queue.submit(ws, body.config, body.overrides, policy=policy, processes=body.processes)
    return queue.job_dict(job)


@router.get("")
def list_jobs(request: Request, _who: Viewer, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    return [queue.job_dict(j) for j in queue.list_jobs(_ws(request), status=status, limit=min(limit, 1000))]


@router.get("/{job_id}")
def get_job(job_id: JobId, request: Request, _who: Viewer) -> dict[str, Any]:
    return queue.job_dict(queue.get(_ws(request), job_id))


@router.post("/{job_id}/cancel")
def cancel(job_id: JobId, request: Request, who: Engineer) -> dict[str, Any]:
    return queue.job_dict(queue.request_cancel(_ws(request), job_id))


@router.get("/{job_id}/log", response_class=PlainTextResponse)
def job_log(job_id: JobId, request: Request, _who: Viewer) -> str:
    """The last 256 KiB of the job's output."""
    queue.get(_ws(request), job_id)
    path = queue.job_folder(_ws(request), job_id) / "job.log"
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(path.stat().st_size - LOG_TAIL_BYTES, 0))
        return handle.read().decode("utf-8", errors="replace")


@router.get("/{job_id}/events")
async def events(job_id: JobId, request: Request, _who: Viewer) -> StreamingResponse:
    """Server-sent events: `status` when the job's status changes, `metrics` for each new line of its
    run's metrics.jsonl (the live loss curve), and `end` once it is finished."""
    ws = _ws(request)
    queue.get(ws, job_id)
    return StreamingResponse(_event_stream(request, ws, job_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _event_stream(request: Request, ws: Any, job_id: int) -> AsyncIterator[str]:
    folder = queue.job_folder(ws, job_id)
    status, sent_lines = None, 0
    while True:
        job = await asyncio.to_thread(queue.get, ws, job_id)
        if job.status != status:
            status = job.status
            yield _event("status", queue.job_dict(job))
        for line in _new_metric_lines(folder, sent_lines):
            sent_lines += 1
            yield _event("metrics", json.loads(line))
        if status in queue.TERMINAL:
            yield _event("end", queue.job_dict(job))
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL_SECONDS)


def _new_metric_lines(folder: Any, already: int) -> list[str]:
    run = queue.job_run(folder)
    if run is None or not (run / "metrics.jsonl").is_file():
        return []
    text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    complete = text[: text.rfind("\n") + 1]  # a line still being written waits for the next poll
    return [line for line in complete.splitlines() if line.strip()][already:]


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, default=str)}\n\n"
