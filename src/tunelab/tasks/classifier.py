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
    import datasets

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

    def train_sample(self, data: PreparedData, rows: int, seed: int) -> tuple[datasets.Dataset, np.ndarray] | None:
        train = data.train
        if train is None or not rows or not len(train):
            return None
        indices = np.arange(len(train))
        if len(train) > rows:
            indices = np.sort(np.random.default_rng(seed).choice(len(train), rows, replace=False))
            train = train.select(indices)
        if "augment" in train.column_names:  # image rows: scored with the evaluation transform
            train = train.remove_columns("augment")
        return train, indices

    def label_probability(self, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
        labels = outputs["labels"]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):  # multi-label, regression targets
            return None
        return _softmax(outputs["logits"])[np.arange(len(labels)), labels]

    def label_suspects(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int,
        earlier_sum: list[float], earlier: int,
    ) -> list[dict[str, Any]]:
        # Dataset cartography (Swayamdipta et al., 2020): a wrong label stays improbable while the
        # clean rows are learned, so its mean probability over training is low even once the model
        # has memorised it; the final outputs alone miss every memorised one.
        final = self.label_probability(outputs)
        if final is None:
            return []
        probs = _softmax(outputs["logits"])
        if len(earlier_sum) != len(final):  # a sample of another size (resumed with other settings)
            earlier_sum, earlier = [0.0] * len(final), 0
        confidence = (np.asarray(earlier_sum, dtype=np.float64) + final) / (earlier + 1)
        names = data.info["labels"]
        return [
            {"row": int(i), "label": names[int(outputs["labels"][i])], "predicted": names[int(probs[i].argmax())],
             "score": float(probs[i].max()), "confidence": float(confidence[i]), "scorings": earlier + 1,
             "input": self.describe_row(dataset, int(i))}
            for i in np.argsort(confidence, kind="stable")[:k]
        ]

    def describe_row(self, dataset: datasets.Dataset, row: int) -> str:
        """The input of one row, readable (text: decoded tokens; images: the path)."""
        raise NotImplementedError

    def baseline_outputs(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, np.ndarray]:
        # scikit-learn: see compute_metrics
        from tunelab.metrics.classification import majority_outputs

        return majority_outputs(outputs, data.info["labels"], data.info["label_counts"]["train"])


def _softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)
