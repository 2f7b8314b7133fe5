"""Exact and near-duplicate rows, within a split and between splits (leakage).

Why: duplicated training rows get extra weight, and a test row that also sits in train (verbatim or
with a word changed) makes test metrics measure memory, not generalisation. Exact duplicates compare
a hash of the normalised text (casefolded, whitespace collapsed). Near duplicates use datasketch:
MinHash signatures (128 permutations) of word 3-gram shingles (word 1-grams for rows under three
words), MinHashLSH to find candidates without comparing every pair, and the estimated Jaccard
similarity (`MinHash.jaccard`) >= the threshold to confirm each candidate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

NUM_PERM = 128
SEED = 1
SHINGLE = 3
LSH_MAX_THRESHOLD = 0.95  # datasketch needs at least two bands; candidates are confirmed at the real threshold
_WORD = re.compile(r"\w+")


def normalize(text: str) -> str:
    """Casefolded, whitespace collapsed: what "the same text" means for exact duplicates."""
    return " ".join(text.casefold().split())


def exact_key(text: str) -> str | None:
    """Hash of the normalised text; None for blank text (reported as empty rows, not duplicates)."""
    norm = normalize(text)
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).hexdigest() if norm else None


def shingles(text: str) -> list[bytes]:
    """Word 3-grams of the casefolded words (punctuation dropped); word 1-grams under three words."""
    words = _WORD.findall(text.casefold())
    if len(words) < SHINGLE:
        grams = set(words)
    else:
        grams = {" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}
    return [g.encode("utf-8") for g in sorted(grams)]


@dataclass
class TextIndex:
    """Exact keys and MinHash signatures of one split's row texts, computed once and shared by all checks."""

    keys: list[str | None]
    minhashes: dict[int, MinHash]
    _lsh: dict[float, tuple[MinHashLSH, list[int]]] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, texts: Sequence[str]) -> TextIndex:
        keys = [exact_key(t) for t in texts]
        sets = {i: shingles(t) for i, t in enumerate(texts) if keys[i] is not None}
        rows = [i for i, s in sets.items() if s]
        signatures = MinHash.bulk((sets[i] for i in rows), num_perm=NUM_PERM, seed=SEED)
        return cls(keys, dict(zip(rows, signatures, strict=True)))

    def first_of_key(self) -> dict[str, int]:
        """Each exact key's first row."""
        first: dict[str, int] = {}
        for i, key in enumerate(self.keys):
            if key is not None:
                first.setdefault(key, i)
        return first

    def representatives(self) -> list[int]:
        """One row per exact key (its first), among rows with a signature."""
        return sorted(i for i in self.first_of_key().values() if i in self.minhashes)

    def lsh(self, threshold: float) -> tuple[MinHashLSH, list[int]]:
        """An LSH index over the representatives (built once per threshold), and those rows."""
        if threshold not in self._lsh:
            lsh = MinHashLSH(threshold=min(threshold, LSH_MAX_THRESHOLD), num_perm=NUM_PERM)
            reps = self.representatives()
            with lsh.insertion_session() as session:
                for i in reps:
                    session.insert(i, self.minhashes[i], check_duplication=False)
            self._lsh[threshold] = (lsh, reps)
        return self._lsh[threshold]


@dataclass
class Leakage:
    """Rows of split b that also occur in split a: exact pairs (a_row, b_row) and near (a_row, b_row, jaccard)."""

    exact: list[tuple[int, int]]
    near: list[tuple[int, int, float]]


def exact_groups(index: TextIndex) -> list[list[int]]:
    """Groups (two rows or more) of rows with the same normalised text, in row order."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(index.keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    return [rows for rows in groups.values() if len(rows) > 1]


def near_groups(index: TextIndex, threshold: float) -> list[list[int]]:
    """Groups of rows that are near (not exact) duplicates of each other: connected components of the
    confirmed pairs, one representative row per exact-duplicate group."""
    lsh, reps = index.lsh(threshold)
    parent = {i: i for i in reps}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in reps:
        mine = index.minhashes[i]
        for j in lsh.query(mine):
            if j <= i or find(i) == find(j):
                continue
            if mine.jaccard(index.minhashes[j]) >= threshold:
                parent[find(j)] = find(i)
    components: dict[int, list[int]] = {}
    for i in reps:
        components.setdefault(find(i), []).append(i)
    return [rows for rows in components.values() if len(rows) > 1]


def leakage(a: TextIndex, b: TextIndex, threshold: float) -> Leakage:
    """Rows of b found in a: exactly (same normalised text) or nearly (best confirmed LSH candidate)."""
    first = a.first_of_key()
    exact: list[tuple[int, int]] = []
    near: list[tuple[int, int, float]] = []
    lsh, _ = a.lsh(threshold)
    for j, key in enumerate(b.keys):
        if key is None:
            continue
        if key in first:
            exact.append((first[key], j))
            continue
        mine = b.minhashes.get(j)
        if mine is None:
            continue
        scored = ((mine.jaccard(a.minhashes[i]), i) for i in lsh.query(mine))
        best = max(scored, key=lambda pair: (pair[0], -pair[1]), default=None)
        if best is not None and best[0] >= threshold:
            near.append((best[1], j, best[0]))
    return Leakage(exact, near)
