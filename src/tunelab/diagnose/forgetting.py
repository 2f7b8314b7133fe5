"""Findings from the retention sets of eval.json: forgetting over its gate, or close to it."""

from __future__ import annotations

from tunelab.diagnose import proposals
from tunelab.diagnose.finding import Evidence, Finding
from tunelab.diagnose.view import RunView, is_finite

NEAR = 0.8  # forgetting at this share of its limit is close enough to warn about
NOTABLE = 0.05  # without a gate: a relative loss of ability this large is still worth saying


def forgetting_findings(run: RunView) -> list[Finding]:
    found = []
    for name, entry in sorted(((run.run.eval or {}).get("retention") or {}).items()):
        lost, limit, metric = entry.get("forgetting"), entry.get("limit"), entry.get("metric")
        if not is_finite(lost):
            continue
        before = (entry.get("before") or {}).get(metric)
        after = (entry.get("after") or {}).get(metric)
        evidence = [Evidence(f"{name}: {metric} before -> after training", [before, after], "eval.json"),
                    Evidence(f"{name}: forgetting (relative)", round(lost, 4), "eval.json")]
        if is_finite(limit):
            evidence.append(Evidence(f"{name}: gate eval.max_forgetting", limit, "eval.json"))
        if is_finite(limit) and not entry.get("passed", lost <= limit):
            found.append(Finding("forgetting-over-gate", "error", f"forgetting on {name} is {100 * lost:.1f}%, over "
                                 f"its gate of {100 * limit:.1f}%", evidence, proposals.gentler(run)))
        elif is_finite(limit) and limit > 0 and lost >= NEAR * limit:
            found.append(Finding("forgetting-near-gate", "warning", f"forgetting on {name} is {100 * lost:.1f}%, "
                                 f"close to its gate of {100 * limit:.1f}%", evidence, proposals.gentler(run)))
        elif not is_finite(limit) and lost >= NOTABLE:
            found.append(Finding("forgetting", "info", f"the model lost {100 * lost:.1f}% of its {metric} on {name} "
                                 "(no gate set: eval.max_forgetting)", evidence, proposals.gentler(run)))
    return found
