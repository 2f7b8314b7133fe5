"""DPO (Rafailov et al., 2023): raise the policy's log-probability margin of chosen over rejected
beyond the starting model's, through a logistic loss whose `beta` sets how far it may move.

    logits = (log pi(chosen) - log pi(rejected)) - (log ref(chosen) - log ref(rejected))
    loss   = -log sigmoid(beta * logits)                            (sigmoid; label smoothing mixes
                                                                     in the flipped pair: cDPO)
    loss   = (logits' - 1 / (2 * beta))^2                           (ipo: logits' of per-token means)

The implicit reward of an answer is beta * (log pi - log ref), as TRL's DPOTrainer logs it. The
reference scores are computed once by the shared pair machinery (objectives/preference.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from tunelab.objectives.base import OBJECTIVES
from tunelab.objectives.preference import PairObjective, PairScores, sigmoid_loss

if TYPE_CHECKING:
    from tunelab.config.schema import DpoObjective


@OBJECTIVES.register("dpo")
class DPO(PairObjective["DpoObjective"]):
    name = "dpo"
    uses_reference = True

    def pair_losses(self, scores: PairScores) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        beta = self.settings.beta
        assert scores.ref_chosen is not None and scores.ref_rejected is not None
        if self.settings.loss == "ipo":  # IPO compares per-token means, as the paper and TRL do
            chosen, rejected = scores.chosen_mean, scores.rejected_mean
            ref_chosen = scores.ref_chosen / scores.chosen_tokens
            ref_rejected = scores.ref_rejected / scores.rejected_tokens
        else:
            chosen, rejected, ref_chosen, ref_rejected = (
                scores.chosen, scores.rejected, scores.ref_chosen, scores.ref_rejected)
        logits = (chosen - rejected) - (ref_chosen - ref_rejected)
        if self.settings.loss == "ipo":
            losses = (logits - 1 / (2 * beta)) ** 2
        else:
            losses = sigmoid_loss(logits, beta, self.settings.label_smoothing)
        return losses, beta * (chosen - ref_chosen).detach(), beta * (rejected - ref_rejected).detach()
