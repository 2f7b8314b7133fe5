"""Classification metrics (scikit-learn): accuracy, macro/weighted F1, per-class scores, confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Metrics over all `names`, including classes absent from this split (their scores are 0)."""
    ids = list(range(len(names)))
    if len(labels) == 0:
        return {"accuracy": float("nan"), "macro_f1": float("nan"), "weighted_f1": float("nan"), "support": 0}
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predictions, labels=ids, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, predictions, labels=ids, average="weighted", zero_division=0)),
        "support": int(len(labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)
        },
        "confusion_matrix": {"labels": names, "matrix": confusion_matrix(labels, predictions, labels=ids).tolist()},
    }
