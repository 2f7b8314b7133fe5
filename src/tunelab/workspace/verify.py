"""Re-hash what lineage recorded and say what no longer matches.

A run's record holds the sha256 of every artifact it wrote and of every input it read; a dataset
version holds the sha256 of its bytes. Verification reads the bytes again (through the file-hash memo,
which trusts only files whose size, mtime, ctime, inode and device are all unchanged) and lists every
difference: an edited or missing artifact, an input whose version was deleted or whose bytes changed.
`registry add` refuses a run with any finding, promotion to staging or production fails its
`integrity` check (recorded in the audit trail like every refusal), and `tunelab verify`
(recipes/verify.py) reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.hashing import file_sha256
from tunelab.workspace.datasets import content_files, content_sha256, version_path
from tunelab.workspace.orm import DatasetVersion, Run
from tunelab.workspace.workspace import Workspace


def run_findings(ws: Workspace, run: Run) -> list[str]:
    """What differs between run `run`'s recorded artifacts and inputs and the bytes there now."""
    folder = Path(run.path) if Path(run.path).is_absolute() else ws.root / run.path
    found = [f"artifact {a.path}: {problem}" for a in run.artifacts
             if (problem := _file_problem(folder / a.path, a.sha256)) is not None]
    for item in run.inputs:
        version = item.dataset_version
        if version is not None:
            problem = version_problem(ws, version)
            if problem is not None:
                found.append(f"input data.{item.split} ({version.ref}): {problem}")
        elif (path := _input_path(ws, item.path)).exists():
            now = content_sha256(path, content_files(path))
            if now != item.sha256:
                found.append(f"input data.{item.split} ({item.path}): bytes changed "
                             f"(sha256 {now[:12]}… now, {item.sha256[:12]}… recorded)")
        else:
            found.append(f"input data.{item.split} ({item.path}): no longer exists")
    return found


def version_problem(ws: Workspace, version: DatasetVersion) -> str | None:
    """Why a dataset version's bytes cannot be trusted now, or None when they are the registered ones."""
    if not version.live:
        return f"deleted ({version.deleted_at} by {version.deleted_by})"
    try:
        version_path(ws, version)
    except DataError as err:
        return str(err).split(": ", 1)[-1]
    return None


def integrity_check(ws: Workspace, run: Run) -> dict[str, Any]:
    """The promotion check every gated move runs, whatever the policy: artifacts and inputs intact."""
    found = run_findings(ws, run)
    message = ("artifacts and inputs match lineage" if not found else
               f"integrity: {found[0]}" + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))
    return {"name": "integrity", "passed": not found, "value": found, "limit": [], "message": message}


def _input_path(ws: Workspace, text: str) -> Path:
    """A recorded input path: absolute, or relative to the workspace root runs are started from."""
    path = Path(text)
    return path if path.is_absolute() else ws.root / path


def _file_problem(path: Path, recorded: str) -> str | None:
    if not path.is_file():
        return "missing"
    now = file_sha256(path)
    if now != recorded:
        return f"changed (sha256 {now[:12]}… now, {recorded[:12]}… recorded)"
    return None
