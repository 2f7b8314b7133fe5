"""Embedding / retrieval tuning (FAQ search, semantic search): an encoder whose embeddings put matching
texts close.

Rows are (anchor, positive) pairs, optionally with a hard negative or a similarity score. The model is
the bare encoder (`AutoModel`); token vectors are pooled (mean, CLS or max, as the model's
sentence-transformers config says unless `embedding.pooling` does) and optionally normalised. The
objectives (contrastive, triplet, cosine-similarity) read `pair_embeddings`. Evaluation ranks every
distinct positive (and negative) of a split for every distinct anchor: recall@k, MRR@10, nDCG@10, base
vs tuned; scored pairs are evaluated by the Spearman correlation of cosine and score. The saved model/
is a sentence-transformers folder (modules.json, pooling config), so `SentenceTransformer(model/)`
encodes as tunelab does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data import Table, blank_rows, cached_dataset, fingerprint_table, load_table, require_columns
from tunelab.data.split import hold_out_missing, random_split
from tunelab.errors import ConfigError, DataError, RunError
from tunelab.models import resolve_model
from tunelab.tasks.base import TASKS, HeldOutSet, PreparedData, Task, dropout_overrides, pad_sequences

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.config.schema import RetentionSet
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)
TOKENIZE_VERSION = 1
SIDES = ("anchor", "positive", "negative")
RETRIEVAL = ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10")
SCORED = ("spearman", "pearson")


@TASKS.register("embedding")
class Embedding(Task):
    name = "embedding"
    peft_task_type = "FEATURE_EXTRACTION"
    metrics = {**{m: True for m in RETRIEVAL + SCORED}, "loss": False}
    default_metric = "ndcg@10"
    evaluates_base = True  # the starting encoder already embeds: it is scored like the tuned one
    outputs = ("embeddings",)
    default_objective = "contrastive"
    servable_as = "predict"
    sections = ("embedding",)

    def __init__(self) -> None:
        super().__init__()
        self.pad_id = 0
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.pooling = "mean"
        self.normalize = False
        self.sides: tuple[str, ...] = ("anchor", "positive")
        self.scored = False
        self.max_length = 512

    # ---- config ---------------------------------------------------------------------------
    def validate_config(self, config: Config) -> None:
        super().validate_config(config)
        spec, objective = config.embedding, config.objective
        assert objective is not None
        if objective.name == "triplet" and not spec.negative_column:
            raise ConfigError("objective triplet needs a negative per row", fix="set embedding.negative_column")
        if objective.name == "cosine-similarity" and not spec.score_column:
            raise ConfigError("objective cosine-similarity needs a score per pair", fix="set embedding.score_column")
        if spec.score_column and objective.name != "cosine-similarity":
            raise ConfigError("embedding.score_column is read by the cosine-similarity objective, not "
                              f"{objective.name}",
                              fix="set objective.name: cosine-similarity, or remove embedding.score_column")
        if spec.corpus and spec.score_column:
            raise ConfigError("embedding.corpus adds documents to rank; scored pairs are not ranked",
                              fix="remove embedding.corpus, or train on (anchor, positive) pairs")
        wanted = SCORED if spec.score_column else RETRIEVAL
        if config.eval.metric not in (*wanted, "loss"):
            raise ConfigError(f"eval.metric {config.eval.metric} is not measured on "
                              f"{'scored pairs' if spec.score_column else 'retrieval pairs'}",
                              fix=f"choose one of {', '.join(wanted)}")

    @classmethod
    def label_columns(cls, config: Config) -> list[str]:
        return [config.embedding.score_column] if config.embedding.score_column else []

    def _settle(self, config: Config) -> None:
        spec = config.embedding
        self.sides = ("anchor", "positive", *(["negative"] if spec.negative_column else []))
        self.scored = spec.score_column is not None
        self.max_length = config.train.max_length

    def _use_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.tokenizer = tokenizer

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        self._settle(config)
        self._use_tokenizer(tokenizer)
        self.pooling, self.normalize = model_pooling(model.path, config)
        tables = {split: self._load_checked(path, config, split) for split, path in config.data.split_paths().items()}
        tokenized = {split: self._tokenize(table, config, tokenizer, model) for split, table in tables.items()}
        splits = {split: ds for split, (ds, _) in tokenized.items()}
        info: dict[str, Any] = {"labels": [], "files": [fingerprint_table(t) for t in tables.values()],
                                "cache_hits": {split: hit for split, (_, hit) in tokenized.items()}}
        seed = config.train.seed
        splits, info["split_from_train"] = hold_out_missing(
            splits, config.data.validation_size, config.data.test_size,
            lambda ds, size, what: random_split(ds, size, seed))
        info["rows"] = {s: len(d) for s, d in splits.items() if d is not None}
        info["truncated_rows"] = {s: int(sum(d["truncated"])) for s, d in splits.items() if d is not None}
        if config.embedding.corpus:
            splits = self._with_corpus(splits, config, tokenizer, model, info)
        info["pooling"], info["normalize"] = self.pooling, self.normalize
        log.info("data: %s pairs; pooling %s%s", ", ".join(f"{s} {n}" for s, n in info["rows"].items()),
                 self.pooling, ", normalized" if self.normalize else "")
        return PreparedData(splits["train"], splits["validation"], splits.get("test"), info)

    def prepare_heldout(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, path: str,
        labels: list[str],
    ) -> PreparedData:
        self._settle(config)
        self._use_tokenizer(tokenizer)
        table = self._load_checked(path, config, "test")
        ds, hit = self._tokenize(table, config, tokenizer, model)
        info = {"labels": [], "files": [fingerprint_table(table)], "cache_hits": {"test": hit},
                "rows": {"test": len(ds)}}
        if config.embedding.corpus:
            ds = self._with_corpus({"test": ds}, config, tokenizer, model, info)["test"]
        return PreparedData(train=None, validation=None, test=ds, info=info)

    def _with_corpus(self, splits: dict[str, Any], config: Config, tokenizer: PreTrainedTokenizerBase,
                     model: ResolvedModel, info: dict[str, Any]) -> dict[str, Any]:
        """Validation and test with embedding.corpus appended as document-only rows (is_query 0): each
        row's positive is a corpus document, its anchor an empty text that no query is made of."""
        import datasets as hf_datasets

        spec = config.embedding
        assert spec.corpus is not None
        table = load_table(spec.corpus, config.data.model_copy(update={"max_rows": None}), "corpus")
        require_columns(table, [spec.corpus_column], keys={spec.corpus_column: "embedding.corpus_column"})
        texts = list(dict.fromkeys(str(t) for t in table.dataset[spec.corpus_column] if str(t).strip()))
        key = {"task": self.name, "version": TOKENIZE_VERSION, "corpus": fingerprint_table(table)["files"],
               "column": spec.corpus_column, "tokenizer": model.fingerprint, "max_length": config.train.max_length,
               "sides": list(self.sides)}

        def build() -> datasets.Dataset:
            empty = tokenizer([""], truncation=True, max_length=config.train.max_length)
            enc = tokenizer(texts, truncation=True, max_length=config.train.max_length)
            rows: dict[str, list[Any]] = {}
            for side in self.sides:
                own = side == "anchor"
                rows[f"{side}_input_ids"] = [empty["input_ids"][0]] * len(texts) if own else enc["input_ids"]
                rows[f"{side}_attention_mask"] = ([empty["attention_mask"][0]] * len(texts) if own
                                                  else enc["attention_mask"])
                rows[f"{side}_id"] = [-1] * len(texts) if own else [text_id(t) for t in texts]
            rows["length"] = [len(ids) for ids in enc["input_ids"]]
            rows["truncated"] = [False] * len(texts)
            rows["is_query"] = [0] * len(texts)
            return hf_datasets.Dataset.from_dict(rows)

        documents, _ = cached_dataset(key, build)
        info["corpus"] = {"file": str(spec.corpus), "documents": len(documents)}
        out = dict(splits)
        for split in ("validation", "test"):
            ds = splits.get(split)
            if ds is None:
                continue
            ds = ds.add_column("is_query", [1] * len(ds))
            out[split] = hf_datasets.concatenate_datasets([ds, documents.cast(ds.features)])
        return out

    def prepare_retention(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet,
        data: PreparedData,
    ) -> HeldOutSet:
        """Pairs of another domain, retrieved before and after training: how much general search the
        encoder lost."""
        name = spec.name or Path(spec.source).stem
        metric = spec.metric or ("spearman" if self.scored else self.default_metric)
        if metric not in self.metrics:
            raise ConfigError(f"eval.retention {name!r}: metric {metric!r} is not an embedding metric",
                              fix=f"choose one of {', '.join(self.metrics)}")
        limited = config.model_copy(update={"data": config.data.model_copy(update={"max_rows": spec.max_rows})})
        prepared = self.prepare_heldout(limited, tokenizer, model, spec.source, [])
        return HeldOutSet(name, prepared, metric, self.metrics[metric],
                          info={"source": spec.source, "rows": len(prepared.test)})

    def _columns(self, config: Config) -> dict[str, str]:
        spec = config.embedding
        columns = {side: getattr(spec, f"{side}_column") for side in self.sides}
        if spec.score_column:
            columns["score"] = spec.score_column
        return columns

    def _load_checked(self, path: str, config: Config, split: str) -> Table:
        table = load_table(path, config.data, split)
        columns = self._columns(config)
        require_columns(table, list(columns.values()),
                        keys={column: f"embedding.{side}_column" for side, column in columns.items()})
        for side in self.sides:
            rows = blank_rows(table, columns[side])
            if len(rows):
                raise DataError(f"{table.where(int(rows[0]))}: column {columns[side]!r} is empty",
                                fix="fill in or remove the row: every pair needs both texts")
        if "score" in columns:
            for i, value in enumerate(table.dataset[columns["score"]]):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1 \
                        or math.isnan(value):
                    raise DataError(f"{table.where(i)}: score column {columns['score']!r} holds {value!r}",
                                    fix="give each pair a similarity score between 0 and 1 (or -1 and 1)")
        return table

    def _tokenize(
        self, table: Table, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel
    ) -> tuple[datasets.Dataset, bool]:
        columns, max_length = self._columns(config), config.train.max_length
        key = {"task": self.name, "version": TOKENIZE_VERSION, "files": fingerprint_table(table)["files"],
               "rows": len(table.dataset), "tokenizer": model.fingerprint, "max_length": max_length,
               "columns": columns}

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {}
            lengths, truncated = [0] * len(batch[columns["anchor"]]), [False] * len(batch[columns["anchor"]])
            for side in self.sides:
                texts = [str(t) for t in batch[columns[side]]]
                full = tokenizer(texts, truncation=False)["input_ids"]
                enc = tokenizer(texts, truncation=True, max_length=max_length)
                out[f"{side}_input_ids"], out[f"{side}_attention_mask"] = enc["input_ids"], enc["attention_mask"]
                out[f"{side}_id"] = [text_id(t) for t in texts]
                lengths = [n + len(ids) for n, ids in zip(lengths, enc["input_ids"])]
                truncated = [t or len(ids) > max_length for t, ids in zip(truncated, full)]
            if "score" in columns:
                out["score"] = [float(v) for v in batch[columns["score"]]]
            out["length"], out["truncated"] = lengths, truncated
            return out

        def build() -> datasets.Dataset:
            return table.dataset.map(encode, batched=True, remove_columns=table.dataset.column_names,
                                     desc=f"tokenize {table.split}")

        return cached_dataset(key, build)

    # ---- model ----------------------------------------------------------------------------
    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        from transformers import AutoModel

        return AutoModel.from_pretrained(
            model.path, trust_remote_code=config.model.trust_remote_code, dtype=torch.float32, **self.load_kwargs,
            **dropout_overrides(model.path, config.model.dropout, config.model.trust_remote_code))

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = {}
        for side in self.sides:
            batch[f"{side}_input_ids"] = pad_sequences(rows[f"{side}_input_ids"], self.pad_id)
            batch[f"{side}_attention_mask"] = pad_sequences(rows[f"{side}_attention_mask"], 0)
            batch[f"{side}_id"] = torch.as_tensor(rows[f"{side}_id"], dtype=torch.long)
        if "score" in rows:
            batch["score"] = torch.as_tensor(rows["score"], dtype=torch.float32)
        if "is_query" in rows:
            batch["is_query"] = torch.as_tensor(rows["is_query"], dtype=torch.bool)
        return batch

    def encode(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One embedding per sequence: the encoder's last hidden states pooled (and normalised)."""
        hidden = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
        return pool(hidden, attention_mask, self.pooling, self.normalize)

    def pair_embeddings(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The embeddings of every side of a batch (anchor, positive, negative): what objectives read."""
        return {side: self.encode(model, batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"])
                for side in self.sides}

    # ---- scoring --------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        sides = self.pair_embeddings(model, batch)
        out = {f"{side}": emb.cpu().numpy() for side, emb in sides.items()}
        out.update({f"{side}_id": batch[f"{side}_id"].cpu().numpy() for side in sides})
        out["loss"] = (1 - F.cosine_similarity(sides["anchor"], sides["positive"])).cpu().numpy()
        if "score" in batch:
            out["score"] = batch["score"].cpu().numpy()
        if "is_query" in batch:
            out["is_query"] = batch["is_query"].cpu().numpy()
        return out

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        pairs = outputs["is_query"].astype(bool) if "is_query" in outputs else np.ones(len(outputs["loss"]), bool)
        loss = float(outputs["loss"][pairs].mean()) if pairs.any() else float("nan")
        if "score" in outputs:
            from tunelab.metrics.regression import regression_metrics

            similarity = 1 - outputs["loss"]
            scores = regression_metrics(outputs["score"][:, None], similarity[:, None], ["score"])
            return {"spearman": scores["spearman"], "pearson": scores["pearson"], "support": len(similarity),
                    "loss": loss}
        from tunelab.metrics.retrieval import retrieval_metrics

        queries, documents, relevant = retrieval_problem(outputs)
        return {**retrieval_metrics(cosine(queries, documents), relevant), "loss": loss}

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        """The pairs whose anchor and positive are furthest apart, with the document ranked first instead."""
        if self.tokenizer is None or not len(outputs["loss"]):
            return []
        decode = self.tokenizer.decode
        pairs = outputs["is_query"].astype(bool) if "is_query" in outputs else np.ones(len(outputs["loss"]), bool)
        order = [i for i in np.argsort(-outputs["loss"], kind="stable") if pairs[i]][:k]
        documents = cosine(outputs["anchor"][order], outputs["positive"])
        rows = []
        for rank, i in enumerate(order):
            top = int(documents[rank].argmax())
            rows.append({"row": int(i), "loss": float(outputs["loss"][i]),
                         "input": decode(dataset[int(i)]["anchor_input_ids"], skip_special_tokens=True),
                         "expected": decode(dataset[int(i)]["positive_input_ids"], skip_special_tokens=True),
                         "retrieved": decode(dataset[top]["positive_input_ids"], skip_special_tokens=True)})
        return rows

    # ---- saving and serving ---------------------------------------------------------------
    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        (run_dir / "embedding.json").write_text(json.dumps({"pooling": self.pooling, "normalize": self.normalize},
                                                           indent=2) + "\n")

    def finalize_saved(self, folder: Path) -> None:
        """Make model/ a sentence-transformers folder: Transformer, Pooling (and Normalize) modules."""
        config_file = folder / "config.json"
        if not config_file.is_file():
            return  # adapter/: PEFT's own layout
        width = json.loads(config_file.read_text()).get("hidden_size")
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if self.normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
            (folder / "2_Normalize").mkdir(exist_ok=True)
        (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
        (folder / "1_Pooling").mkdir(exist_ok=True)
        pooling = {"word_embedding_dimension": width, "pooling_mode_cls_token": self.pooling == "cls",
                   "pooling_mode_mean_tokens": self.pooling == "mean", "pooling_mode_max_tokens": self.pooling == "max",
                   "pooling_mode_mean_sqrt_len_tokens": False}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2) + "\n")
        (folder / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.max_length, "do_lower_case": False}, indent=2) + "\n")

    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        from transformers import AutoModel, AutoTokenizer

        self._settle(config)
        remote = config.model.trust_remote_code
        model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
        if (model_dir / "config.json").is_file():
            net = AutoModel.from_pretrained(model_dir, trust_remote_code=remote)
            tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
        elif (adapter_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            base = AutoModel.from_pretrained(resolve_model(config.model).path, trust_remote_code=remote)
            net = PeftModel.from_pretrained(base, adapter_dir)
            tokenizer = AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=remote)
        else:
            raise RunError(f"{run_dir} has no saved model (no model/ or adapter/)",
                           fix="use a run that finished, or resume it with `tunelab train --resume`")
        saved = json.loads((run_dir / "embedding.json").read_text())
        self.pooling, self.normalize = saved["pooling"], saved["normalize"]
        self._use_tokenizer(tokenizer)
        return net.eval(), tokenizer

    def read_corpus(self, path: Path, column: str | None) -> list[str]:
        """The texts of a search corpus (`column`, default "text", of a table)."""
        from tunelab.config.schema import DataConfig

        column = column or "text"
        table = load_table(path, DataConfig(train=str(path)), "train")
        require_columns(table, [column], keys={column: "--column"})
        return [str(v) for v in table.dataset[column]]

    def embed(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int,
              batch_size: int = 32) -> np.ndarray:
        """[texts, dimension] embeddings of raw texts, as training embedded them."""
        chunks = []
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
            with torch.inference_mode():
                chunks.append(self.encode(model, enc["input_ids"], enc["attention_mask"]).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def predict(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], config: Config, top_k: int = 1
    ) -> list[dict[str, Any]]:
        vectors = self.embed(model, tokenizer, texts, config.train.max_length)
        return [{"text": text, "embedding": vector.tolist()} for text, vector in zip(texts, vectors)]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, normalize: bool) -> torch.Tensor:
    """[batch, tokens, width] hidden states -> [batch, width] with sentence-transformers' pooling."""
    if how == "cls":
        out = hidden[:, 0]
    elif how == "max":
        out = hidden.masked_fill(mask[..., None] == 0, torch.finfo(hidden.dtype).min).max(1).values
    else:
        weights = mask[..., None].to(hidden.dtype)
        out = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return F.normalize(out, p=2, dim=-1) if normalize else out


def model_pooling(path: Path, config: Config) -> tuple[str, bool]:
    """Pooling and normalisation: the config's, else what the model's sentence-transformers files say,
    else mean pooling without normalisation."""
    spec = config.embedding
    pooling_file, modules_file = Path(path) / "1_Pooling" / "config.json", Path(path) / "modules.json"
    pooling, normalize = "mean", False
    if pooling_file.is_file():
        saved = json.loads(pooling_file.read_text())
        pooling = "cls" if saved.get("pooling_mode_cls_token") else "max" if saved.get("pooling_mode_max_tokens") \
            else "mean"
    if modules_file.is_file():
        normalize = any(m.get("type", "").endswith("Normalize") for m in json.loads(modules_file.read_text()))
    return (pooling if spec.pooling == "auto" else spec.pooling,
            normalize if spec.normalize == "auto" else bool(spec.normalize))


def text_id(text: str) -> int:
    """A stable 63-bit id of a text: rows with the same text are the same query or document."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def retrieval_problem(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[set[int]]]:
    """Distinct anchors as queries, distinct positives and negatives (and embedding.corpus documents) as
    the corpus, and each query's relevant documents (every positive paired with that anchor)."""
    vectors: dict[int, np.ndarray] = {}
    for side in ("positive", "negative"):
        if side not in outputs:
            continue
        for vector, key in zip(outputs[side], outputs[f"{side}_id"]):
            vectors.setdefault(int(key), vector)
    # Documents in id order, not in the order the evaluation happened to score them (length-grouped
    # batches, shards): documents with equal scores (equal texts after tokenization) then rank the
    # same way on any number of processes and batch sizes.
    doc_index = {key: i for i, key in enumerate(sorted(vectors))}
    docs = [vectors[key] for key in sorted(vectors)]
    query_index: dict[int, int] = {}
    queries, relevant = [], []
    asks = outputs["is_query"].astype(bool) if "is_query" in outputs else np.ones(len(outputs["anchor"]), bool)
    for vector, key, positive, ask in zip(outputs["anchor"], outputs["anchor_id"], outputs["positive_id"], asks):
        if not ask:  # an embedding.corpus document: ranked, never a query
            continue
        if int(key) not in query_index:
            query_index[int(key)] = len(queries)
            queries.append(vector)
            relevant.append(set())
        relevant[query_index[int(key)]].add(doc_index[int(positive)])
    width = outputs["anchor"].shape[-1] if outputs["anchor"].ndim == 2 else 0
    stack = (lambda rows: np.stack(rows) if rows else np.zeros((0, width)))
    return stack(queries), stack(docs), relevant


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.clip(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12, None)
    return a @ b.T
