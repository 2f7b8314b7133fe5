"""Entity-level metrics for tag sequences (seqeval), plus word-level accuracy."""

from __future__ import annotations

from typing import Any


def entity_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict[str, Any]:
    """Micro precision/recall/F1 over entities (an entity counts only with exact type and span),
    macro F1 over types, per-type scores, and word-level tag accuracy."""
    from seqeval.metrics import accuracy_score, classification_report

    if not any(gold):
        return {"f1": float("nan"), "precision": float("nan"), "recall": float("nan"), "macro_f1": float("nan"),
                "token_accuracy": float("nan"), "per_type": {}, "words": 0}
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    micro, macro = report.pop("micro avg"), report.pop("macro avg")
    report.pop("weighted avg", None)
    per_type = {kind: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                       "f1": float(v["f1-score"]), "support": int(v["support"])} for kind, v in report.items()}
    return {
        "f1": float(micro["f1-score"]),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "macro_f1": float(macro["f1-score"]),
        "token_accuracy": float(accuracy_score(gold, pred)),
        "per_type": per_type,
        "words": sum(len(s) for s in gold),
    }
