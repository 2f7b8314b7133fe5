"""Where tunelab keeps its cache (converted models, tokenized data, Arrow tables)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The tunelab cache root: `$TUNELAB_CACHE` if set, else `~/.cache/tunelab`; created on demand."""
    root = os.environ.get("TUNELAB_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "tunelab"
    path.mkdir(parents=True, exist_ok=True)
    return path
