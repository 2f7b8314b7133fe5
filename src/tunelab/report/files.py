"""Writing report outputs: every file atomically (temp file + rename), so a crash never leaves a half file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all(folder: Path, files: dict[str, bytes | str]) -> dict[str, Path]:
    """Write each named file into `folder`, atomically, in the given order (put the index file last:
    it only appears once everything it describes is in place)."""
    written = {}
    for name, content in files.items():
        path = folder / name
        atomic_write_bytes(path, content.encode("utf-8") if isinstance(content, str) else content)
        written[name] = path
    return written
