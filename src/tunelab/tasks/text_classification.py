"""Text classification (sentiment, topic, intent): one label per text or text pair."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tunelab.data import (
    Table,
    blank_rows,
    cached_dataset,
    fingerprint_table,
    load_table,
    require_columns,
    stratified_split,
    value_counts,
)
from tunelab.data.split import hold_out_missing
from tunelab.errors import DataError
from tunelab.tasks.base import (
    TASKS,
    HeldOutSet,
    PreparedData,
    classifier_retention,
    dropout_overrides,
    load_saved_classifier,
    load_tracking_new,
    pad_sequences,
)
from tunelab.tasks.classifier import ClassifierTask

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.config.schema import RetentionSet
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)
UNSEEN = -1  # label id for validation/test rows whose label never occurs in train
TOKENIZE_VERSION = 2  # bump when the tokenized layout changes, to invalidate cached datasets


@TASKS.register("text-classification")
class TextClassification(ClassifierTask):
    name = "text-classification"
    peft_task_type = "SEQ_CLS"
    metrics = {"accuracy": True, "macro_f1": True, "weighted_f1": True, "loss": False}
    default_metric = "macro_f1"
    #: the head's problem_type in the Hugging Face config, and the dtype of collated targets
    problem_type = "single_label_classification"
    label_dtype = torch.long

    def __init__(self) -> None:
        super().__init__()
        self.pad_id = 0
        self.tokenizer: PreTrainedTokenizerBase | None = None

    def _use_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Remember what collate needs from the tokenizer (its pad id; 0 when it has none); samples
        are decoded with it for reports."""
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.tokenizer = tokenizer

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        self._use_tokenizer(tokenizer)
        tables = self._load_tables(config)
        labels = self._label_names(tables["train"], config)
        self._check_known_labels(tables, labels, config)
        tokenized = {
            split: self._tokenize(table, config, tokenizer, model, labels) for split, table in tables.items()
        }
        info: dict[str, Any] = {"labels": labels, "files": [fingerprint_table(t) for t in tables.values()]}
        info["cache_hits"] = {split: hit for split, (_, hit) in tokenized.items()}
        splits = {split: ds for split, (ds, _) in tokenized.items()}
        seed = config.train.seed
        splits, info["split_from_train"] = hold_out_missing(
            splits, config.data.validation_size, config.data.test_size,
            lambda ds, size, what: self._split(ds, size, seed))
        for split in ("validation", "test"):
            if splits.get(split) is not None:
                splits[split] = self._drop_unseen(splits[split], split, labels, info)
        info["rows"] = {s: len(d) for s, d in splits.items() if d is not None}
        info.update(self._label_info({s: d for s, d in splits.items() if d is not None}, labels))
        info["truncated_rows"] = {s: int(_sum_column(d, "truncated")) for s, d in splits.items() if d is not None}
        log.info("data: %s; %d labels; tokenized %s", ", ".join(f"{s} {n}" for s, n in info["rows"].items()),
                 len(labels), "from cache" if all(info["cache_hits"].values()) else "and cached")
        return PreparedData(splits["train"], splits["validation"], splits.get("test"), info)

    def prepare_heldout(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, path: str,
        labels: list[str],
    ) -> PreparedData:
        """Tokenize one extra labelled file for `tunelab eval`, with the trained run's label set."""
        self._use_tokenizer(tokenizer)
        table = self._load_checked(path, config, "test")
        ds, hit = self._tokenize(table, config, tokenizer, model, labels)
        info: dict[str, Any] = {"labels": labels, "files": [fingerprint_table(table)], "cache_hits": {"test": hit}}
        ds = self._drop_unseen(ds, "test", labels, info)
        info["rows"] = {"test": len(ds)}
        return PreparedData(train=None, validation=None, test=ds, info=info)

    def _load_tables(self, config: Config) -> dict[str, Table]:
        return {split: self._load_checked(path, config, split) for split, path in config.data.split_paths().items()}

    def _load_checked(self, path: str, config: Config, split: str) -> Table:
        data = config.data
        table = load_table(path, data, split)
        keys = {data.text_column: "data.text_column", **self._label_keys(config)}
        if data.text_pair_column:
            keys[data.text_pair_column] = "data.text_pair_column"
        require_columns(table, list(keys), keys=keys)
        self._check_labels_present(table, config)  # before _check_text may drop rows: where() needs file rows
        self._check_text(table, config)
        return table

    def _check_text(self, table: Table, config: Config) -> None:
        for column in filter(None, [config.data.text_column, config.data.text_pair_column]):
            rows = blank_rows(table, column)
            if len(rows) == 0:
                continue
            if config.data.empty_text == "error":
                more = f" and {len(rows) - 1} more rows" if len(rows) > 1 else ""
                raise DataError(
                    f"{table.where(int(rows[0]))}{more}: column {column!r} is empty",
                    fix="fill in or remove those rows, or set data.empty_text: drop",
                )
            log.warning("%s: dropping %d rows with empty %r", table.files[0], len(rows), column)
            keep = np.setdiff1d(np.arange(len(table.dataset)), rows)
            table.dataset = table.dataset.select(keep)

    # ---- targets: what tasks with other targets (multi-label, regression) change ---------------
    def _label_keys(self, config: Config) -> dict[str, str]:
        """The columns holding the targets -> the config key that names them (for missing-column errors)."""
        return {config.data.label_column: "data.label_column"}

    def _label_cache_key(self, config: Config) -> dict[str, Any]:
        """Settings beyond the columns that change how targets are encoded (part of the token cache key)."""
        return {}

    def _label_encoder(self, config: Config, labels: list[str]) -> Callable[[dict[str, list[Any]]], list[Any]]:
        """A batch of rows -> each row's target as the dataset stores it (here: the class id)."""
        label_ids = {name: i for i, name in enumerate(labels)}
        column = config.data.label_column
        return lambda batch: [label_ids.get(str(v), UNSEEN) for v in batch[column]]

    def _split(self, ds: datasets.Dataset, size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
        return stratified_split(ds, "labels", size, seed)

    def _check_known_labels(self, tables: dict[str, Table], labels: list[str], config: Config) -> None:
        """Refuse held-out files whose targets training cannot learn (single-label classification drops
        such rows from evaluation with a warning instead, in `_drop_unseen`)."""

    def _label_info(self, splits: dict[str, datasets.Dataset], labels: list[str]) -> dict[str, Any]:
        """What data.json records about the targets of each split."""
        return {"label_counts": {s: {labels[int(k)]: v for k, v in value_counts(d, "labels").items()}
                                 for s, d in splits.items()}}

    def _check_labels_present(self, table: Table, config: Config) -> None:
        rows = blank_rows(table, config.data.label_column)
        if len(rows):
            raise DataError(
                f"{table.where(int(rows[0]))}: column {config.data.label_column!r} has no label",
                fix="label every row, or remove the unlabelled ones",
            )

    def _label_names(self, train: Table, config: Config) -> list[str]:
        counts = value_counts(train.dataset, config.data.label_column)
        if len(counts) < 2:
            only = next(iter(counts), "nothing")
            raise DataError(
                f"{train.files[0]}: label column {config.data.label_column!r} has a single class ({only!r})",
                fix="a classifier needs at least two classes; check data.label_column and the file",
            )
        return list(counts)

    def _tokenize(
        self, table: Table, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel,
        labels: list[str],
    ) -> tuple[datasets.Dataset, bool]:
        data = config.data
        key = {
            "task": self.name,
            "version": TOKENIZE_VERSION,
            "files": fingerprint_table(table)["files"],
            "rows": len(table.dataset),
            "tokenizer": model.fingerprint,
            "max_length": config.train.max_length,
            "columns": [data.text_column, data.text_pair_column, *self._label_keys(config)],
            "labels": labels,
            **self._label_cache_key(config),
        }
        encode_labels = self._label_encoder(config, labels)
        max_length = config.train.max_length

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            texts = batch[data.text_column]
            pairs = batch[data.text_pair_column] if data.text_pair_column else None
            enc, truncated = _encode_truncating(tokenizer, texts, pairs, max_length)
            enc["labels"] = encode_labels(batch)
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            enc["truncated"] = truncated
            return enc

        def build() -> datasets.Dataset:
            return table.dataset.map(
                encode, batched=True, remove_columns=table.dataset.column_names, desc=f"tokenize {table.split}"
            )

        return cached_dataset(key, build)

    def _drop_unseen(
        self, ds: datasets.Dataset, split: str, labels: list[str], info: dict[str, Any]
    ) -> datasets.Dataset:
        counts = value_counts(ds, "labels")
        unseen = counts.get(str(UNSEEN), 0)
        if not unseen:
            return ds
        log.warning("%s: %d rows have labels never seen in train; they are left out of evaluation", split, unseen)
        info.setdefault("unseen_labels", {})[split] = unseen
        return ds.filter(lambda b: [v != UNSEEN for v in b["labels"]], batched=True)

    def prepare_retention(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet,
        data: PreparedData,
    ) -> HeldOutSet:
        from transformers import AutoModelForSequenceClassification

        return classifier_retention(self, AutoModelForSequenceClassification, config, tokenizer, model, spec)

    # ---- model ----------------------------------------------------------------------------
    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        from transformers import AutoModelForSequenceClassification

        labels = data.info["labels"]
        net = load_tracking_new(
            self, AutoModelForSequenceClassification, model.path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)},
            problem_type=self.problem_type,
            trust_remote_code=config.model.trust_remote_code,
            ignore_mismatched_sizes=True,  # a classifier with other labels as the start: new head
            dtype=torch.float32,
            **self.load_kwargs,
            **dropout_overrides(model.path, config.model.dropout, config.model.trust_remote_code),
        )
        if net.config.pad_token_id is None:
            net.config.pad_token_id = self.pad_id  # causal-LM backbones need it to find the last token
        return net

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": pad_sequences(rows["input_ids"], self.pad_id),
            "attention_mask": pad_sequences(rows["attention_mask"], 0),
            "labels": torch.as_tensor(rows["labels"], dtype=self.label_dtype),
        }
        if "token_type_ids" in rows:
            batch["token_type_ids"] = pad_sequences(rows["token_type_ids"], 0)
        return batch

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model(**inputs).logits.float()

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        # scikit-learn: imported when metrics are computed, not when the task is built
        from tunelab.metrics.classification import worst_rows

        return worst_rows(outputs, data.info["labels"], k, lambda i: self.describe_row(dataset, i))

    def describe_row(self, dataset: datasets.Dataset, row: int) -> str:
        assert self.tokenizer is not None
        return self.tokenizer.decode(dataset[row]["input_ids"], skip_special_tokens=True)

    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        (run_dir / "labels.json").write_text(json.dumps(data.info["labels"], indent=2) + "\n")

    # ---- inference ------------------------------------------------------------------------
    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        """The run's merged model/ folder; or, for `method.merge: false`, the base model plus adapter/."""
        from transformers import AutoModelForSequenceClassification

        net, tokenizer = load_saved_classifier(run_dir, config, AutoModelForSequenceClassification)
        self._use_tokenizer(tokenizer)
        return net.eval(), tokenizer

    def onnx_example(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: Config
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
        return text_onnx_example(tokenizer, config)

    def predict(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], config: Config, top_k: int = 1
    ) -> list[dict[str, Any]]:
        names = model.config.id2label
        results = []
        for start in range(0, len(texts), 32):
            chunk = texts[start : start + 32]
            enc = tokenizer(chunk, truncation=True, max_length=config.train.max_length, padding=True,
                            return_tensors="pt")
            with torch.inference_mode():
                probs = model(**enc).logits.float().softmax(-1)
            scores, ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for text, row_scores, row_ids in zip(chunk, scores.tolist(), ids.tolist()):
                labels = [{"label": names[i], "score": s} for i, s in zip(row_ids, row_scores)]
                results.append({"text": text, "labels": labels})
        return results


def scored_as_text_classification(
    config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet, data: PreparedData
) -> HeldOutSet:
    """A retention set of a previous single-label text-classification task (its head on the backbone
    being trained), for runs whose own targets are not classes (multi-label, regression): the set
    reads its `label_column` ('label' by default) and is scored by a text-classification task of its own."""
    scorer = TextClassification()
    spec = spec.model_copy(update={"label_column": spec.label_column or "label"})
    held = scorer.prepare_retention(config, tokenizer, model, spec, data)
    held.scorer = scorer
    return held


def text_onnx_example(
    tokenizer: PreTrainedTokenizerBase, config: Config
) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
    """Tokenizer outputs for two short texts, with dynamic batch and sequence axes."""
    enc = tokenizer(["an example text to trace", "a second one"], padding=True, truncation=True,
                    max_length=config.train.max_length, return_tensors="pt")
    example = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return example, {name: {0: "batch", 1: "sequence"} for name in example}


def _encode_truncating(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], pairs: list[str] | None, max_length: int
) -> tuple[dict[str, list[Any]], list[bool]]:
    """Tokenize truncated to `max_length`, and say which rows lost tokens.

    Single texts tokenize once: a fast tokenizer returns the cut-off tail as extra "overflow" rows,
    which are dropped after counting. Pairs cannot overflow that way, so they are tokenized twice.
    """
    if pairs is None and tokenizer.is_fast:
        enc = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True)
        owners = enc.pop("overflow_to_sample_mapping")
        first = [i for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]
        truncated = [False] * len(texts)
        for i, owner in enumerate(owners):
            if i and owners[i - 1] == owner:
                truncated[owner] = True
        return {k: [v[i] for i in first] for k, v in enc.items()}, truncated
    full = tokenizer(texts, pairs, truncation=False)
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    return dict(enc), [len(ids) > max_length for ids in full["input_ids"]]


def label_matrix(ds: datasets.Dataset | None, dtype: Any = np.float32) -> np.ndarray:
    """The [rows, k] matrix of a tokenized split's list-valued `labels` (multi-hot labels, targets)."""
    if ds is None or not len(ds):
        return np.zeros((0, 0), dtype=dtype)
    return np.asarray(ds.with_format("numpy")["labels"], dtype=dtype).reshape(len(ds), -1)


def _sum_column(ds: datasets.Dataset, column: str) -> int:
    """Sum a numeric/bool column batch by batch (respects select/split index mappings)."""
    import pyarrow.compute as pc

    total = 0
    for batch in ds.with_format("arrow").iter(batch_size=10_000):
        total += int(pc.sum(batch.column(column).cast("int64")).as_py() or 0)
    return total
