"""Content fingerprints of data files, and canonical digests for cache keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.data.loading import Table
from tunelab.hashing import CHUNK, canonical_json, digest, file_sha256

__all__ = ["CHUNK", "canonical_json", "digest", "file_sha256", "fingerprint_table"]


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
