"""Run folders: the on-disk layout of one run and the environment record."""

from tunelab.runs.environment import collect_environment
from tunelab.runs.folder import RunFolder, atomic_write_text, now_iso

__all__ = ["RunFolder", "atomic_write_text", "collect_environment", "now_iso"]
