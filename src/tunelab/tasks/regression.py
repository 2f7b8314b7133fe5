"""Regression (risk scores, ratings, readability): one or several numbers per text.

The target is `data.label_column`, or one column per target (`data.label_columns`). The head has one
output per target (Hugging Face's `regression` problem type), trained by the mse or huber objective.
With `regression.standardize` (the default) the head learns targets scaled to mean 0 and standard
deviation 1 by the training data, so one learning rate suits a score of 0-1 and a cost in dollars
alike; predictions are scaled back, and the scale is saved with the model (targets.json, and
`target_scale` in model/config.json).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tunelab.data import Table
from tunelab.data.split import random_split
from tunelab.errors import DataError
from tunelab.tasks.base import TASKS, HeldOutSet, PreparedData
from tunelab.tasks.text_classification import TextClassification, label_matrix, scored_as_text_classification

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.config.schema import RetentionSet
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)


@TASKS.register("regression")
class Regression(TextClassification):
    name = "regression"
    metrics = {"rmse": False, "mae": False, "r2": True, "pearson": True, "spearman": True, "loss": False}
    default_metric = "rmse"
    outputs = ("values",)
    default_objective = "mse"
    sections = ("regression",)
    problem_type = "regression"
    label_dtype = torch.float32
    baseline = ("training-mean", "mean", "the training mean of each target")

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.mean = np.zeros(1)
        self.std = np.ones(1)

    @classmethod
    def label_columns(cls, config: Config) -> list[str]:
        return list(config.data.label_columns or [config.data.label_column])

    @classmethod
    def class_labels(cls, config: Config) -> tuple[str, str | None] | None:
        return None  # numbers: no class balance, and a value unseen in training is normal

    # ---- reading targets ------------------------------------------------------------------
    def _label_keys(self, config: Config) -> dict[str, str]:
        if config.data.label_columns:
            return {column: "data.label_columns" for column in config.data.label_columns}
        return super()._label_keys(config)

    def _check_labels_present(self, table: Table, config: Config) -> None:
        for column in self.label_columns(config):
            _numbers(table, column)

    def _label_names(self, train: Table, config: Config) -> list[str]:
        return self.label_columns(config)

    def _label_encoder(self, config: Config, labels: list[str]) -> Callable[[dict[str, list[Any]]], list[Any]]:
        return lambda batch: [[float(v) for v in row] for row in zip(*(batch[c] for c in labels))]

    def _split(self, ds: datasets.Dataset, size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
        return random_split(ds, size, seed)

    def _drop_unseen(
        self, ds: datasets.Dataset, split: str, labels: list[str], info: dict[str, Any]
    ) -> datasets.Dataset:
        return ds

    def _label_info(self, splits: dict[str, datasets.Dataset], labels: list[str]) -> dict[str, Any]:
        stats = {}
        for split, ds in splits.items():
            values = label_matrix(ds, np.float64)
            stats[split] = {name: {"mean": float(values[:, j].mean()), "std": float(values[:, j].std()),
                                   "min": float(values[:, j].min()), "max": float(values[:, j].max())}
                            for j, name in enumerate(labels)} if len(values) else {}
        return {"targets": stats}

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        data = super().prepare(config, tokenizer, model)
        self.names = data.info["labels"]
        self._fit_scale(config, data)
        data.info["scale"] = {"standardize": config.regression.standardize, "mean": self.mean.tolist(),
                              "std": self.std.tolist()}
        return data

    def _fit_scale(self, config: Config, data: PreparedData) -> None:
        """The training split's mean and standard deviation per target (0 and 1 when not standardizing);
        a target with one value throughout cannot be learned, so it stops here."""
        values = label_matrix(data.train, np.float64)
        count = len(self.names)
        for j, name in enumerate(self.names):
            if len(values) and np.ptp(values[:, j]) == 0:
                raise DataError(f"{config.data.train}: target {name!r} is {values[0, j]:g} in every training row",
                                fix="a regression needs targets that vary; check data.label_column")
        if config.regression.standardize and len(values):
            self.mean, self.std = values.mean(0), values.std(0)
        else:
            self.mean, self.std = np.zeros(count), np.ones(count)

    def prepare_heldout(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, path: str,
        labels: list[str],
    ) -> PreparedData:
        self.names = labels
        return super().prepare_heldout(config, tokenizer, model, path, labels)

    def prepare_retention(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet,
        data: PreparedData,
    ) -> HeldOutSet:
        return scored_as_text_classification(config, tokenizer, model, spec, data)

    # ---- scoring --------------------------------------------------------------------------
    def _scaled(self, targets: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=targets.dtype, device=targets.device)
        std = torch.as_tensor(self.std, dtype=targets.dtype, device=targets.device)
        return (targets - mean) / std

    def loss_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._logits(model, batch), self._scaled(batch["labels"])

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        predicted, targets = self.loss_logits(model, batch)
        losses = (predicted - targets).pow(2).mean(-1)  # the mse objective's terms, per row
        return {"predictions": predicted.cpu().numpy() * self.std + self.mean,
                "labels": batch["labels"].cpu().numpy(), "loss": losses.cpu().numpy()}

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        # scikit-learn and scipy add ~1 s of import; predict and data check build a task and need none of it
        from tunelab.metrics.regression import regression_metrics

        metrics = regression_metrics(outputs["labels"], outputs["predictions"], data.info["labels"])
        metrics["loss"] = float(outputs["loss"].mean()) if len(outputs["loss"]) else float("nan")
        return metrics

    def baseline_outputs(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, np.ndarray]:
        """Every row predicted as the training mean: R² 0 on data distributed as the training data."""
        names = data.info["labels"]
        mean = np.array([data.info["targets"]["train"][n]["mean"] for n in names])
        labels = outputs["labels"]
        predictions = np.tile(mean, (len(labels), 1))
        loss = (((predictions - labels) / self.std) ** 2).mean(-1) if len(labels) else np.zeros(0)
        return {**outputs, "predictions": predictions, "loss": loss}

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        assert self.tokenizer is not None
        names = data.info["labels"]
        order = np.argsort(-outputs["loss"], kind="stable")[:k]
        return [
            {"row": int(i), "target": dict(zip(names, outputs["labels"][i].tolist())),
             "predicted": dict(zip(names, outputs["predictions"][i].tolist())), "loss": float(outputs["loss"][i]),
             "input": self.tokenizer.decode(dataset[int(i)]["input_ids"], skip_special_tokens=True)}
            for i in order
        ]

    # ---- saving and serving ---------------------------------------------------------------
    def _scale_record(self) -> dict[str, Any]:
        return {"names": self.names, "mean": self.mean.tolist(), "std": self.std.tolist()}

    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        super().save_artifacts(run_dir, data)
        (run_dir / "targets.json").write_text(json.dumps(self._scale_record(), indent=2) + "\n")

    def finalize_saved(self, folder: Path) -> None:
        """model/config.json carries the scale too: the head outputs standardized values, and
        `value = output * std + mean` reads them without tunelab."""
        config_file = folder / "config.json"
        if config_file.is_file() and self.names:
            saved = json.loads(config_file.read_text())
            saved["target_scale"] = self._scale_record()
            config_file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")

    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        net, tokenizer = super().load_trained(run_dir, config)
        saved = run_dir / "targets.json"
        scale = json.loads(saved.read_text()) if saved.is_file() else getattr(net.config, "target_scale", None)
        self.names = [net.config.id2label[i] for i in range(net.config.num_labels)]
        if scale:
            self.mean, self.std = np.array(scale["mean"]), np.array(scale["std"])
        else:
            self.mean, self.std = np.zeros(len(self.names)), np.ones(len(self.names))
        return net, tokenizer

    def predict(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], config: Config, top_k: int = 1
    ) -> list[dict[str, Any]]:
        results = []
        for start in range(0, len(texts), 32):
            chunk = texts[start : start + 32]
            enc = tokenizer(chunk, truncation=True, max_length=config.train.max_length, padding=True,
                            return_tensors="pt")
            with torch.inference_mode():
                values = model(**enc).logits.float().numpy() * self.std + self.mean
            results += [{"text": text, "values": dict(zip(self.names, map(float, row)))}
                        for text, row in zip(chunk, values)]
        return results


def _numbers(table: Table, column: str) -> None:
    """Every value of `column` is a finite number (numeric strings too, as a CSV column with one stray
    word loads); else a one-line error with the file and line."""
    for i, value in enumerate(table.dataset[column]):
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            what = "no value" if value is None or value == "" else f"{value!r}, not a finite number"
            raise DataError(f"{table.where(i)}: target column {column!r} has {what}",
                            fix="give every row a numeric target, or remove the row")


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None

