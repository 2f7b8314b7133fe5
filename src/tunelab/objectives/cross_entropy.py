"""Cross-entropy of a classification head: one term per row (text and image classification) or per
labelled token (token classification; unlabelled sub-tokens and padding carry IGNORE)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from tunelab.errors import ConfigError
from tunelab.objectives.base import IGNORE, OBJECTIVES, Objective

if TYPE_CHECKING:
    from tunelab.config.schema import CrossEntropyObjective
    from tunelab.engine import Trainer


@OBJECTIVES.register("cross-entropy")
class CrossEntropy(Objective["CrossEntropyObjective"]):
    name = "cross-entropy"
    consumes = "class-logits"

    weight: torch.Tensor | None = None

    def before_training(self, trainer: Trainer) -> None:
        if self.settings.class_weights == "balanced":
            self.weight = balanced_weights(trainer.data.info).to(trainer.accelerator.device)

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"] != IGNORE).sum())

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits, labels = self.task.loss_logits(model, batch)  # [..., classes] and [...]
        return F.cross_entropy(logits.flatten(0, -2), labels.flatten(), ignore_index=IGNORE, reduction="sum",
                               label_smoothing=self.settings.label_smoothing, weight=self.weight)


def balanced_weights(info: dict[str, Any]) -> torch.Tensor:
    """N / (classes x count) per class, in label order (scikit-learn's compute_class_weight('balanced'))."""
    labels, counts = info.get("labels") or [], (info.get("label_counts") or {}).get("train") or {}
    missing = [label for label in labels if not counts.get(label)]
    if not labels or missing:
        raise ConfigError("objective.class_weights: balanced needs a training count for every class; "
                          f"{', '.join(map(str, missing[:5])) or 'none'} have none",
                          fix="use objective.class_weights: none for this task")
    total = sum(counts[label] for label in labels)
    return torch.tensor([total / (len(labels) * counts[label]) for label in labels], dtype=torch.float32)
