"""Run lineage in the workspace: what went into a run (data bytes, config, code, environment) and what
came out (status, metrics, gates, artifacts with hashes).

`record_start` runs once the run folder exists; `record_end` on success, failure, interruption or
pruning. Both are single transactions with their audit entry, so the database never holds a
half-recorded run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import object_session

import tunelab
from tunelab.config import Config, dump_config
from tunelab.errors import RunError
from tunelab.hashing import digest, file_sha256
from tunelab.runs.folder import RunFolder, now_iso
from tunelab.workspace.audit import current_actor
from tunelab.workspace.data_checks import add_check
from tunelab.workspace.datasets import content_files_list
from tunelab.workspace.orm import Artifact, DataCheck, DatasetVersion, Run, RunInput
from tunelab.workspace.workspace import Workspace

# Not artifacts: resumable checkpoints are transient and the log holds timings that differ every run.
SKIP_ARTIFACTS = {"checkpoints", "train.log", "report", "diagnosis.json"}  # derived: rewritten on request


@dataclass
class InputRecord:
    """One data split as the run read it."""

    split: str
    path: str
    sha256: str
    version: DatasetVersion | None = None


def config_sha256(config: Config) -> str:
    """Hash of what decides the result: every resolved key except where outputs go."""
    return digest(config.model_dump(mode="json", exclude={"output"}))


def record_start(ws: Workspace, run: RunFolder, config: Config, inputs: list[InputRecord],
                 environment: dict[str, Any], *, resumed: bool = False, reproduces: str | None = None,
                 origin: dict[str, Any] | None = None) -> None:
    with ws.write() as txn:
        existing = txn.session.get(Run, run.id) if resumed else None
        if existing is not None:
            existing.status, existing.ended_at = "running", None
            txn.audit("run.resume", "run", run.id, {"config_sha256": existing.config_sha256})
            return
        row = Run(
            id=run.id, path=str(run.path.resolve()), status="running", task=config.task,
            config_sha256=config_sha256(config), config_yaml=dump_config(config),
            tunelab_version=tunelab.__version__, git_commit=environment.get("git_commit"), seed=config.train.seed,
            environment=environment, started_at=now_iso(), created_by=current_actor(), reproduces=reproduces,
            origin=origin)
        txn.session.add(row)
        txn.session.flush()
        for item in inputs:
            txn.session.add(RunInput(run_id=run.id, split=item.split, path=item.path, sha256=item.sha256,
                                     dataset_version_id=item.version.id if item.version else None))
        txn.audit("run.start", "run", run.id, {
            "config_sha256": row.config_sha256, "task": config.task, "model": config.model.source,
            "method": config.method.name, "seed": config.train.seed, "reproduces": reproduces,
            **({"origin": origin} if origin else {}),
            "inputs": [{"split": i.split, "sha256": i.sha256, "dataset": i.version.ref if i.version else None}
                       for i in inputs]})


def record_data_check(ws: Workspace, run_id: str, report: dict[str, Any], report_path: Path | None) -> None:
    add_check(ws, target=f"run {run_id}", report=report, report_path=report_path, run_id=run_id)


def record_end(ws: Workspace, run: RunFolder, status: str, *, error: str | None = None,
               artifacts: list[dict[str, Any]] | None = None) -> None:
    """Status, end time, metrics and gates from eval.json, and every artifact's hash (`artifacts`:
    hashes the caller took already, every file but run.json, which is hashed here)."""
    results = _read_json(run, "eval.json")
    if status != "succeeded":
        artifacts = []
    elif artifacts is None:
        artifacts = hash_artifacts(run.path)
    else:  # in the order hash_artifacts lists them
        known = {a["path"]: a for a in [*artifacts, *_hashes(run.path, ["run.json"])]}
        artifacts = [known[rel] for rel in content_files_list(run.path, skip=SKIP_ARTIFACTS) if rel in known]
    with ws.write() as txn:
        row = txn.session.get(Run, run.id)
        if row is None:  # started before the workspace existed
            return
        row.status, row.ended_at = status, now_iso()
        if results is not None:
            row.metrics = finite({k: v for k, v in results.items() if k not in ("warnings", "best")})
            row.gates = finite(results.get("gates"))
        for item in artifacts:
            txn.session.add(Artifact(run_id=run.id, **item))
        txn.audit("run.end", "run", run.id, {"status": status, "error": error, "artifacts": len(artifacts),
                                             "gates_passed": (row.gates or {}).get("passed")})


def finite(value: Any) -> Any:
    """NaN and infinities as null: eval.json may hold them (the loss of a baseline that scores no token),
    and the database keeps strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


def hash_artifacts(folder: Path, *, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """{path, sha256, bytes} of every file a run wrote, checkpoints, log and report left out (and `skip`)."""
    return _hashes(folder, content_files_list(folder, skip={*SKIP_ARTIFACTS, *skip}))


def _hashes(folder: Path, paths: list[str]) -> list[dict[str, Any]]:
    return [{"path": rel, "sha256": file_sha256(folder / rel), "bytes": (folder / rel).stat().st_size}
            for rel in paths]


def _read_json(run: RunFolder, name: str) -> dict[str, Any] | None:
    try:
        return run.read_json(name)
    except (OSError, ValueError):
        return None


def get_run(session: Any, ident: str) -> Run:
    """A run by id, by folder path, or by a unique id prefix."""
    name = Path(ident).name if ("/" in ident or Path(ident).is_dir()) else ident
    row = session.get(Run, name)
    if row is not None:
        return row
    matches = session.execute(select(Run).where(Run.id.startswith(name))).scalars().all()
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise RunError(f"{ident!r} matches {len(matches)} runs", fix="give more of the run id")
    raise RunError(f"no run {ident!r} in this workspace", fix="see `tunelab runs list`")


def recent_runs(session: Any, *, status: str | None = None, limit: int = 100) -> list[Run]:
    """Recorded runs, newest first (`runs list` and GET /v1/runs)."""
    stmt = select(Run).order_by(Run.started_at.desc()).limit(limit)
    if status:
        stmt = stmt.where(Run.status == status)
    return list(session.execute(stmt).scalars())


def run_dict(row: Run) -> dict[str, Any]:
    """Everything recorded about a run, as plain data (for `runs show` and the server)."""
    env = row.environment or {}
    checks = _checks(row)
    return {
        "id": row.id, "path": row.path, "status": row.status, "task": row.task,
        "config_sha256": row.config_sha256, "config_yaml": row.config_yaml,
        "tunelab_version": row.tunelab_version, "git_commit": row.git_commit, "seed": row.seed,
        "started_at": row.started_at, "ended_at": row.ended_at, "created_by": row.created_by,
        "reproduces": row.reproduces, "origin": row.origin, "metrics": row.metrics, "gates": row.gates,
        "environment": env,
        "environment_summary": f"python {env.get('python')}, torch {env.get('torch')}, {env.get('machine')}, "
                               f"{env.get('cpu_count')} CPUs, {env.get('memory_gb')} GB"
                               + (f", GPUs {', '.join(env['gpus'])}" if env.get("gpus") else ""),
        "inputs": [{"split": i.split, "path": i.path, "sha256": i.sha256,
                    "dataset": i.dataset_version.ref if i.dataset_version else None} for i in row.inputs],
        "data_check": checks[-1] if checks else None,
        "artifacts": [{"path": a.path, "sha256": a.sha256, "bytes": a.bytes} for a in row.artifacts],
    }


def _checks(row: Run) -> list[dict[str, Any]]:
    session = object_session(row)
    found = session.execute(select(DataCheck).where(DataCheck.run_id == row.id).order_by(DataCheck.id)).scalars()
    return [{"passed": c.passed, "pii": c.pii_count, "summary": c.summary, "report": c.report_path} for c in found]
