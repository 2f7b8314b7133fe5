"""Losses of embedding pairs (the embedding task): in-batch-negatives contrastive, triplet and cosine
regression of scored pairs, written as sentence-transformers' MultipleNegativesRankingLoss,
TripletLoss and CosineSimilarityLoss compute them (tests/test_embedding.py checks each against it) but
as sums, so the engine can normalise by the global count of anchors."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.objectives.base import OBJECTIVES, Objective

if TYPE_CHECKING:
    from tunelab.config.schema import ContrastiveObjective, TripletObjective


class _PairObjective(Objective[Any]):
    consumes = "embeddings"

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        """Anchors in the batch (texts: anchor_input_ids, images: anchor_pixel_values)."""
        return int(next(v for k, v in batch.items() if k.startswith("anchor_")).shape[0])

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.terms(self.task.pair_embeddings(model, batch), batch)  # type: ignore[attr-defined]

    def terms(self, sides: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


def cosine_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


@OBJECTIVES.register("contrastive")
class Contrastive(_PairObjective):
    """Row i's positive is the right answer among all positives (and hard negatives) of the micro-batch:
    cross-entropy over scaled cosine similarities. Negatives come from this process's micro-batch; where
    the batch names groups (labelled images), other rows of the anchor's group are left out of them."""

    name = "contrastive"
    settings: ContrastiveObjective

    def terms(self, sides: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        candidates = torch.cat([sides["positive"], *([sides["negative"]] if "negative" in sides else [])])
        scores = cosine_matrix(sides["anchor"], candidates) * self.settings.scale
        target = torch.arange(len(scores), device=scores.device)
        if "anchor_group" in batch:
            scores = scores.masked_fill(false_negatives(batch, len(candidates)), float("-inf"))
        return F.cross_entropy(scores, target, reduction="sum")


def false_negatives(batch: dict[str, torch.Tensor], candidates: int) -> torch.Tensor:
    """[anchors, candidates] True where another row's positive is of the anchor's own group (labelled
    images: the same class), so it is no negative; each anchor's own positive stays."""
    anchor, positive = batch["anchor_group"], batch["positive_group"]
    same = anchor[:, None] == positive[None, :]
    same &= ~torch.eye(len(anchor), dtype=torch.bool, device=same.device)
    return F.pad(same, (0, candidates - same.shape[1]), value=False)


@OBJECTIVES.register("triplet")
class Triplet(_PairObjective):
    name = "triplet"
    settings: TripletObjective

    def terms(self, sides: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.settings.distance == "cosine":
            def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return 1 - F.cosine_similarity(a, b)
        else:
            def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                return F.pairwise_distance(a, b, p=2)
        anchor = sides["anchor"]
        gap = distance(anchor, sides["positive"]) - distance(anchor, sides["negative"]) + self.settings.margin
        return F.relu(gap).sum()


@OBJECTIVES.register("cosine-similarity")
class CosineSimilarity(_PairObjective):
    name = "cosine-similarity"
    default_metric = "spearman"

    def terms(self, sides: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        similarity = F.cosine_similarity(sides["anchor"], sides["positive"])
        return F.mse_loss(similarity, batch["score"].to(similarity.dtype), reduction="sum")
