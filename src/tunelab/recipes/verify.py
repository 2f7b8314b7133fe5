"""`tunelab verify`: re-hash what lineage recorded, for one run, dataset version or registered model, or
for everything live (the hashing itself is workspace/verify.py)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunelab.errors import ConfigError
from tunelab.workspace import Workspace
from tunelab.workspace.datasets import get_version, parse_ref
from tunelab.workspace.lineage import get_run
from tunelab.workspace.orm import DatasetVersion, ModelVersion, Run
from tunelab.workspace.registry import RegistryError, resolve_model_ref
from tunelab.workspace.verify import run_findings, version_problem


def verify(target: str | None, every: bool = False) -> dict[str, list[str]]:
    """Findings per subject (an empty list: intact) for `target` (RUN, NAME@vN or MODEL@vN) or, with
    `every`, for every live dataset version and succeeded run."""
    if (target is None) == (not every):
        raise ConfigError("give one RUN, NAME@vN or MODEL@vN, or --all", fix="tunelab verify --all")
    ws = Workspace.require()
    with ws.read() as session:
        return verify_all(ws, session) if every else verify_target(ws, session, target or "")


def verify_all(ws: Workspace, session: Session) -> dict[str, list[str]]:
    """Findings for every live dataset version and every succeeded run (subjects with none included)."""
    report: dict[str, list[str]] = {}
    for version in session.execute(select(DatasetVersion).where(DatasetVersion.deleted_at.is_(None))).scalars():
        problem = version_problem(ws, version)
        report[version.ref] = [problem] if problem else []
    for run in session.execute(select(Run).where(Run.status == "succeeded").order_by(Run.id)).scalars():
        report[f"run {run.id}"] = run_findings(ws, run)
    return report


def verify_target(ws: Workspace, session: Session, target: str) -> dict[str, list[str]]:
    """Findings for one RUN (id or folder), NAME@vN dataset version or MODEL@vN registered version."""
    if "@" in target:
        try:
            model: ModelVersion = resolve_model_ref(session, target)
            return {f"{model.ref} (run {model.run_id})": run_findings(ws, model.run)}
        except RegistryError:
            if parse_ref(target) is None:
                raise
        version = get_version(session, target)
        problem = version_problem(ws, version)
        return {version.ref: [problem] if problem else []}
    run = get_run(session, target)
    return {f"run {run.id}": run_findings(ws, run)}
