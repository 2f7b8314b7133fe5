"""What a diagnosis is made of: findings, each with its evidence and a proposed next experiment."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning", "info"]
#: most severe first: the order findings are listed and the next experiment is picked in
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Evidence:
    """One number a finding rests on, and the run file it was read from."""

    what: str
    value: Any
    file: str


@dataclass
class Proposal:
    """The change to try next, as dotted overrides of the run's config (`tunelab train
    runs/<id>/config.yaml OVERRIDES...`), and why. No overrides: the fix is in the data, not the config."""

    overrides: list[str]
    reason: str


@dataclass
class Finding:
    id: str
    severity: Severity
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    proposal: Proposal | None = None
    #: a proposal that did not validate against the run's config (kept visible, never offered to run)
    proposal_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.proposal_error is None:
            out.pop("proposal_error")
        return out
