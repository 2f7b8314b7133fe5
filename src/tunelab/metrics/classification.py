"""Classification metrics (scikit-learn): accuracy, macro/weighted F1, per-class scores, confusion matrix."""

from __future__ import annotations

from collections.abc import Callable
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


def majority_outputs(
    outputs: dict[str, np.ndarray], names: list[str], train_counts: dict[str, int]
) -> dict[str, np.ndarray]:
    """Evaluation outputs of the majority-class baseline: every row gets the training label
    distribution as its prediction, so it predicts the most frequent class and its loss is the
    cross-entropy of the class prior (what a model that ignores its input can reach)."""
    counts = np.array([train_counts.get(name, 0) for name in names], dtype=np.float64)
    prior = np.clip(counts / counts.sum(), 1e-12, None)
    labels = outputs["labels"]
    logits = np.tile(np.log(prior), (len(labels), 1)).astype(np.float32)
    return {**outputs, "logits": logits, "loss": -np.log(prior[labels]) if len(labels) else np.zeros(0)}


def worst_rows(
    outputs: dict[str, np.ndarray], names: list[str], k: int, describe: Callable[[int], str]
) -> list[dict[str, Any]]:
    """The k rows with the highest loss: the input (`describe(row)`), label, prediction and its probability."""
    logits = outputs["logits"].astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    order = np.argsort(-outputs["loss"], kind="stable")[:k]
    return [
        {"row": int(i), "label": names[int(outputs["labels"][i])], "predicted": names[int(probs[i].argmax())],
         "score": float(probs[i].max()), "loss": float(outputs["loss"][i]), "input": describe(int(i))}
        for i in order
    ]
