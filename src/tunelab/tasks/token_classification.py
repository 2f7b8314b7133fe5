"""Token classification (named-entity recognition): one BIO tag per word, entity-level metrics.

Words are tokenized into sub-words; the word's label goes on its first sub-token (or, with
`tokens.label_all_subtokens`, on every sub-token, B- turned into I- after the first). Texts longer
than `train.max_length` become overlapping windows (`tokens.stride`); at evaluation and prediction
each word is scored by the window in which it sits most centrally, so every word is predicted once.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data import cached_dataset, fingerprint_table, load_table
from tunelab.data.split import hold_out_missing, random_split
from tunelab.data.tags import labels_from_tags, normalize_token_rows, split_words
from tunelab.errors import ConfigError, DataError
from tunelab.objectives.base import IGNORE
from tunelab.tasks.base import (
    TASKS,
    HeldOutSet,
    PreparedData,
    Task,
    classifier_retention,
    dropout_overrides,
    load_saved_classifier,
    load_tracking_new,
    pad_sequences,
)
from tunelab.tasks.text_classification import text_onnx_example

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.config.schema import RetentionSet
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)
TOKENIZE_VERSION = 1


@TASKS.register("token-classification")
class TokenClassification(Task):
    name = "token-classification"
    peft_task_type = "TOKEN_CLS"
    metrics = {"f1": True, "precision": True, "recall": True, "macro_f1": True, "token_accuracy": True,
               "loss": False}
    default_metric = "f1"
    outputs = ("class-logits",)  # one row of tag logits per token
    default_objective = "cross-entropy"
    servable_as = "predict"
    sections = ("token_classification",)

    @classmethod
    def annotation_columns(cls, config: Config) -> list[str]:
        return [config.data.tags_column, config.data.entities_column]

    def __init__(self) -> None:
        super().__init__()
        self.pad_id = 0

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        self._use_tokenizer(tokenizer)
        tables = {s: load_table(p, config.data, s) for s, p in config.data.split_paths().items()}
        rows, info = {}, {"files": [fingerprint_table(t) for t in tables.values()], "layouts": {}}
        for split, table in tables.items():
            rows[split], info["layouts"][split] = normalize_token_rows(table, config.data)
        seed = config.train.seed
        rows, info["split_from_train"] = hold_out_missing(
            rows, config.data.validation_size, config.data.test_size,
            lambda ds, size, what: random_split(ds, size, seed, what))
        labels = labels_from_tags(list(rows.values()))
        info["labels"] = labels
        encoded, hits = {}, {}
        for split, ds in rows.items():
            encoded[split], hits[split] = self._tokenize(ds, split, config, model, labels, info["files"])
        info["cache_hits"] = hits
        info["rows"] = {s: len(d) for s, d in rows.items()}
        info["windows"] = {s: len(d) for s, d in encoded.items()}
        log.info("data: %s sentences; %d tags (%s)", ", ".join(f"{s} {n}" for s, n in info["rows"].items()),
                 len(labels), ", ".join(labels))
        return PreparedData(encoded["train"], encoded["validation"], encoded["test"], info)

    def prepare_heldout(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, path: str,
        labels: list[str],
    ) -> PreparedData:
        self._use_tokenizer(tokenizer)
        table = load_table(path, config.data, "test")
        rows, layout = normalize_token_rows(table, config.data)
        unknown = sorted(set(labels_from_tags(rows)) - set(labels))
        if unknown:
            raise DataError(f"{table.name}: tags {', '.join(unknown)} are not among the run's labels",
                            fix=f"the run knows: {', '.join(labels)}")
        files = [fingerprint_table(table)]
        ds, hit = self._tokenize(rows, "test", config, model, labels, files)
        info = {"files": files, "labels": labels, "layouts": {"test": layout}, "cache_hits": {"test": hit},
                "rows": {"test": len(rows)}}
        return PreparedData(train=None, validation=None, test=ds, info=info)

    def _tokenize(
        self, rows: datasets.Dataset, split: str, config: Config, model: ResolvedModel, labels: list[str],
        files: list[Any],
    ) -> tuple[datasets.Dataset, bool]:
        all_subtokens = config.token_classification.label_all_subtokens
        key = {"task": self.name, "version": TOKENIZE_VERSION, "split": split, "files": files, "rows": len(rows),
               "tokenizer": model.fingerprint, "max_length": config.train.max_length, "labels": labels,
               "stride": window_stride(config, self.tokenizer), "all_subtokens": all_subtokens,
               "data": config.data.model_dump(include={"tag_scheme", "invalid_tags", "bad_rows",
                                                        "conll_tag_column", "tokens_column", "tags_column"}),
               "split_seed": config.train.seed, "sizes": [config.data.validation_size, config.data.test_size]}
        ids = {name: i for i, name in enumerate(labels)}
        inside = {i: ids.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(labels)}
        tokenizer = self.tokenizer

        def encode(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
            windows = encode_windows(tokenizer, batch["tokens"], config)
            out: dict[str, list[Any]] = defaultdict(list)
            for w, (sample, word_ids, first, owned) in enumerate(windows.meta):
                tags = batch["tags"][sample]
                label_row = []
                for pos, word in enumerate(word_ids):
                    if word is None:
                        label_row.append(IGNORE)
                    elif first[pos]:
                        label_row.append(ids[tags[word]])
                    else:
                        label_row.append(inside[ids[tags[word]]] if all_subtokens else IGNORE)
                for name in windows.columns:
                    out[name].append(windows.encoding[name][w])
                out["labels"].append(label_row)
                out["owned"].append(owned)
                out["word_ids"].append([-1 if word is None else word for word in word_ids])
                out["sample"].append(indices[sample])
                out["length"].append(len(word_ids))
            return dict(out)

        def build() -> datasets.Dataset:
            return rows.map(encode, batched=True, with_indices=True, remove_columns=rows.column_names,
                            desc=f"tokenize {split}")

        return cached_dataset(key, build)

    def _use_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not tokenizer.is_fast:
            raise DataError("token classification needs a fast (Rust) tokenizer to map words to sub-tokens",
                            fix="use a model that ships tokenizer.json")
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def prepare_retention(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet,
        data: PreparedData,
    ) -> HeldOutSet:
        from transformers import AutoModelForTokenClassification

        return classifier_retention(self, AutoModelForTokenClassification, config, tokenizer, model, spec)

    # ---- model ----------------------------------------------------------------------------
    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        from transformers import AutoModelForTokenClassification

        labels = data.info["labels"]
        return load_tracking_new(
            self, AutoModelForTokenClassification, model.path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)}, trust_remote_code=config.model.trust_remote_code,
            ignore_mismatched_sizes=True, dtype=torch.float32, **self.load_kwargs,
            **dropout_overrides(model.path, config.model.dropout, config.model.trust_remote_code),
        )

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": pad_sequences(rows["input_ids"], self.pad_id),
            "attention_mask": pad_sequences(rows["attention_mask"], 0),
            "labels": pad_sequences(rows["labels"], IGNORE),
            "owned": pad_sequences(rows["owned"], 0),
            "word_ids": pad_sequences(rows["word_ids"], -1),
            "sample": torch.as_tensor(rows["sample"], dtype=torch.long),
        }
        if "token_type_ids" in rows:
            batch["token_type_ids"] = pad_sequences(rows["token_type_ids"], 0)
        return batch

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        return model(**inputs).logits.float()

    def loss_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token class logits [batch, tokens, tags] and tag ids (IGNORE on unlabelled sub-tokens)."""
        return self._logits(model, batch), batch["labels"]

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        logits = self._logits(model, batch)
        losses = F.cross_entropy(logits.transpose(1, 2), batch["labels"], ignore_index=IGNORE, reduction="none")
        trained = batch["labels"] != IGNORE
        owned = batch["owned"].bool()
        preds = logits.argmax(-1)
        out: dict[str, list[Any]] = {"words": [], "pred": [], "gold": []}
        for r in range(logits.shape[0]):
            keep = owned[r]
            out["words"].append(batch["word_ids"][r][keep].tolist())
            out["pred"].append(preds[r][keep].tolist())
            out["gold"].append(batch["labels"][r][keep].tolist())
        return {
            **{k: _objects(v) for k, v in out.items()},
            "sample": batch["sample"].cpu().numpy(),
            "loss_sum": (losses * trained).sum(1).double().cpu().numpy(),
            "tokens": trained.sum(1).cpu().numpy(),
        }

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        # seqeval imports scikit-learn (~1 s): only when metrics are computed
        from tunelab.metrics.token_classification import entity_metrics

        names = data.info["labels"]
        words: dict[int, dict[int, tuple[int, int]]] = defaultdict(dict)
        for sample, ws, ps, gs in zip(outputs.get("sample", []), outputs.get("words", []), outputs.get("pred", []),
                                      outputs.get("gold", []), strict=True):
            for w, p, g in zip(ws, ps, gs, strict=True):
                words[int(sample)][w] = (p, g)
        gold = [[names[words[s][w][1]] for w in sorted(words[s])] for s in sorted(words)]
        pred = [[names[words[s][w][0]] for w in sorted(words[s])] for s in sorted(words)]
        metrics = entity_metrics(gold, pred)
        tokens = float(outputs["tokens"].sum()) if "tokens" in outputs else 0.0
        metrics["loss"] = float(outputs["loss_sum"].sum()) / tokens if tokens else float("nan")
        return metrics

    def baseline_outputs(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, np.ndarray]:
        """The majority baseline of tagging: every word is O (no entity found; its loss is undefined)."""
        outside = data.info["labels"].index("O") if "O" in data.info["labels"] else 0
        pred = _objects([[outside] * len(p) for p in outputs.get("pred", [])])
        return {**outputs, "pred": pred, "loss_sum": np.full(len(pred), np.nan)}

    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        (run_dir / "labels.json").write_text(json.dumps(data.info["labels"], indent=2) + "\n")

    # ---- inference ------------------------------------------------------------------------
    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        from transformers import AutoModelForTokenClassification

        net, tokenizer = load_saved_classifier(run_dir, config, AutoModelForTokenClassification)
        self._use_tokenizer(tokenizer)
        return net, tokenizer

    def onnx_example(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, config: Config
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
        return text_onnx_example(tokenizer, config)

    def predict(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], config: Config, top_k: int = 1
    ) -> list[dict[str, Any]]:
        """Entity spans with character offsets and a score (mean probability of the entity's words)."""
        names = model.config.id2label
        results = []
        for text in texts:
            words = split_words(text)
            if not words:
                results.append({"text": text, "entities": []})
                continue
            windows = encode_windows(tokenizer, [[w for w, _, _ in words]], config)
            best: dict[int, tuple[int, float]] = {}
            for w, (_, word_ids, _, owned) in enumerate(windows.meta):
                enc = {k: torch.as_tensor([windows.encoding[k][w]]) for k in windows.columns}
                with torch.inference_mode():
                    probs = model(**enc).logits.float().softmax(-1)[0]
                for pos, word in enumerate(word_ids):
                    if owned[pos]:
                        score, label = probs[pos].max(-1)
                        best[word] = (int(label), float(score))
            tags = [names[best[i][0]] if i in best else "O" for i in range(len(words))]
            scores = [best[i][1] if i in best else 0.0 for i in range(len(words))]
            results.append({"text": text, "entities": _entities(text, words, tags, scores)})
        return results


class Windows:
    """Tokenizer output for overlapping windows, and per window: (sample, word id per token,
    first-sub-token flags, owned flags — the first sub-tokens this window scores)."""

    def __init__(self, encoding: Any, meta: list[tuple[int, list[int | None], list[bool], list[int]]]) -> None:
        self.encoding = encoding
        self.meta = meta
        self.columns = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in encoding]


DEFAULT_STRIDE = 32


def window_stride(config: Config, tokenizer: PreTrainedTokenizerBase) -> int:
    """The overlap of windows: `tokens.stride`, or by default 32 tokens (half a window when 32 does not
    fit). A window holds train.max_length minus the tokenizer's special tokens, and the tokenizer
    refuses an overlap that is not smaller than that; an explicit one that does not fit is a config
    error naming the largest value that does."""
    window = config.train.max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if window < 2:
        raise ConfigError(f"train.max_length {config.train.max_length} leaves {max(window, 0)} token(s) per window "
                          "after the tokenizer's special tokens", fix="raise train.max_length (e.g. 128)")
    stride = config.token_classification.stride
    if stride is None:
        return DEFAULT_STRIDE if DEFAULT_STRIDE < window else window // 2
    if stride >= window:
        raise ConfigError(
            f"tokens.stride {stride} does not fit train.max_length {config.train.max_length}: a window holds "
            f"{window} tokens after the tokenizer's special tokens, so the overlap must be at most {window - 1}",
            fix=f"set tokens.stride to {window // 2} (or at most {window - 1}), or raise train.max_length")
    return stride


def encode_windows(tokenizer: PreTrainedTokenizerBase, sentences: list[list[str]], config: Config) -> Windows:
    """Tokenize word lists into windows of train.max_length overlapping by tokens.stride; each word
    is owned by the window where its first sub-token is furthest from the window's edges."""
    enc = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=config.train.max_length,
                    stride=window_stride(config, tokenizer), return_overflowing_tokens=True,
                    return_offsets_mapping=True)
    meta, best = [], {}
    for w, sample in enumerate(enc["overflow_to_sample_mapping"]):
        word_ids = enc.word_ids(w)
        offsets = enc["offset_mapping"][w]
        # A word's first sub-token starts at character 0 of the word; a window may begin mid-word.
        first = [word is not None and offsets[p][0] == 0 and (p == 0 or word_ids[p - 1] != word)
                 for p, word in enumerate(word_ids)]
        content = [p for p, word in enumerate(word_ids) if word is not None]
        lo, hi = (content[0], content[-1]) if content else (0, 0)
        for p in content:
            if first[p]:
                centrality = min(p - lo, hi - p)
                key = (sample, word_ids[p])
                if key not in best or centrality > best[key][0]:
                    best[key] = (centrality, w, p)
        meta.append((sample, word_ids, first, [0] * len(word_ids)))
    for _, w, p in best.values():
        meta[w][3][p] = 1
    return Windows(enc, meta)


def _entities(text: str, words: list[tuple[str, int, int]], tags: list[str], scores: list[float]) -> list[dict]:
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for (_, start, end), tag, score in zip(words, tags, scores, strict=True):
        kind = tag[2:] if tag != "O" else None
        continues = current is not None and tag == f"I-{current['label']}"
        if continues:
            current["end"] = end
            current["_scores"].append(score)
            continue
        if current is not None:
            entities.append(current)
            current = None
        if kind is not None:  # B-X, or I-X without a preceding X: a new entity either way
            current = {"label": kind, "start": start, "end": end, "_scores": [score]}
    if current is not None:
        entities.append(current)
    for entity in entities:
        entity["text"] = text[entity["start"] : entity["end"]]
        entity["score"] = round(sum(entity["_scores"]) / len(entity["_scores"]), 4)
        del entity["_scores"]
    return entities


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of lists (the engine concatenates and reorders per-row outputs)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out
