"""The job queue of the workspace server, kept in the workspace database so no job is lost.

    queued -> running -> succeeded | failed | cancelled

A runner claims the oldest queued job inside a write transaction (writers are serialised, so two
runners never claim the same job), runs it in its own process, and records how it ended. A server
that dies leaves its running jobs behind; `recover` (run when a server starts) ends their processes
and marks them failed with the reason, and queued jobs simply wait for the next runner.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tunelab.config import load_config_text
from tunelab.errors import TunelabError
from tunelab.runs.folder import RunFolder, now_iso
from tunelab.workspace.audit import current_actor
from tunelab.workspace.confine import JobPolicy, check_job_config, describe
from tunelab.workspace.orm import Job, Run
from tunelab.workspace.workspace import Workspace

if TYPE_CHECKING:
    from tunelab.config import Config

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")


class JobError(TunelabError):
    """A job request that cannot be carried out (unknown job, already finished, ...)."""


def validate_submission(config_yaml: str, overrides: list[str], policy: JobPolicy | None = None) -> Config:
    """The config must load and validate exactly as `tunelab train` would load it, and (with a policy)
    read only what the server lets jobs read. Errors name "submitted config", never a server path."""
    config = load_config_text(config_yaml, overrides)
    if policy is not None:
        check_job_config(config, policy)
    return config


def submit(ws: Workspace, config_yaml: str, overrides: list[str] | None = None, *,
           policy: JobPolicy | None = None, processes: int = 1) -> Job:
    """Queue a job after validating it; `policy` (the server's confinement for this submitter) is
    checked now and recorded with the job, and checked again when the job starts. `processes` > 1
    trains under `accelerate launch` (one per GPU on a GPU machine)."""
    overrides = list(overrides or [])
    config = validate_submission(config_yaml, overrides, policy)
    if processes > 1:
        from tunelab.engine.accel import check_distributed

        check_distributed(config)
    granted = describe(policy) if policy is not None else None
    with ws.write() as txn:
        job = Job(status="queued", config_yaml=config_yaml, overrides=overrides, submitted_at=now_iso(),
                  submitted_by=current_actor(), cancel_requested=False, policy=granted, processes=processes)
        txn.session.add(job)
        txn.session.flush()
        details: dict[str, Any] = {"overrides": overrides}
        if processes > 1:
            details["processes"] = processes
        if granted and (granted["read_roots"] or granted["allow_code"]):
            details["policy"] = granted
        txn.audit("job.submit", "job", str(job.id), details)
        return job


def submit_autopilot(ws: Workspace, folder: Path, *, policy: JobPolicy) -> Job:
    """Queue an approved autopilot (its folder inside the workspace): the runner drives it with
    `tunelab autopilot --resume FOLDER --yes` in one process, every step confined by `policy`."""
    granted = describe(policy)
    with ws.write() as txn:
        job = Job(status="queued", config_yaml="", overrides=[], submitted_at=now_iso(), submitted_by=current_actor(),
                  cancel_requested=False, policy=granted, processes=1, kind="autopilot", target=str(folder))
        txn.session.add(job)
        txn.session.flush()
        txn.audit("job.submit", "job", str(job.id), {"kind": "autopilot", "autopilot": folder.name})
        return job


def get(ws: Workspace, job_id: int) -> Job:
    with ws.read() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobError(f"no job {job_id}", fix="see GET /v1/jobs")
        return job


def list_jobs(ws: Workspace, *, status: str | None = None, limit: int = 100) -> list[Job]:
    with ws.read() as session:
        stmt = select(Job).order_by(Job.id.desc()).limit(limit)
        if status:
            stmt = stmt.where(Job.status == status)
        return list(session.execute(stmt).scalars())


def claim_next(ws: Workspace, worker: str) -> Job | None:
    """The oldest queued job, now running on `worker` (None when the queue is empty)."""
    with ws.write() as txn:
        job = txn.session.execute(select(Job).where(Job.status == "queued").order_by(Job.id).limit(1)
                                  ).scalar_one_or_none()
        if job is None:
            return None
        job.status, job.worker, job.started_at = "running", worker, now_iso()
        txn.audit("job.start", "job", str(job.id), {"worker": worker})
        return job


def set_run(ws: Workspace, job_id: int, run_id: str) -> None:
    """Name the job's run while it trains (its folder exists from the run's first second)."""
    with ws.write() as txn:
        txn.session.get(Job, job_id).run_id = run_id


def set_process(ws: Workspace, job_id: int, pid: int) -> None:
    with ws.write() as txn:
        txn.session.get(Job, job_id).pid = pid


def finish(ws: Workspace, job_id: int, status: str, *, exit_code: int | None = None, error: str | None = None,
           run_id: str | None = None) -> None:
    with ws.write() as txn:
        job = txn.session.get(Job, job_id)
        if job.status in TERMINAL:  # cancelled while queued, or recovered by another server
            return
        job.status, job.ended_at, job.exit_code, job.error, job.run_id = status, now_iso(), exit_code, error, run_id
        txn.audit("job.end", "job", str(job_id), {"status": status, "exit_code": exit_code, "error": error,
                                                  "run": run_id})


def request_cancel(ws: Workspace, job_id: int) -> Job:
    """Cancel a queued job at once; ask the runner to end a running one (its process group)."""
    with ws.write() as txn:
        job = txn.session.get(Job, job_id)
        if job is None:
            raise JobError(f"no job {job_id}", fix="see GET /v1/jobs")
        if job.status in TERMINAL:
            raise JobError(f"job {job_id} already {job.status}")
        if job.status == "queued":
            job.status, job.ended_at = "cancelled", now_iso()
        job.cancel_requested = True
        txn.audit("job.cancel", "job", str(job_id), {"was": "queued" if job.status == "cancelled" else "running"})
        return job


def cancel_requested(ws: Workspace, job_ids: list[int]) -> list[int]:
    if not job_ids:
        return []
    with ws.read() as session:
        return list(session.execute(select(Job.id).where(Job.id.in_(job_ids), Job.cancel_requested.is_(True))
                                    ).scalars())


def recover(ws: Workspace, host: str) -> list[int]:
    """Jobs a dead server left running on `host`: end their processes, mark them failed with the reason.

    Called by a server when it starts (one runner per workspace and host); each orphan's training
    process, still alive in its own process group, is ended so it cannot write half a run later."""
    with ws.write() as txn:
        orphans = txn.session.execute(select(Job).where(Job.status == "running")).scalars().all()
        ended = []
        for job in orphans:
            if job.worker and not job.worker.startswith(f"{host}:"):
                continue  # another host's runner owns it
            killed = _end_group(job.pid, job.id)
            job.status, job.ended_at = "failed", now_iso()
            job.error = (f"orphaned: the server running it ({job.worker}) stopped"
                         + (" and its training process was ended" if killed else ""))
            job.run_id = _fail_orphan_run(txn, job_folder(ws, job.id), job.error)
            txn.audit("job.end", "job", str(job.id), {"status": "failed", "error": job.error, "run": job.run_id})
            ended.append(job.id)
        return ended


def job_folder(ws: Workspace, job_id: int) -> Path:
    """Where a job's config, log and run live: .tunelab/jobs/<id>/ (its run under runs/)."""
    return ws.folder / "jobs" / str(job_id)


def job_run(folder: Path) -> Path | None:
    """The run folder a job's training process created, once it has."""
    runs = sorted(p for p in (folder / "runs").glob("*") if (p / "run.json").is_file())
    return runs[-1] if runs else None


def _fail_orphan_run(txn: Any, folder: Path, reason: str) -> str | None:
    """The orphan's run, if it got that far, is failed too: in its folder and in the lineage record."""
    found = job_run(folder)
    if found is None:
        return None
    run = RunFolder(found)
    if run.read_json("run.json").get("status") in ("created", "running"):
        run.update(status="failed", ended=now_iso(), error=reason)
    row = txn.session.get(Run, run.id)
    if row is not None and row.status == "running":
        row.status, row.ended_at = "failed", now_iso()
        txn.audit("run.end", "run", run.id, {"status": "failed", "error": reason})
    return run.id


def job_marker(job_id: int) -> str:
    """A path in the training command line that names the job (jobs/<id>/config.yaml)."""
    return os.path.join("jobs", str(job_id), "config.yaml")


def _end_group(pid: int | None, job_id: int) -> bool:
    """Kill the job's process group, if `pid` is still that job's process (pids are reused)."""
    import psutil

    if not pid:
        return False
    try:
        if job_marker(job_id) not in " ".join(psutil.Process(pid).cmdline()):
            return False
        os.killpg(pid, signal.SIGKILL)
        return True
    except (psutil.Error, ProcessLookupError, PermissionError):
        return False


def job_dict(job: Job) -> dict[str, Any]:
    return {"id": job.id, "status": job.status, "submitted_at": job.submitted_at, "submitted_by": job.submitted_by,
            "started_at": job.started_at, "ended_at": job.ended_at, "run_id": job.run_id,
            "exit_code": job.exit_code, "error": job.error, "cancel_requested": job.cancel_requested,
            "overrides": job.overrides, "processes": job.processes or 1, "kind": job.kind or "train",
            **({"autopilot": Path(job.target).name} if job.target else {})}
