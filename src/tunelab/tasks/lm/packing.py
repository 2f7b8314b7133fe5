"""Packing several samples into one row: best-fit decreasing bin packing.

A packed row keeps each sample's own position ids (0, 1, ... per sample). transformers reads a
reset in position ids as a sample boundary and builds a block-diagonal causal mask (and uses
flash-attention varlen where it is available), so no token attends to another sample.
"""

from __future__ import annotations

import bisect
from typing import Any

from tunelab.objectives.base import IGNORE


def best_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins of total length <= capacity; each item goes, longest first, into
    the fullest bin it still fits. Deterministic: ties keep index order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted
    for i in order:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"item {i} has length {size} > capacity {capacity}")
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            remaining, b = free.pop(at)
        else:
            remaining, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if remaining - size > 0:
            bisect.insort(free, (remaining - size, b))
    return bins


def pack_rows(rows: dict[str, list[Any]], capacity: int) -> dict[str, list[Any]]:
    """Pack columns `input_ids`/`labels` (one list per sample) into rows of <= capacity tokens with
    per-sample `position_ids`; `samples` counts the samples in each packed row."""
    lengths = [len(ids) for ids in rows["input_ids"]]
    out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "position_ids": [], "length": [], "samples": []}
    for members in best_fit_decreasing(lengths, capacity):
        ids, labels, positions = [], [], []
        for i in members:
            ids += rows["input_ids"][i]
            sample_labels = list(rows["labels"][i])
            sample_labels[0] = IGNORE  # never predict a sample's first token from the previous sample
            labels += sample_labels
            positions += range(lengths[i])
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["position_ids"].append(positions)
        out["length"].append(len(ids))
        out["samples"].append(len(members))
    return out
