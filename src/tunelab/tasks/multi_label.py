"""Multi-label text classification (diagnostic coding, tagging): any number of labels per text.

Labels come as a list column (`["E11.9", "I10"]`), a string joined by `multi_label.delimiter`
(`"E11.9,I10"`), or one 0/1 column per label (`data.label_columns`). The head has one logit per label
(Hugging Face's `multi_label_classification` problem type), trained by the binary-cross-entropy
objective. A label is predicted where its probability reaches its threshold: `multi_label.threshold`
while training, then tuned on validation with the final weights (`calibrate`), so test, `predict`
and the saved model use the tuned thresholds (thresholds.json, and `label_thresholds` in
model/config.json).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.config.schema import BinaryCrossEntropyObjective
from tunelab.data import Table
from tunelab.data.split import random_split
from tunelab.errors import ConfigError, DataError
from tunelab.tasks.base import TASKS, HeldOutSet, PreparedData
from tunelab.tasks.text_classification import TextClassification, label_matrix, scored_as_text_classification

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.config.schema import RetentionSet
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)


@TASKS.register("multi-label-classification")
class MultiLabelClassification(TextClassification):
    name = "multi-label-classification"
    metrics = {"micro_f1": True, "macro_f1": True, "samples_f1": True, "subset_accuracy": True, "map": True,
               "loss": False}
    default_metric = "micro_f1"
    outputs = ("label-logits",)
    default_objective = "binary-cross-entropy"
    sections = ("multi_label",)
    problem_type = "multi_label_classification"
    label_dtype = torch.float32
    baseline = ("label-prior", "prior", "each label's training prevalence as its score, at the untuned threshold")

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self.thresholds: np.ndarray | None = None  #: tuned (or loaded) per-label thresholds
        self.default_threshold = 0.5
        self.tune_mode = "per_label"
        self.train_positives: list[int] = []
        self.train_rows = 0

    @classmethod
    def label_columns(cls, config: Config) -> list[str]:
        return list(config.data.label_columns or [config.data.label_column])

    @classmethod
    def class_labels(cls, config: Config) -> tuple[str, str | None] | None:
        # 0/1 columns are checked by the task itself (file and line), not counted as class values
        return None if config.data.label_columns else (config.data.label_column, config.multi_label.delimiter)

    def _settle(self, config: Config) -> None:
        self.default_threshold = config.multi_label.threshold
        self.tune_mode = config.multi_label.tune_threshold

    # ---- reading labels -------------------------------------------------------------------
    def _label_keys(self, config: Config) -> dict[str, str]:
        if config.data.label_columns:
            return {column: "data.label_columns" for column in config.data.label_columns}
        return super()._label_keys(config)

    def _label_cache_key(self, config: Config) -> dict[str, Any]:
        return {"delimiter": config.multi_label.delimiter, "indicator_columns": bool(config.data.label_columns)}

    def _row_labels(self, table: Table, config: Config) -> list[list[str]]:
        """Every row's labels, checked: a one-line error with file and line for a value that is not a
        label list, an indicator that is not 0/1, or (multi_label.allow_empty: false) a row without any."""
        data = config.data
        if data.label_columns:
            rows = _indicator_rows(table, data.label_columns)
        else:
            rows = [_parse_labels(value, config.multi_label.delimiter, table, i, data.label_column)
                    for i, value in enumerate(table.dataset[data.label_column])]
        if not config.multi_label.allow_empty:
            empty = next((i for i, labels in enumerate(rows) if not labels), None)
            if empty is not None:
                raise DataError(f"{table.where(empty)}: the row has no label",
                                fix="label it, remove it, or set multi_label.allow_empty: true")
        return rows

    def _check_labels_present(self, table: Table, config: Config) -> None:
        self._row_labels(table, config)

    def _label_names(self, train: Table, config: Config) -> list[str]:
        counts = Counter(label for labels in self._row_labels(train, config) for label in labels)
        names = list(config.data.label_columns or sorted(counts))
        if len(names) < 2:
            raise DataError(f"{train.name}: the training data has {len(names)} label(s) ({', '.join(names) or 'none'})",
                            fix="a multi-label classifier needs at least two labels; check data.label_column")
        unseen = [name for name in names if not counts.get(name)]
        if unseen:
            log.warning("%s: label(s) %s have no positive training row and cannot be learned",
                        train.name, ", ".join(unseen[:5]))
        return names

    def _check_known_labels(self, tables: dict[str, Table], labels: list[str], config: Config) -> None:
        known = set(labels)
        for split, table in tables.items():
            if split == "train":
                continue
            for i, row in enumerate(self._row_labels(table, config)):
                foreign = [label for label in row if label not in known]
                if foreign:
                    raise DataError(f"{table.where(i)}: label {foreign[0]!r} never occurs in the training data",
                                    fix="add training rows with it, or remove it from the held-out file")

    def _label_encoder(self, config: Config, labels: list[str]) -> Callable[[dict[str, list[Any]]], list[Any]]:
        index = {name: j for j, name in enumerate(labels)}
        delimiter, columns, column = config.multi_label.delimiter, config.data.label_columns, config.data.label_column

        def encode(batch: dict[str, list[Any]]) -> list[list[float]]:
            if columns:
                return [[float(v) for v in row] for row in zip(*(batch[c] for c in columns))]
            rows = []
            for value in batch[column]:
                hot = [0.0] * len(labels)
                for label in _split_labels(value, delimiter):
                    if label in index:  # rows were checked: unknown labels only in held-out files, refused
                        hot[index[label]] = 1.0
                rows.append(hot)
            return rows

        return encode

    def _split(self, ds: datasets.Dataset, size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
        return random_split(ds, size, seed)

    def _drop_unseen(
        self, ds: datasets.Dataset, split: str, labels: list[str], info: dict[str, Any]
    ) -> datasets.Dataset:
        return ds  # held-out files with unknown labels are refused (`_check_known_labels`)

    def _label_info(self, splits: dict[str, datasets.Dataset], labels: list[str]) -> dict[str, Any]:
        counts, empty = {}, {}
        for split, ds in splits.items():
            matrix = label_matrix(ds)
            counts[split] = {name: int(n) for name, n in zip(labels, matrix.sum(0))}
            empty[split] = int((matrix.sum(1) == 0).sum())
        train = counts.get("train", {})
        self.train_positives, self.train_rows = [train.get(n, 0) for n in labels], len(splits.get("train") or [])
        return {"label_counts": counts, "rows_without_labels": empty}

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        self._settle(config)
        data = super().prepare(config, tokenizer, model)
        self.labels = data.info["labels"]
        self._check_weights(config)
        return data

    def prepare_heldout(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, path: str,
        labels: list[str],
    ) -> PreparedData:
        self._settle(config)
        self.labels = labels
        table = self._load_checked(path, config, "test")
        self._check_known_labels({"test": table}, labels, config)
        return super().prepare_heldout(config, tokenizer, model, path, labels)

    def _check_weights(self, config: Config) -> None:
        settings = config.objective
        if isinstance(settings, BinaryCrossEntropyObjective) and isinstance(settings.pos_weight, dict):
            unknown = [name for name in settings.pos_weight if name not in self.labels]
            if unknown:
                raise ConfigError(f"objective.pos_weight names {unknown[0]!r}, which is not a label of the data",
                                  fix=f"use labels among {', '.join(self.labels[:8])}")

    def label_prevalence(self) -> tuple[list[str], list[int], int]:
        """Label names, each label's positive training rows, and the training rows (for pos_weight)."""
        return self.labels, self.train_positives, self.train_rows

    def prepare_retention(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet,
        data: PreparedData,
    ) -> HeldOutSet:
        return scored_as_text_classification(config, tokenizer, model, spec, data)

    # ---- scoring --------------------------------------------------------------------------
    def _thresholds(self, count: int) -> np.ndarray:
        if self.thresholds is not None and len(self.thresholds) == count:
            return self.thresholds
        return np.full(count, self.default_threshold)

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        logits = self._logits(model, batch)
        losses = F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="none").mean(-1)
        return {"logits": logits.cpu().numpy(), "labels": batch["labels"].cpu().numpy(), "loss": losses.cpu().numpy()}

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        # scikit-learn adds ~1 s of import; predict and data check build a task and need none of it
        from tunelab.metrics.multi_label import multi_label_metrics, sigmoid

        names = data.info["labels"]
        thresholds = outputs["thresholds"][0] if "thresholds" in outputs else self._thresholds(len(names))
        metrics = multi_label_metrics(outputs["labels"], sigmoid(outputs["logits"]), thresholds, names)
        metrics["loss"] = float(outputs["loss"].mean()) if len(outputs["loss"]) else float("nan")
        return metrics

    def calibrate(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any] | None:
        from tunelab.metrics.multi_label import sigmoid, tune_thresholds

        names = data.info["labels"]
        if self.tune_mode == "none" or not len(outputs["labels"]):
            self.thresholds = np.full(len(names), self.default_threshold)
            return None
        before = self.compute_metrics(outputs, data)
        self.thresholds = tune_thresholds(outputs["labels"], sigmoid(outputs["logits"]), self.tune_mode,
                                          self.default_threshold)
        after = self.compute_metrics(outputs, data)
        log.info("thresholds tuned on validation (%s): micro F1 %.4f -> %.4f", self.tune_mode,
                 before["micro_f1"], after["micro_f1"])
        return {"kind": "thresholds", "mode": self.tune_mode, "default": self.default_threshold,
                "thresholds": dict(zip(names, self.thresholds.tolist())),
                "validation_micro_f1": {"before": before["micro_f1"], "after": after["micro_f1"]}}

    def baseline_outputs(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, np.ndarray]:
        """Every row scored with the training prevalence of each label, at the untuned threshold: it
        predicts the labels most training rows carry (usually none), and its mAP is chance level."""
        names = data.info["labels"]
        counts = data.info["label_counts"]["train"]
        rows = max(data.info["rows"]["train"], 1)
        prior = np.clip(np.array([counts.get(n, 0) / rows for n in names]), 1e-6, 1 - 1e-6)
        labels = outputs["labels"]
        logits = np.tile(np.log(prior / (1 - prior)), (len(labels), 1)).astype(np.float32)
        loss = -(labels * np.log(prior) + (1 - labels) * np.log(1 - prior)).mean(-1) if len(labels) else np.zeros(0)
        untuned = np.full((1, len(names)), self.default_threshold)
        return {**outputs, "logits": logits, "loss": loss, "thresholds": untuned}

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        from tunelab.metrics.multi_label import sigmoid

        assert self.tokenizer is not None
        names = data.info["labels"]
        probs, thresholds = sigmoid(outputs["logits"]), self._thresholds(len(names))
        order = np.argsort(-outputs["loss"], kind="stable")[:k]
        return [
            {"row": int(i), "labels": [n for n, v in zip(names, outputs["labels"][i]) if v > 0.5],
             "predicted": [n for n, p, t in zip(names, probs[i], thresholds) if p >= t],
             "loss": float(outputs["loss"][i]),
             "input": self.tokenizer.decode(dataset[int(i)]["input_ids"], skip_special_tokens=True)}
            for i in order
        ]

    # ---- saving and serving ---------------------------------------------------------------
    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        super().save_artifacts(run_dir, data)
        names = data.info["labels"]
        (run_dir / "thresholds.json").write_text(
            json.dumps(dict(zip(names, self._thresholds(len(names)).tolist())), indent=2) + "\n")

    def finalize_saved(self, folder: Path) -> None:
        """model/config.json carries the thresholds too, so the folder alone predicts as the run does."""
        config_file = folder / "config.json"
        if config_file.is_file() and self.labels:
            saved = json.loads(config_file.read_text())
            saved["label_thresholds"] = dict(zip(self.labels, self._thresholds(len(self.labels)).tolist()))
            config_file.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")

    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        self._settle(config)
        net, tokenizer = super().load_trained(run_dir, config)
        self.labels = [net.config.id2label[i] for i in range(net.config.num_labels)]
        saved = run_dir / "thresholds.json"
        by_label = json.loads(saved.read_text()) if saved.is_file() else getattr(net.config, "label_thresholds", {})
        self.thresholds = np.array([float(by_label.get(n, self.default_threshold)) for n in self.labels])
        return net, tokenizer

    def predict(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], config: Config, top_k: int = 1
    ) -> list[dict[str, Any]]:
        """Every label at or above its threshold, most probable first (`top_k` is not a cut-off here:
        a text has as many labels as pass)."""
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        thresholds = self._thresholds(len(names))
        results = []
        for start in range(0, len(texts), 32):
            chunk = texts[start : start + 32]
            enc = tokenizer(chunk, truncation=True, max_length=config.train.max_length, padding=True,
                            return_tensors="pt")
            with torch.inference_mode():
                probs = model(**enc).logits.float().sigmoid().numpy()
            for text, row in zip(chunk, probs):
                passed = sorted((j for j in range(len(names)) if row[j] >= thresholds[j]), key=lambda j: -row[j])
                results.append({"text": text, "labels": [{"label": names[j], "score": float(row[j])} for j in passed]})
        return results


def _split_labels(value: Any, delimiter: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(delimiter) if part.strip()]
    return [str(v).strip() for v in value if v is not None and str(v).strip()]


def _parse_labels(value: Any, delimiter: str, table: Table, row: int, column: str) -> list[str]:
    """One row's labels from a list or a delimited string (a null is no label)."""
    if value is None or isinstance(value, str):
        return _split_labels(value, delimiter)
    if isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return _split_labels(value, delimiter)
    raise DataError(f"{table.where(row)}: column {column!r} holds {json.dumps(value, default=str)[:60]}, not a list of "
                    "labels", fix=f"write the labels as a list of strings, or one string joined by {delimiter!r}")


def _indicator_rows(table: Table, columns: list[str]) -> list[list[str]]:
    """Labels from one 0/1 column per label (booleans and 0.0/1.0 too)."""
    values = [table.dataset[c] for c in columns]
    rows = []
    for i in range(len(table.dataset)):
        labels = []
        for column, column_values in zip(columns, values):
            value = column_values[i]
            if isinstance(value, bool) or (isinstance(value, (int, float)) and not math.isnan(value)
                                           and value in (0, 1)):
                if value:
                    labels.append(column)
                continue
            raise DataError(f"{table.where(i)}: label column {column!r} holds {value!r}, not 0 or 1",
                            fix="give each label column 0 (absent) or 1 (present) in every row")
        rows.append(labels)
    return rows

