"""Retrieval metrics of queries ranked against a corpus: recall@k, MRR@10 and nDCG@10 with binary
relevance (sentence-transformers' InformationRetrievalEvaluator reads the same way)."""

from __future__ import annotations

from typing import Any

import numpy as np

RECALL_AT = (1, 5, 10)
CUTOFF = 10


def retrieval_metrics(scores: np.ndarray, relevant: list[set[int]]) -> dict[str, Any]:
    """`scores` [queries, documents] (higher: closer); `relevant[q]` the documents that answer query q.

    recall@k: the share of a query's relevant documents among its top k, averaged over queries;
    hit@k: the share of queries with a relevant document in their top k (what metric-learning papers
    call Recall@K, the measure of labelled visual search); precision@10: relevant share of the top 10;
    MRR@10: 1 / rank of the first relevant document within the top 10 (0 beyond); nDCG@10: DCG of the
    top 10 (1 / log2(rank + 1) per relevant document) over the best DCG the query could reach."""
    if len(relevant) == 0:
        return {**{f"{m}@{k}": float("nan") for m in ("recall", "hit") for k in RECALL_AT},
                "precision@10": float("nan"), "mrr@10": float("nan"), "ndcg@10": float("nan")}
    depth = min(max(max(RECALL_AT), CUTOFF), scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    recall: dict[int, list[float]] = {k: [] for k in RECALL_AT}
    hit: dict[int, list[float]] = {k: [] for k in RECALL_AT}
    mrr, ndcg, precision = [], [], []
    discounts = 1.0 / np.log2(np.arange(2, CUTOFF + 2))
    for ranked, wanted in zip(top, relevant):
        hits = np.array([doc in wanted for doc in ranked], dtype=np.float64)
        for k in RECALL_AT:
            recall[k].append(hits[:k].sum() / len(wanted))
            hit[k].append(float(hits[:k].any()))
        precision.append(hits[:CUTOFF].sum() / min(CUTOFF, len(hits)))
        first = np.flatnonzero(hits[:CUTOFF])
        mrr.append(1.0 / (first[0] + 1) if len(first) else 0.0)
        dcg = float((hits[:CUTOFF] * discounts[: len(hits[:CUTOFF])]).sum())
        ideal = float(discounts[: min(len(wanted), CUTOFF)].sum())
        ndcg.append(dcg / ideal)
    return {**{f"recall@{k}": float(np.mean(v)) for k, v in recall.items()},
            **{f"hit@{k}": float(np.mean(v)) for k, v in hit.items()}, "precision@10": float(np.mean(precision)),
            "mrr@10": float(np.mean(mrr)),
            "ndcg@10": float(np.mean(ndcg)), "queries": len(relevant), "documents": int(scores.shape[1])}
