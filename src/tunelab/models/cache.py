"""The tunelab model cache: where built and converted model folders live, and how they get there."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from tunelab.errors import ModelError
from tunelab.paths import cache_dir


def models_dir() -> Path:
    """Folder holding one sub-folder per cached model (tiny builds, GGUF conversions)."""
    path = cache_dir() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_complete(folder: Path) -> bool:
    """A cached model folder is usable once it exists with a config.json.

    Folders only ever appear under their final name through an atomic rename of a finished build,
    so existence is completeness; the config.json check guards against a stray empty folder.
    """
    return (folder / "config.json").is_file()


def build_atomically(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, building it first with `build(tmp_folder)` if it is not cached yet.

    The build writes into a hidden temporary sibling which is renamed into place in one step, so a
    crashed build never leaves a half-written `target`. When another process finishes the same
    target first, its folder wins and this build is discarded.
    """
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; a cache folder should read like any other
        try:
            os.replace(tmp, target)
        except OSError as err:
            # Lost the race: another process renamed its finished folder into place first.
            if not is_complete(target):
                raise ModelError(
                    f"cannot write the model cache folder {target} ({err.strerror or err})",
                    fix="it holds something other than a finished model; delete it and retry",
                ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
