"""The diagnose recipe: findings of a run folder, written to its diagnosis.json.

Training writes the file at the end of every successful run; `tunelab diagnose`, the report and the
server rewrite it on request, so a run diagnosed by a newer tunelab shows the newer rules. The file
is derived (like report/), so it is not part of the run's hashed artifacts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tunelab.diagnose import DIAGNOSIS_FILE, diagnose
from tunelab.runs.folder import atomic_write_text

log = logging.getLogger(__name__)


def diagnose_run(path: str | Path, *, write: bool = True) -> dict[str, Any]:
    """The diagnosis of the run folder at `path`; also written to its diagnosis.json unless `write` is off."""
    result = diagnose(path)
    if write:
        atomic_write_text(Path(path) / DIAGNOSIS_FILE, json.dumps(result, indent=2) + "\n")
    return result


def diagnose_after_training(path: Path) -> None:
    """Diagnose a run that just finished; a rule that fails is logged, never fails the run."""
    try:
        result = diagnose_run(path)
    except Exception as err:  # noqa: BLE001 - the run is saved and complete; its diagnosis is an extra
        log.warning("could not diagnose the run: %s", err)
        return
    notable = [f"{f['id']} ({f['severity']})" for f in result["findings"] if f["severity"] != "info"]
    if notable:
        log.info("diagnosis: %s; `tunelab diagnose %s` shows the evidence and the next experiment",
                 ", ".join(notable), path)
