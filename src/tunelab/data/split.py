"""Deterministic stratified train/held-out split."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tunelab.data.columns import arrow_column
from tunelab.errors import DataError

logger = logging.getLogger(__name__)


def stratified_split(
    dataset: datasets.Dataset, label_column: str, size: float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split into (kept, held_out) with about `size` of the rows held out, stratified by label.

    Deterministic for a given seed and data (numpy PCG64; no global RNG state). Each class gets
    floor or ceil of its share, so class proportions hold within one row; every class with >= 2
    rows lands on both sides (even if that holds out a little more than `size`). When a class has
    a single row, stratifying is impossible: the split is unstratified, with a warning. Both sides
    keep the original row order.
    """
    total = dataset.num_rows
    if not 0 < size < 1:
        raise ValueError(f"size must be between 0 and 1, got {size}")
    if total < 2:
        raise DataError(f"cannot split {total} row(s) into two parts", fix="add rows, or provide the split as a file")
    target = min(max(round(size * total), 1), total - 1)
    codes = _label_codes(dataset, label_column)
    rng = np.random.default_rng(seed)
    counts = np.bincount(codes)
    singles = int((counts == 1).sum())
    if singles:
        logger.warning(
            "%d label value(s) of %r occur in a single row; splitting without stratification",
            singles,
            label_column,
        )
        held = rng.permutation(total)[:target]
    else:
        held = _stratified_indices(codes, counts, size, target, rng)
    mask = np.zeros(total, dtype=bool)
    mask[held] = True
    return dataset.select(np.flatnonzero(~mask)), dataset.select(np.flatnonzero(mask))


def _label_codes(dataset: datasets.Dataset, label_column: str) -> np.ndarray:
    """One small integer per row identifying its label (nulls form their own class)."""
    column = arrow_column(dataset, label_column)
    try:
        encoded = pc.dictionary_encode(column, null_encoding="encode")
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as err:
        raise DataError(
            f"cannot stratify by column {label_column!r} of type {column.type}",
            fix="use a column of strings or integers as the label",
        ) from err
    return np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in encoded.chunks]).astype(np.int64)


def _stratified_indices(
    codes: np.ndarray, counts: np.ndarray, size: float, target: int, rng: np.random.Generator
) -> np.ndarray:
    ideal = counts * size
    low = np.floor(ideal).astype(np.int64)
    high = np.minimum(np.ceil(ideal).astype(np.int64), counts - 1)
    take = np.maximum(low, 1)  # both sides get every class (counts >= 2 here)
    # Hand out the remaining rows by largest fractional share; ties broken by the seeded RNG.
    room = np.flatnonzero(take < high)
    missing = target - int(take.sum())
    if missing > 0 and len(room):
        frac = (ideal - low)[room]
        order = room[np.lexsort((rng.random(len(room)), -frac))]
        take[order[:missing]] += 1
    if take.sum() != target:
        logger.warning(
            "holding out %d rows instead of %d so that every label appears on both sides", int(take.sum()), target
        )
    order = np.argsort(codes, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    held = [rng.permutation(order[bounds[k] : bounds[k + 1]])[: take[k]] for k in range(len(counts))]
    return np.concatenate(held) if held else np.empty(0, dtype=np.int64)



def random_split(
    dataset: datasets.Dataset, size: float, seed: int, what: str = "held-out"
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split into (kept, held_out), about `size` of the rows held out at random (seeded); both sides
    keep the original row order. For rows without a single label (conversations, tagged sentences)."""
    total = len(dataset)
    if total < 2:
        raise DataError(f"cannot hold out a {what} split from {total} row(s)", fix=f"add rows, or give data.{what} as a file")
    n = min(max(round(size * total), 1), total - 1)
    order = np.random.default_rng(seed).permutation(total)
    return dataset.select(np.sort(order[n:])), dataset.select(np.sort(order[:n]))


Splitter = Callable[["datasets.Dataset", float, str], tuple["datasets.Dataset", "datasets.Dataset"]]


def hold_out_missing(
    splits: dict[str, Any], validation_size: float, test_size: float, split: Splitter
) -> tuple[dict[str, Any], list[str]]:
    """Carve test and then validation out of `splits["train"]` when they are absent; `split(ds, size,
    what)` returns (kept, held_out). Returns the splits in train/validation/test order and which were
    derived. validation_size is a fraction of the original train data, not of what remains."""
    derived = []
    if "test" not in splits:
        splits["train"], splits["test"] = split(splits["train"], test_size, "test")
        derived.append("test")
    if "validation" not in splits:
        remaining = 1.0 - (test_size if "test" in derived else 0.0)
        size = min(validation_size / remaining, 0.5)
        splits["train"], splits["validation"] = split(splits["train"], size, "validation")
        derived.append("validation")
    return {name: splits[name] for name in ("train", "validation", "test")}, derived
