"""What text and image classification share: a head with one logit per class, trained by the
cross-entropy objective, scored with scikit-learn's metrics and compared with the majority class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.tasks.base import PreparedData, Task

if TYPE_CHECKING:
    from tunelab.config import Config


class ClassifierTask(Task):
    """Base of single-label classifiers; subclasses give `_logits` (the head's [batch, classes] output)."""

    outputs = ("class-logits",)
    default_objective = "cross-entropy"
    servable_as = "predict"

    @classmethod
    def label_columns(cls, config: Config) -> list[str]:
        return [config.data.label_column]

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._logits(model, batch), batch["labels"]

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        logits = self._logits(model, batch)
        losses = F.cross_entropy(logits, batch["labels"], reduction="none")
        return {"logits": logits.cpu().numpy(), "labels": batch["labels"].cpu().numpy(), "loss": losses.cpu().numpy()}

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        # scikit-learn adds ~1 s of import; predict, preview and data check build a task and need none of it
        from tunelab.metrics.classification import classification_metrics

        metrics = classification_metrics(outputs["labels"], outputs["logits"].argmax(-1), data.info["labels"])
        metrics["loss"] = float(outputs["loss"].mean()) if len(outputs["loss"]) else float("nan")
        return metrics

    def baseline_outputs(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, np.ndarray]:
        # scikit-learn: see compute_metrics
        from tunelab.metrics.classification import majority_outputs

        return majority_outputs(outputs, data.info["labels"], data.info["label_counts"]["train"])
