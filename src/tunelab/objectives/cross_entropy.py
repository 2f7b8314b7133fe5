"""Cross-entropy of a classification head: one term per row (text and image classification) or per
labelled token (token classification; unlabelled sub-tokens and padding carry IGNORE)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.objectives.base import IGNORE, OBJECTIVES, Objective

if TYPE_CHECKING:
    from tunelab.config.schema import CrossEntropyObjective


@OBJECTIVES.register("cross-entropy")
class CrossEntropy(Objective["CrossEntropyObjective"]):
    name = "cross-entropy"
    consumes = "class-logits"

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, labels = self.task.loss_logits(model, batch)  # [..., classes] and [...]
        return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE, reduction="sum",
                               label_smoothing=self.settings.label_smoothing)
