"""Answers scored against references: exact match and ROUGE-L F1."""

from __future__ import annotations


def score(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Exact match (after stripping whitespace) and ROUGE-L F1 (rouge-score, stemmed), averaged."""
    from rouge_score import rouge_scorer

    if not predictions:
        return {"exact_match": float("nan"), "rouge_l": float("nan")}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    exact = [p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)]
    rouge = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]
    return {"exact_match": sum(exact) / len(exact), "rouge_l": sum(rouge) / len(rouge)}
