"""Diagnosing a run folder: every rule over what the run recorded, proposals checked against its config.

The diagnosis reads only files (never the model), so it is instant, works on old and failed runs,
and gives the same answer every time for the same folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.diagnose.curves import curve_findings
from tunelab.diagnose.data import data_findings
from tunelab.diagnose.finding import SEVERITY_ORDER, Finding
from tunelab.diagnose.forgetting import forgetting_findings
from tunelab.diagnose.proposals import validate_proposal
from tunelab.diagnose.view import RunView

DIAGNOSIS_FILE = "diagnosis.json"
FORMAT = 1  # bumped when the file's layout changes

#: every rule, in the order their findings are listed within one severity
RULES: tuple[Callable[[RunView], list[Finding]], ...] = (data_findings, forgetting_findings, curve_findings)


def diagnose(path: str | Path) -> dict[str, Any]:
    """The findings of the run folder at `path`, most severe first, and the next experiment: the
    first valid proposal with overrides."""
    run = RunView.open(path)
    findings = [finding for rule in RULES for finding in rule(run)]
    findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    for finding in findings:
        if finding.proposal and finding.proposal.overrides:
            finding.proposal_error = validate_proposal(run, finding.proposal)
            if finding.proposal_error:
                finding.proposal = None
    proposed = next((f for f in findings if f.proposal and f.proposal.overrides), None)
    return {
        "format": FORMAT,
        "run": run.run.id,
        "status": run.run.run.get("status"),
        "healthy": not any(f.severity in ("error", "warning") for f in findings),
        "findings": [f.to_dict() for f in findings],
        "next": None if proposed is None else {"finding": proposed.id, **proposed.to_dict()["proposal"]},
        "unread": run.run.problems,
    }
