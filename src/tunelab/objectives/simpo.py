"""SimPO (Meng et al., 2024), reference-free: an answer's reward is beta times its per-token mean
log-probability, and chosen must beat rejected by a margin gamma.

    loss = -log sigmoid(beta * (p_c - p_r) - gamma)       (label smoothing as in DPO)

As TRL's CPOTrainer with loss_type "simpo" and cpo_alpha 0 (its `simpo_gamma` is our gamma).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tunelab.objectives.base import OBJECTIVES
from tunelab.objectives.preference import PairObjective, PairScores, sigmoid_loss

if TYPE_CHECKING:
    from tunelab.config.schema import SimpoObjective


@OBJECTIVES.register("simpo")
class SimPO(PairObjective["SimpoObjective"]):
    name = "simpo"

    def pair_losses(self, scores: PairScores) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        beta, gamma = self.settings.beta, self.settings.gamma
        chosen, rejected = scores.chosen_mean, scores.rejected_mean
        losses = sigmoid_loss(chosen - rejected - gamma / beta, beta, self.settings.label_smoothing)
        return losses, beta * chosen.detach(), beta * rejected.detach()
