"""Supervised fine-tuning: next-token cross-entropy over the trained tokens of a causal LM.

Which tokens are trained is decided by rendering (lm.train_on, tasks/lm/); the task's decoder hook
hands the LM head only those positions, so `loss_sum` never sees prompt logits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.objectives.base import IGNORE, OBJECTIVES, Objective

if TYPE_CHECKING:
    from tunelab.config.schema import SftObjective


@OBJECTIVES.register("sft")
class SFT(Objective["SftObjective"]):
    name = "sft"
    consumes = "next-token-logits"

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["targets"] != IGNORE).sum())

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, targets = self.task.loss_logits(model, batch)
        return F.cross_entropy(logits, targets, reduction="sum")
