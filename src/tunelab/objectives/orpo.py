"""ORPO (Hong et al., 2024), reference-free: learn the chosen answer (its next-token loss) while
raising its odds over the rejected one, in one stage and with no reference model.

    p_c, p_r = per-token mean log-probabilities of chosen and rejected
    log_odds = (p_c - p_r) - (log(1 - e^p_c) - log(1 - e^p_r))
    loss     = -p_c - beta * log sigmoid(log_odds)

The chosen answer's loss is its mean per token, one term per pair (TRL averages it over all the
batch's chosen tokens instead: the same when answers are equally long). Rewards are beta * p, as
TRL's ORPOTrainer logs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tunelab.objectives.base import OBJECTIVES
from tunelab.objectives.preference import PairObjective, PairScores

if TYPE_CHECKING:
    from tunelab.config.schema import OrpoObjective


@OBJECTIVES.register("orpo")
class ORPO(PairObjective["OrpoObjective"]):
    name = "orpo"

    def pair_losses(self, scores: PairScores) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        beta = self.settings.beta
        chosen, rejected = scores.chosen_mean, scores.rejected_mean
        # log(1 - e^p) as log(-expm1(p)): exact for p near 0, where log1p(-exp(p)) loses every digit.
        log_odds = (chosen - rejected) - (torch.log(-torch.expm1(chosen)) - torch.log(-torch.expm1(rejected)))
        losses = -chosen - beta * F.logsigmoid(log_odds)
        return losses, beta * chosen.detach(), beta * rejected.detach()
