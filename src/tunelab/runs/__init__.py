"""Run folders: the on-disk layout of one run and the environment record."""

from typing import Any

from tunelab.runs.folder import RunFolder, atomic_write_text, now_iso

__all__ = ["RunFolder", "atomic_write_text", "collect_environment", "now_iso"]


def __getattr__(name: str) -> Any:
    # The environment record imports torch; the workspace commands read run folders without it.
    if name == "collect_environment":
        from tunelab.runs.environment import collect_environment

        return collect_environment
    raise AttributeError(name)
