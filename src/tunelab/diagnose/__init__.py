"""`tunelab diagnose`: findings from what a finished run recorded, each with its evidence and the next
experiment to try as dotted overrides (rules.py runs them; curves.py, forgetting.py, data.py hold
them; proposals.py sizes the changes)."""

from tunelab.diagnose.rules import DIAGNOSIS_FILE, diagnose

__all__ = ["DIAGNOSIS_FILE", "diagnose"]
