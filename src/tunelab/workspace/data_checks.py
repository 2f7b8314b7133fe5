"""Data-check outcomes in the workspace: one row per `data check` (of a config, a dataset version or a
run's inputs), audited; a run's row also carries the outcome the promotion policy reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.hashing import digest
from tunelab.runs.folder import now_iso
from tunelab.workspace.audit import current_actor
from tunelab.workspace.orm import DataCheck, DatasetVersion, Run
from tunelab.workspace.workspace import Workspace


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    pii = report.get("pii") or {}
    return {"passed": bool(report.get("passed")), "errors": report.get("errors", [])[:20],
            "warnings": len(report.get("warnings", [])), "pii": pii.get("count", 0),
            "pii_by_entity": pii.get("by_entity", {}), "redacted": report.get("redacted")}


def add_check(ws: Workspace, *, target: str, report: dict[str, Any], report_path: Path | None = None,
              run_id: str | None = None, version: DatasetVersion | None = None) -> None:
    summary = summary_of(report)
    with ws.write() as txn:
        txn.session.add(DataCheck(
            target=target, dataset_version_id=version.id if version else None, run_id=run_id,
            passed=summary["passed"], pii_count=summary["pii"], report_sha256=digest(report),
            report_path=str(report_path) if report_path else None, summary=summary,
            created_at=now_iso(), created_by=current_actor()))
        if run_id is not None:
            run = txn.session.get(Run, run_id)
            if run is not None:
                run.data_check_passed, run.pii_count = summary["passed"], summary["pii"]
        txn.audit("data.check", "run" if run_id else "dataset", run_id or target,
                  {k: summary[k] for k in ("passed", "pii", "pii_by_entity", "warnings")}
                  | {"errors": summary["errors"][:5]})
