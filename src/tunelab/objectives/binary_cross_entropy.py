"""Binary cross-entropy of one logit per label (multi-label classification): one term per row and label."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.objectives.base import OBJECTIVES, Objective

if TYPE_CHECKING:
    from tunelab.config.schema import BinaryCrossEntropyObjective

MAX_BALANCED_WEIGHT = 100.0  #: a label seen in 1 of 10,000 rows would otherwise weigh 9,999


@OBJECTIVES.register("binary-cross-entropy")
class BinaryCrossEntropy(Objective["BinaryCrossEntropyObjective"]):
    name = "binary-cross-entropy"
    consumes = "label-logits"

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, targets = self.task.loss_logits(model, batch)  # [rows, labels] each
        weight = self.positive_weights()
        return F.binary_cross_entropy_with_logits(
            logits, targets, pos_weight=None if weight is None else weight.to(logits.device), reduction="sum")

    def positive_weights(self) -> torch.Tensor | None:
        """Each label's weight of positive terms (`pos_weight`), from the task's training label counts."""
        setting = self.settings.pos_weight
        if setting == "none":
            return None
        names, positives, rows = self.task.label_prevalence()  # type: ignore[attr-defined]
        if setting == "balanced":
            counts = torch.as_tensor(positives, dtype=torch.float32)
            return ((rows - counts) / counts.clamp(min=1)).clamp(min=1.0 / MAX_BALANCED_WEIGHT, max=MAX_BALANCED_WEIGHT)
        return torch.tensor([float(setting.get(name, 1.0)) for name in names])  # type: ignore[union-attr]
