"""A persistent memo of content hashes, keyed by what the filesystem says about each file.

Hashing the same bytes again is most of what small runs repeat: a 500 MB model fingerprinted on every
resolve, a GGUF file hashed to find its converted folder, data files hashed by lineage, the loader
and the data check. A hash is reused only while the file's size, modification time, *change* time,
inode and device are all unchanged. The change time (ctime) cannot be set by a user — editing the
bytes and restoring the modification time with `touch -d` still moves it — so a changed file is
never served a stale hash; an unchanged one is not read again.

Small files are hashed directly (reading them is cheaper than the lookup). The memo lives in the
tunelab cache (`hashes.sqlite`); if it cannot be opened or written, hashing simply happens.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from tunelab.paths import cache_dir

MIN_BYTES = 1 << 20  # below this, hashing is cheaper than looking the hash up
_local = threading.local()
_disabled = False


def stat_key(path: Path) -> str:
    """What must be unchanged for a memoised hash of `path` to stand."""
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def cached(kind: str, path: Path, key: str, compute: Callable[[], str]) -> str:
    """`compute()`, or the value stored for (kind, path, key) by an earlier call."""
    db = _connection()
    name = str(Path(path).resolve())
    if db is not None:
        try:
            row = db.execute("SELECT digest FROM hashes WHERE kind = ? AND path = ? AND stat = ?",
                             (kind, name, key)).fetchone()
            if row is not None:
                return row[0]
        except sqlite3.Error:
            db = None
    value = compute()
    if db is not None:
        try:
            with db:
                db.execute("INSERT OR REPLACE INTO hashes (kind, path, stat, digest) VALUES (?, ?, ?, ?)",
                           (kind, name, key, value))
        except sqlite3.Error:
            pass  # a read-only or busy cache costs a re-hash next time, nothing else
    return value


def _connection() -> sqlite3.Connection | None:
    global _disabled
    if _disabled or os.environ.get("TUNELAB_HASH_CACHE") == "0":
        return None
    db = getattr(_local, "db", None)
    pid = getattr(_local, "pid", None)
    if db is not None and pid == os.getpid():
        return db
    try:
        db = sqlite3.connect(cache_dir() / "hashes.sqlite", timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS hashes (kind TEXT, path TEXT, stat TEXT, digest TEXT, "
                   "PRIMARY KEY (kind, path))")
    except (sqlite3.Error, OSError):
        _disabled = True
        return None
    _local.db, _local.pid = db, os.getpid()
    return db
