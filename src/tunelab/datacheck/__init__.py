"""Data checks before training: PII, duplicates, leakage between splits, label balance, lengths, encoding.

Training on leaked, duplicated or personal data is a silent failure: the run succeeds and its metrics
look fine. These checks make such problems visible (a JSON report and a self-contained HTML page)
before any compute is spent, and give governance (block/redact/warn) something precise to act on.
"""

from tunelab.datacheck.pii import ENTITIES, Finding, redact_row, redact_value, scan_rows
from tunelab.datacheck.suite import SplitData, check_splits

__all__ = ["ENTITIES", "Finding", "SplitData", "check_splits", "redact_row", "redact_value", "scan_rows"]
