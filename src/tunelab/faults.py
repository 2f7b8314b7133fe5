"""Fault injection for the crash-consistency suite (tests/faults/): die exactly where a crash hurts most.

    TUNELAB_FAULT=checkpoint.write      # SIGKILL the first time a checkpoint's files are written, before its rename
    TUNELAB_FAULT=checkpoint.write@2    # ... the second time

Each named point below is one call in the code path it guards; the process kills itself with SIGKILL
(no handler, no `finally`, no flush), as the OOM killer or a pulled plug would. With the variable
unset a point costs one environment lookup. The points:

- `checkpoint.write`  a checkpoint's files are in `.tmp-step-N/`, not renamed into place (engine/checkpoint.py)
- `save.final`        model/adapter written into `.saving/`, nothing renamed into the run (recipes/train.py)
- `save.place`        the first finished folder renamed into the run, the rest still in `.saving/`
- `db.commit`         a workspace write transaction complete but not committed (workspace/workspace.py)
- `audit.anchor`      a write committed, its audit head not yet appended to the anchor file
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "TUNELAB_FAULT"
_passes: Counter[str] = Counter()


def point(name: str) -> None:
    """Kill this process here if TUNELAB_FAULT names this point (on its Nth pass with `@N`)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target != name:
        return
    _passes[name] += 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
