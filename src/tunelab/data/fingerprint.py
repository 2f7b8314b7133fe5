"""Content fingerprints of data files, and canonical digests for cache keys."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path, PurePath
from typing import Any

from tunelab.data.loading import Table

CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _file_entry(table: Table, path: Path) -> dict[str, Any]:
    stat = path.stat()
    known = table.hashes.get(path)
    # load_table already hashed the file; reuse that unless the file changed since.
    if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
        sha = known[2]
    else:
        sha = file_sha256(path)
    return {"path": str(path), "sha256": sha, "bytes": stat.st_size}


def fingerprint_table(table: Table) -> dict[str, Any]:
    """{"split", "files": [{"path", "sha256", "bytes"}], "rows"} for run records and cache keys."""
    return {
        "split": table.split,
        "files": [_file_entry(table, path) for path in table.files],
        "rows": table.dataset.num_rows,
    }


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
