"""Multi-label metrics (scikit-learn) over a [rows, labels] 0/1 matrix, and threshold tuning."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
)

#: candidate thresholds of the global search (one threshold for every label)
GLOBAL_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def multi_label_metrics(
    labels: np.ndarray, probs: np.ndarray, thresholds: np.ndarray, names: list[str]
) -> dict[str, Any]:
    """Micro, macro and per-sample F1, subset accuracy and mean average precision of `probs` [rows,
    labels] against the 0/1 `labels`; a label is predicted where its probability reaches its threshold.

    Labels with no positive row in this split score 0 F1 in the macro mean (as scikit-learn with
    zero_division=0) and are left out of mAP, whose average precision is undefined for them."""
    if len(labels) == 0:
        return {name: float("nan") for name in ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "map")}
    truth = labels.astype(np.int64)
    predicted = (probs >= thresholds[None, :]).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    present = truth.sum(0) > 0
    mean_ap = float(average_precision_score(truth[:, present], probs[:, present], average="macro")) \
        if present.any() else float("nan")
    return {
        "micro_f1": float(f1_score(truth, predicted, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "samples_f1": float(f1_score(truth, predicted, average="samples", zero_division=0)),
        "micro_precision": float(precision_score(truth, predicted, average="micro", zero_division=0)),
        "micro_recall": float(recall_score(truth, predicted, average="micro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(truth, predicted)),
        "map": mean_ap,
        "support": int(len(labels)),
        "per_label": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s),
                   "threshold": float(t)}
            for name, p, r, f, s, t in zip(names, precision, recall, f1, support, thresholds)
        },
    }


def tune_thresholds(labels: np.ndarray, probs: np.ndarray, mode: str, default: float) -> np.ndarray:
    """Thresholds maximising F1 on these rows: per label (each label's own F1), or one for all labels
    (micro F1 over a 0.01 grid). A label without positive rows keeps `default`: nothing to tune on."""
    count = labels.shape[1]
    if mode == "global":
        truth = labels.astype(np.int64)
        scores = [f1_score(truth, (probs >= t).astype(np.int64), average="micro", zero_division=0)
                  for t in GLOBAL_GRID]
        return np.full(count, float(GLOBAL_GRID[int(np.argmax(scores))]))
    tuned = np.full(count, default)
    for j in range(count):
        if labels[:, j].sum() == 0:
            continue
        precision, recall, cuts = precision_recall_curve(labels[:, j], probs[:, j])
        f1 = 2 * precision[:-1] * recall[:-1] / np.clip(precision[:-1] + recall[:-1], 1e-12, None)
        tuned[j] = float(cuts[int(np.argmax(f1))])  # the first (lowest) of equally good cuts
    return tuned
