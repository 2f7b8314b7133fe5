"""User-facing errors.

Every error a user can fix is a `TunelabError`: the CLI prints its one-line message (no traceback
unless --debug) and exits non-zero. The message names the file, line or key and says the fix.
"""

from __future__ import annotations

GATE_FAILED = 3  # exit status of a command whose work finished but failed a gate (evaluation, promotion, check)


class TunelabError(Exception):
    """An error caused by input the user controls; `str(err)` is a complete one-line message."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(f"{message} — {fix}" if fix else message)


class ConfigError(TunelabError):
    """The YAML config or an override is invalid."""


class DataError(TunelabError):
    """A data file is missing, malformed or unusable for the task."""


class ModelError(TunelabError):
    """A model source cannot be resolved or loaded."""


class TrainingError(TunelabError):
    """Training cannot continue (non-finite loss, nothing trainable, ...)."""


class RunError(TunelabError):
    """A run folder is missing or incomplete."""


class ExportError(TunelabError):
    """A model cannot be exported in the requested format."""
