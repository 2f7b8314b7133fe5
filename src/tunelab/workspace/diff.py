"""`tunelab data diff A B`: what changed between two dataset versions, file by file and row by row.

Rows are matched by a key column when there is one (`--key`, or an `id` column in both versions):
same key with different content is *changed*. Without a key, rows are compared as a multiset of
their canonical JSON; a row that differs at the same position, where neither side's row appears
anywhere in the other version, counts as changed (an edit in place) rather than one removed plus
one added.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tunelab.config.schema import DataConfig
from tunelab.errors import DataError
from tunelab.hashing import canonical_json
from tunelab.workspace.datasets import get_version, version_path

EXAMPLES = 5


def file_changes(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, list[str]]:
    old, new = {f["path"]: f["sha256"] for f in a}, {f["path"]: f["sha256"] for f in b}
    return {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
            "changed": sorted(p for p in set(old) & set(new) if old[p] != new[p])}


def read_rows(path: Path) -> list[dict[str, Any]]:
    # data loading imports datasets and pandas; the other workspace commands do not need them
    from tunelab.data.loading import load_table

    table = load_table(path, DataConfig(train=str(path)), "train")
    return table.dataset.to_list()


def row_changes(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
    if key is None and a and b and "id" in a[0] and "id" in b[0]:
        key = "id"
    if key is not None:
        return _by_key(a, b, key)
    return _by_content(a, b)


def _by_key(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> dict[str, Any]:
    for side, rows in (("first", a), ("second", b)):
        if rows and key not in rows[0]:
            raise DataError(f"--key {key}: the {side} version has no column {key!r}",
                            fix=f"columns: {', '.join(rows[0])}")
    old = {canonical_json(r[key]): r for r in a}
    new = {canonical_json(r[key]): r for r in b}
    added = [k for k in new if k not in old]
    removed = [k for k in old if k not in new]
    changed = [k for k in new if k in old and canonical_json(old[k]) != canonical_json(new[k])]
    return {"key": key, "rows_before": len(a), "rows_after": len(b), "added": len(added), "removed": len(removed),
            "changed": len(changed), "unchanged": len(new) - len(added) - len(changed),
            "examples": {"added": [new[k] for k in added[:EXAMPLES]], "removed": [old[k] for k in removed[:EXAMPLES]],
                         "changed": [{"before": old[k], "after": new[k]} for k in changed[:EXAMPLES]]}}


def _by_content(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    old = [canonical_json(r) for r in a]
    new = [canonical_json(r) for r in b]
    old_set, new_set = set(old), set(new)
    changed = [i for i in range(min(len(a), len(b)))
               if old[i] != new[i] and old[i] not in new_set and new[i] not in old_set]
    in_place = set(changed)
    removed = Counter(o for i, o in enumerate(old) if i not in in_place) - Counter(n for i, n in enumerate(new)
                                                                                   if i not in in_place)
    added = Counter(n for i, n in enumerate(new) if i not in in_place) - Counter(o for i, o in enumerate(old)
                                                                                 if i not in in_place)
    decode = _decoder(a, b, old, new)
    return {"key": None, "rows_before": len(a), "rows_after": len(b), "added": sum(added.values()),
            "removed": sum(removed.values()), "changed": len(changed),
            "unchanged": len(b) - sum(added.values()) - len(changed),
            "examples": {"added": [decode[t] for t in list(added)[:EXAMPLES]],
                         "removed": [decode[t] for t in list(removed)[:EXAMPLES]],
                         "changed": [{"row": i + 1, "before": a[i], "after": b[i]} for i in changed[:EXAMPLES]]}}


def _decoder(a: list[dict[str, Any]], b: list[dict[str, Any]], old: list[str], new: list[str]) -> dict[str, Any]:
    return {**dict(zip(old, a, strict=True)), **dict(zip(new, b, strict=True))}


def diff_versions(ws: Any, first: str, second: str, *, key: str | None = None) -> dict[str, Any]:
    """Files added/removed/changed, and row changes per data file (a file version is its one file)."""
    with ws.read() as session:
        a, b = get_version(session, first), get_version(session, second)
        refs = (a.ref, b.ref)
    path_a, path_b = version_path(ws, a), version_path(ws, b)
    result: dict[str, Any] = {"from": refs[0], "to": refs[1], "same_bytes": a.sha256 == b.sha256}
    if a.kind == "file" and b.kind == "file":
        result["files"] = {"added": [], "removed": [], "changed": [] if a.sha256 == b.sha256 else [path_b.name]}
        result["rows"] = {path_b.name: row_changes(read_rows(path_a), read_rows(path_b), key)}
        return result
    if a.kind != b.kind:
        raise DataError(f"{refs[0]} is a {a.kind} and {refs[1]} a {b.kind}", fix="compare versions of the same kind")
    result["files"] = file_changes(a.files, b.files)
    result["rows"] = {name: row_changes(read_rows(path_a / name), read_rows(path_b / name), key)
                      for name in result["files"]["changed"] if _is_rows(path_a / name)}
    return result


def _is_rows(path: Path) -> bool:
    return path.suffix.lower() in (".jsonl", ".json", ".csv", ".tsv", ".parquet")
