"""Content hashes and canonical JSON: what lineage, caches and the audit chain are keyed by.

Kept free of heavy imports (no torch, no datasets), so the workspace commands start quickly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path, PurePath
from typing import Any

from tunelab import hashcache

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file (what `sha256sum` prints). Large files already hashed while
    unchanged (size, mtime, ctime, inode) come from the hash memo instead of being read again."""
    path = Path(path)
    key = hashcache.stat_key(path)
    if int(key.split(":", 1)[0]) < hashcache.MIN_BYTES:
        return read_sha256(path)
    return hashcache.cached("sha256", path, key, lambda: read_sha256(path))


def read_sha256(path: Path) -> str:
    """sha256 of a file's bytes, always read (1 MiB chunks)."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, PurePath):
        return value.as_posix()
    if hasattr(value, "model_dump"):  # pydantic models (config sections)
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    raise TypeError(f"cannot fingerprint a {type(value).__name__}")


def canonical_json(value: Any, *, indent: int | None = None) -> str:
    """JSON with sorted keys and a fixed layout, so equal values encode to equal text."""
    separators = (",", ":") if indent is None else (",", ": ")
    return json.dumps(
        value,
        sort_keys=True,
        separators=separators,
        ensure_ascii=False,
        default=_jsonable,
        indent=indent,
        allow_nan=False,
    )


def digest(*parts: object) -> str:
    """sha256 hex digest of a canonical JSON encoding of `parts` (dict key order does not matter)."""
    return hashlib.sha256(canonical_json(list(parts)).encode("utf-8")).hexdigest()
