"""Losses of predicted values (regression): mean squared error and Huber, one term per row and target.
Targets arrive standardized when `regression.standardize` is on (the task scales them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.objectives.base import OBJECTIVES, Objective

if TYPE_CHECKING:
    from tunelab.config.schema import HuberObjective


class _ValueObjective(Objective[Any]):
    consumes = "values"

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["labels"].numel())

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        predicted, targets = self.task.loss_logits(model, batch)  # [rows, targets] each
        return self.terms(predicted, targets)

    def terms(self, predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@OBJECTIVES.register("mse")
class MeanSquaredError(_ValueObjective):
    name = "mse"

    def terms(self, predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(predicted, targets, reduction="sum")


@OBJECTIVES.register("huber")
class Huber(_ValueObjective):
    name = "huber"
    settings: HuberObjective

    def terms(self, predicted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(predicted, targets, delta=self.settings.delta, reduction="sum")
