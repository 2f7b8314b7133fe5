"""Summary statistics of tokenized splits (for data.json and reports)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import datasets


def length_histogram(dataset: datasets.Dataset, max_length: int, bins: int = 40) -> dict[str, Any]:
    """Token lengths of a split as a histogram over [0, max_length], with how many rows were cut at
    max_length (the `truncated` column where the task keeps one)."""
    lengths = np.asarray(dataset.select_columns(["length"]).with_format("numpy")[:]["length"], dtype=np.int64)
    counts, edges = np.histogram(lengths, bins=bins, range=(0, max(max_length, int(lengths.max(initial=1)))))
    truncated = 0
    if "truncated" in dataset.column_names:
        truncated = int(np.asarray(dataset.select_columns(["truncated"]).with_format("numpy")[:]["truncated"]).sum())
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts], "max_length": max_length,
            "truncated": truncated, "rows": int(len(lengths)),
            "p50": int(np.percentile(lengths, 50)) if len(lengths) else 0,
            "p95": int(np.percentile(lengths, 95)) if len(lengths) else 0}
