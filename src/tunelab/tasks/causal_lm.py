"""Causal language modelling: instruction tuning on conversations and domain adaptation on raw text.

Rows are normalized by their record format (messages, sharegpt, alpaca, prompt-completion, text) into
one of three kinds (chat, prompt-completion, text); the kind's renderer (tasks/lm/) turns them into
tokens with a per-token loss mask, chat rows through the run's chat template.
Samples are optionally packed into full rows (tasks/lm/packing.py). The loss is summed over trained
tokens only, and the engine normalises it by the global count of trained tokens, so every trained
token weighs the same whatever the batch, accumulation or process count.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data import cached_dataset, fingerprint_table, general_text, load_table, normalize_records
from tunelab.data.general_text import paragraph_keys
from tunelab.data.split import hold_out_missing, random_split
from tunelab.errors import ConfigError, DataError, RunError, TrainingError
from tunelab.models import resolve_model
from tunelab.models.templates import ChatTemplate, resolve_template
from tunelab.objectives.base import IGNORE, OBJECTIVES
from tunelab.tasks.base import TASKS, HeldOutSet, PreparedData, Task, dropout_overrides, pad_sequences
from tunelab.tasks.lm import RENDERERS, Renderer, renderer_for
from tunelab.tasks.lm.packing import pack_rows

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.config.schema import RetentionSet
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)
TOKENIZE_VERSION = 1  # bump when the tokenized layout changes, to invalidate cached datasets
#: what a sample of each renderer layout holds, and the columns that give it (for refusals)
LAYOUTS = {
    "sequences": ("single answers", "messages, prompt/completion or text"),
    "pairs": ("preference pairs", "prompt, chosen and rejected"),
    "labelled": ("answers labelled desirable or not", "prompt, completion and a true/false label"),
    "prompts": ("prompts it answers itself", "a prompt (and the columns the rewards read), no answer"),
}


@TASKS.register("causal-lm")
class CausalLM(Task):
    name = "causal-lm"
    peft_task_type = "CAUSAL_LM"
    metrics = {"loss": False, "perplexity": False, "token_accuracy": True}
    default_metric = "loss"
    evaluates_base = True
    generates = True
    default_retention = "general-text"
    outputs = ("next-token-logits",)
    default_objective = "sft"
    servable_as = "chat"
    masks_tokens = True
    sections = ("lm", "generation")

    def __init__(self) -> None:
        super().__init__()
        self.pad_id = 0
        self.template: ChatTemplate | None = None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.renderer: Renderer | None = None  # of the records being prepared, or of the trained run
        self._tables: dict[str, Any] = {}
        self._added: list[str] = []  # lm.add_tokens of runs without a chat template
        self._select: torch.Tensor | None = None  # trained positions, read by the decoder hook
        self._train_records: datasets.Dataset | None = None
        self._train_keys: set[str] | None = None

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        encoded, info, records = self.encode_splits(config, tokenizer, model)
        splits: dict[str, Any] = {}
        for split, ds in encoded.items():
            splits[split] = self._pack(ds, config, split, info) if config.lm.packing else ds
        info["rows"] = {s: len(d) for s, d in splits.items()}
        prompts = self._heldout_prompts(records.get("test"), config, self.renderer)
        log.info("data: %s rows (%s); %.1f%% of train tokens trained", _fmt_rows(info["samples"]),
                 self.renderer.kind, 100 * info["stats"]["train"]["trained_fraction"])
        return PreparedData(splits["train"], splits["validation"], splits["test"], info, extra={"prompts": prompts})

    def encode_splits(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel
    ) -> tuple[dict[str, datasets.Dataset], dict[str, Any], dict[str, datasets.Dataset]]:
        """Load, normalize, split and tokenize every split (unpacked), and run the pre-flight checks.

        Returns (tokenized splits, info, normalized records per split)."""
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        tables = {s: load_table(p, config.data, s) for s, p in config.data.split_paths().items()}
        self._tables = tables
        records, info = {}, {"files": [fingerprint_table(t) for t in tables.values()], "records": {}}
        for split, table in tables.items():
            records[split], info["records"][split] = normalize_records(table, config.data)
        kind = self._one_kind(info["records"], tables)
        if RENDERERS.get(kind).uses_template:
            self.template = resolve_template(tokenizer, config.lm, model.source)
            info["template"] = {"name": self.template.name, "end_of_turn": self.template.end_of_turn,
                                "added_tokens": self.template.added_tokens}
        elif config.lm.add_tokens:
            tokenizer.add_tokens(config.lm.add_tokens, special_tokens=True)
            self._added = list(config.lm.add_tokens)
        self.renderer = renderer_for(kind, tokenizer, self.template, config.lm)
        self._check_layout(config, info["records"]["train"]["records"], tables["train"].name)
        seed = config.train.seed
        records, info["split_from_train"] = hold_out_missing(
            records, config.data.validation_size, config.data.test_size,
            lambda ds, size, what: random_split(ds, size, seed, what))
        encoded, stats, hits = {}, {}, {}
        for split, ds in records.items():
            encoded[split], hits[split] = self._tokenize(ds, split, config, model, info["files"], self.renderer)
            encoded[split], stats[split] = self._drop_untrainable(encoded[split], split, config)
        info.update(stats=stats, cache_hits=hits, samples={s: len(d) for s, d in encoded.items()})
        self._preflight(encoded["train"], stats["train"], config, self.renderer)
        self._train_records = records["train"]
        if config.data.replay is not None:
            encoded["train"], info["replay"] = self._with_replay(encoded["train"], config, model)
        return encoded, info, records

    def prepare_heldout(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, path: str,
        labels: list[str],
    ) -> PreparedData:
        """Tokenize one extra file for `tunelab eval` with the run's saved template (set by load_trained)."""
        self.tokenizer = tokenizer
        table = load_table(path, config.data, "test")
        self._tables = {"test": table}
        records, record_info = normalize_records(table, config.data)
        renderer = renderer_for(record_info["kind"], tokenizer, self.template, config.lm)
        if renderer.uses_template != (self.template is not None):
            raise DataError(f"{table.name} holds {record_info['records']} records, unlike the run's training data",
                            fix="evaluate on data laid out like the training data")
        files = [fingerprint_table(table)]
        ds, hit = self._tokenize(records, "test", config, model, files, renderer)
        ds, stats = self._drop_untrainable(ds, "test", config)
        info: dict[str, Any] = {"files": files, "records": {"test": record_info}, "stats": {"test": stats},
                                "cache_hits": {"test": hit}}
        if config.lm.packing:
            ds = self._pack(ds, config, "test", info)
        info["rows"] = {"test": len(ds)}
        return PreparedData(train=None, validation=None, test=ds, info=info)

    def where(self, split: str, row: int) -> str:
        """File and line of a sample (records split from train point into the train file)."""
        table = self._tables.get(split) or self._tables["train"]
        return table.where(row)

    def _check_layout(self, config: Config, records: str, where: str) -> None:
        """The objective trains on what the records hold (single answers for sft, preference pairs for
        dpo/orpo/simpo, labelled answers for kto); pairs and labelled answers are whole sequences scored
        one by one, so they cannot be packed into rows or mixed with replayed text."""
        assert self.renderer is not None
        name = config.objective.name if config.objective is not None else self.default_objective
        wanted, held = OBJECTIVES.get(name).layout, self.renderer.layout
        if held != wanted:
            fitting = [n for n, cls in OBJECTIVES.items() if cls.layout == held and cls.consumes in self.outputs]
            raise DataError(f"{where}: objective {name} trains on {LAYOUTS[wanted][0]}, but the rows are {records} "
                            f"records ({LAYOUTS[held][0]})",
                            fix=f"give rows with {LAYOUTS[wanted][1]}, or set objective.name: {' | '.join(fitting)}")
        if wanted != "sequences":
            for key, on in (("lm.packing", config.lm.packing), ("data.replay", config.data.replay is not None)):
                if on:
                    raise ConfigError(f"{key} cannot be used with objective {name}: it scores whole sequences "
                                      f"({LAYOUTS[wanted][0]}) one by one", fix=f"remove {key}")

    def _one_kind(self, infos: dict[str, dict[str, Any]], tables: dict[str, Any]) -> str:
        kinds = {split: info["kind"] for split, info in infos.items()}
        if len(set(kinds.values())) > 1:
            listed = ", ".join(f"{tables[s].name} is {infos[s]['records']}" for s in kinds)
            raise DataError(f"the splits hold different kinds of records: {listed}",
                            fix="give train, validation and test the same layout")
        return kinds["train"]

    def _tokenize(
        self, records: datasets.Dataset, split: str, config: Config, model: ResolvedModel, files: list[Any],
        renderer: Renderer,
    ) -> tuple[datasets.Dataset, bool]:
        lm, max_length = config.lm, config.train.max_length
        key = {
            "task": self.name, "version": TOKENIZE_VERSION, "split": split, "files": files,
            "rows": len(records), "tokenizer": model.fingerprint,
            "records": [config.data.records, config.data.bad_rows, config.data.text_column, config.data.max_rows],
            "template": self.template.jinja if self.template else None,
            "added": self.template.added_tokens if self.template else lm.add_tokens,
            "max_length": max_length, "train_on": lm.train_on, "system_prompt": lm.system_prompt,
            "split_seed": config.train.seed, "sizes": [config.data.validation_size, config.data.test_size],
        }

        def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
            out: dict[str, list[Any]] = {column: [] for column in (*renderer.columns, "row")}
            for i in range(len(batch["row"])):
                record = {k: v[i] for k, v in batch.items()}
                for sample in renderer.samples(record, max_length):
                    for column, value in {**sample, "row": record["row"]}.items():
                        out[column].append(value)
            return out

        def build() -> datasets.Dataset:
            return records.map(encode, batched=True, remove_columns=records.column_names, desc=f"tokenize {split}")

        return cached_dataset(key, build)

    def _drop_untrainable(
        self, ds: datasets.Dataset, split: str, config: Config
    ) -> tuple[datasets.Dataset, dict[str, Any]]:
        """Drop samples left with no trained token (all cut off by max_length); return the split's stats."""
        columns = ds.select_columns(["trained", "length", "truncated"]).with_format("numpy")[:]
        trained = np.asarray(columns["trained"], dtype=np.int64)
        lengths = np.asarray(columns["length"], dtype=np.int64)
        truncated = np.asarray(columns["truncated"], dtype=bool)
        empty = np.flatnonzero(trained == 0)
        stats = {
            "samples": len(ds),
            "tokens": int(lengths.sum()),
            "trained_tokens": int(trained.sum()),
            "trained_fraction": float(trained.sum() / max(lengths.sum(), 1)),
            "truncated": int(truncated.sum()),
            "truncation_rate": float(truncated.mean()) if len(ds) else 0.0,
            "longer_than_max_length": int(truncated.sum()),
            "dropped_untrainable": len(empty),
            "max_length": config.train.max_length,
            "length_p50": int(np.percentile(lengths, 50)) if len(ds) else 0,
            "length_p95": int(np.percentile(lengths, 95)) if len(ds) else 0,
        }
        if len(empty) and len(empty) < len(ds):
            log.warning("%s: dropped %d samples with no trained token left after truncation to %d tokens",
                        split, len(empty), config.train.max_length)
            ds = ds.select(np.flatnonzero(trained > 0))
        return ds, stats

    def _preflight(
        self, train: datasets.Dataset, stats: dict[str, Any], config: Config, renderer: Renderer
    ) -> None:
        """Refuse to train when training could not teach anything useful."""
        if stats["trained_tokens"] == 0 or stats["dropped_untrainable"] == stats["samples"]:
            raise DataError(
                f"{config.data.train}: no token is trained (lm.train_on: {config.lm.train_on}; every answer is "
                f"cut off by train.max_length {config.train.max_length} or missing)",
                fix="raise train.max_length, shorten prompts, or check the assistant turns",
            )
        stop = renderer.stop_token()
        if stop is None or not renderer.label_columns:  # prompt-only data: the model writes the answers
            return
        end, end_id = stop
        if not any(end_id in row for row in train[renderer.label_columns[0]]):
            raise DataError(
                f"{config.data.train}: the end-of-turn token {end!r} is never trained, so the model would not "
                "learn to stop (answers are cut off by train.max_length, or the template does not end turns)",
                fix="raise train.max_length, or choose lm.template so turns end with a special token",
            )

    def _pack(self, ds: datasets.Dataset, config: Config, split: str, info: dict[str, Any]) -> datasets.Dataset:
        import datasets as hf_datasets

        rows = {"input_ids": ds["input_ids"], "labels": ds["labels"]}
        packed = hf_datasets.Dataset.from_dict(pack_rows(rows, config.train.max_length))
        fill = sum(packed["length"]) / max(len(packed) * config.train.max_length, 1)
        info.setdefault("packing", {})[split] = {"samples": len(ds), "rows": len(packed), "fill": round(fill, 4)}
        return packed

    def _heldout_prompts(
        self, records: datasets.Dataset | None, config: Config, renderer: Renderer
    ) -> list[dict[str, Any]]:
        """Prompts and reference answers for generation metrics from the first eval.generate_samples
        test records (none for records that ask no question)."""
        n = config.eval.generate_samples
        if records is None or n == 0:
            return []
        prompts = [renderer.heldout_prompt(r) for r in records.select(range(min(n, len(records))))]
        return [p for p in prompts if p is not None]

    # ---- general text: retention sets and replay -----------------------------------------------
    def prepare_retention(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet,
        data: PreparedData,
    ) -> HeldOutSet:
        """A retention set scored by perplexity (and generation when its rows have answers)."""
        metric = spec.metric or "perplexity"
        if metric not in self.metrics:
            raise ConfigError(f"eval.retention {spec.name or spec.source!r}: metric {metric!r} is not a causal-lm "
                              "metric", fix=f"choose one of {', '.join(self.metrics)}")
        name = spec.name or Path(spec.source).stem
        info: dict[str, Any] = {"source": spec.source}
        if spec.source == general_text.NAME:
            docs, info["overlap_removed"] = general_text.documents(
                "retention", spec.max_rows or general_text.DEFAULT_DOCS, self.train_paragraphs())
            path, max_rows = str(general_text.write_documents(docs, "retention")), None
        else:
            path, max_rows = spec.source, spec.max_rows
        ds, prompts = self.encode_extra(path, config, model, f"retention-{name}", max_rows)
        # A long document is scored on its first train.max_length tokens: every document counts the
        # same, and the cost stays bounded by the number of documents.
        first = np.unique(np.asarray(ds["row"]), return_index=True)[1]
        ds = ds.select(np.sort(first))
        info["rows"] = len(ds)
        return HeldOutSet(name, PreparedData(None, None, ds, info), metric, self.metrics[metric], prompts=prompts,
                          info=info)

    def train_paragraphs(self) -> set[str]:
        """Paragraph hashes of the training records (general text that overlaps them is never used)."""
        if self._train_keys is None:
            self._train_keys = set()
            for record in self._train_records or []:
                self._train_keys |= paragraph_keys(self.renderer.text(record))
        return self._train_keys

    def encode_extra(
        self, path: str, config: Config, model: ResolvedModel, split: str, max_rows: int | None
    ) -> tuple[datasets.Dataset, list[dict[str, Any]]]:
        """Tokenize a file of any record layout the way training data is (retention sets, replay),
        with its own kind of records; returns the samples and, for chat/prompt-completion rows,
        generation prompts."""
        data_cfg = config.data.model_copy(update={"records": "auto", "format": "auto", "max_rows": max_rows})
        if Path(path).parent.name == "general-text":
            data_cfg = data_cfg.model_copy(update={"text_column": "text"})
        extra_config = config.model_copy(update={"data": data_cfg})
        table = load_table(path, data_cfg, split)
        records, record_info = normalize_records(table, data_cfg)
        renderer = renderer_for(record_info["kind"], self.tokenizer, self.template, config.lm)
        if renderer.uses_template and self.template is None:
            raise ConfigError(f"{path} holds chat records but this run trains without a chat template",
                              fix="use text or prompt-completion rows for it, or set lm.template")
        ds, _ = self._tokenize(records, split, extra_config, model, [fingerprint_table(table)], renderer)
        ds, _ = self._drop_untrainable(ds, split, extra_config)
        return ds, self._heldout_prompts(records, config, renderer)

    def _with_replay(
        self, train: datasets.Dataset, config: Config, model: ResolvedModel
    ) -> tuple[datasets.Dataset, dict[str, Any]]:
        """Append replayed general samples so they make up `data.replay.fraction` of the training set."""
        import datasets as hf_datasets

        replay = config.data.replay
        assert replay is not None
        wanted = math.ceil(len(train) * replay.fraction / (1 - replay.fraction))
        info: dict[str, Any] = {"source": replay.source, "fraction": replay.fraction}
        if replay.source == general_text.NAME:
            docs, info["overlap_removed"] = general_text.documents("replay", wanted, self.train_paragraphs())
            path = str(general_text.write_documents(docs, "replay"))
        else:
            path = replay.source
        samples, _ = self.encode_extra(path, config, model, "replay", None)
        if len(samples) < wanted:
            log.warning("replay: %s gives %d samples, fewer than the %d asked for", replay.source, len(samples),
                        wanted)
        samples = samples.select(range(min(wanted, len(samples))))
        samples = samples.map(lambda b: {"row": [-1] * len(b["row"])}, batched=True)  # not a training-file row
        info["samples"] = len(samples)
        log.info("replay: %d general samples mixed into %d training samples", len(samples), len(train))
        return hf_datasets.concatenate_datasets([train, samples.cast(train.features)]), info

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        """The k rows with the highest mean loss over their trained tokens, decoded."""
        tokens = outputs["tokens"]
        loss = np.where(tokens > 0, outputs["loss_sum"] / np.maximum(tokens, 1), -np.inf)
        assert self.tokenizer is not None
        rows = []
        for i in np.argsort(-loss, kind="stable")[:k]:
            if not np.isfinite(loss[i]):
                break
            text = self.tokenizer.decode(dataset[int(i)]["input_ids"], skip_special_tokens=False)
            rows.append({"row": int(i), "loss": float(loss[i]), "tokens": int(tokens[i]), "input": text[:2000]})
        return rows

    # ---- model ----------------------------------------------------------------------------
    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        from transformers import AutoModelForCausalLM

        net = AutoModelForCausalLM.from_pretrained(
            model.path,
            trust_remote_code=config.model.trust_remote_code,
            dtype=torch.float32,
            **self.load_kwargs,  # set by the method (4-bit quantization for qlora)
            **dropout_overrides(model.path, config.model.dropout, config.model.trust_remote_code),
        )
        assert self.tokenizer is not None
        if len(self.tokenizer) > net.get_input_embeddings().weight.shape[0]:
            net.resize_token_embeddings(len(self.tokenizer))
        net.config.use_cache = False
        if net.config.pad_token_id is None:
            net.config.pad_token_id = self.pad_id
        self._install_selector(net)
        if config.lm.packing:
            check_packing_isolation(net)
        return net

    def added_token_ids(self) -> list[int]:
        """Ids of tokens this run added to the tokenizer (their embedding rows start untrained)."""
        if self.tokenizer is None:
            return []
        added = self.template.added_tokens if self.template else self._added
        return [int(self.tokenizer.convert_tokens_to_ids(t)) for t in added]

    def _install_selector(self, net: nn.Module) -> None:
        """Make the decoder hand the LM head only the positions that carry loss.

        Logits are (tokens x vocabulary) floats, by far the largest activation of a small LM: for a
        49k vocabulary, 16 x 512 tokens of fp32 logits are 1.6 GB, and most prompt positions carry no
        loss. While `self._select` is set, a forward hook on the decoder replaces its hidden states
        with the selected positions only, so the head computes logits for trained tokens alone.
        """
        def select(_module: nn.Module, _args: Any, output: Any) -> Any:
            if self._select is None:
                return output
            output.last_hidden_state = output.last_hidden_state[self._select].unsqueeze(0)
            return output

        inner = net.get_base_model() if hasattr(net, "get_base_model") else net  # PEFT wraps the HF model
        inner.get_decoder().register_forward_hook(select)

    @contextmanager
    def _selecting(self, mask: torch.Tensor):  # -> Iterator[None]
        self._select = mask
        try:
            yield
        finally:
            self._select = None

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        input_ids = pad_sequences(rows["input_ids"], self.pad_id)
        labels = pad_sequences(rows["labels"], IGNORE)
        targets = torch.full_like(labels, IGNORE)
        targets[:, :-1] = labels[:, 1:]  # position t predicts token t + 1
        length = input_ids.shape[1]
        lengths = torch.as_tensor([len(r) for r in rows["input_ids"]])
        if "position_ids" in rows:
            # Packed rows: per-sample positions; the padding tail restarts at 0, a block of its own.
            positions = torch.stack([
                torch.cat([torch.as_tensor(p), torch.arange(length - len(p))]) for p in rows["position_ids"]
            ])
        else:
            positions = torch.arange(length).expand(len(lengths), -1)
        return {
            "input_ids": input_ids,
            "position_ids": positions,
            "targets": targets,
            "attention_mask": (torch.arange(length) < lengths[:, None]).long(),  # counts tokens; not fed
        }

    def loss_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, targets) for the trained positions only, flattened across the batch.

        No attention mask is passed: padding sits at the end of each row, so under a causal mask no
        real token sees it, and transformers builds the block-diagonal mask of packed rows from the
        position ids (a mask would switch that off)."""
        mask = batch["targets"] != IGNORE
        virtual = prompt_tokens(model)
        if virtual is None:
            with self._selecting(mask):
                out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        else:
            # Prompt/prefix tuning (unpacked rows only): PEFT ignores position ids; prompt tuning puts its
            # virtual tokens before the row, so the decoder's positions are shifted by that many.
            with self._selecting(F.pad(mask, (virtual, 0), value=False)):
                out = model(input_ids=batch["input_ids"], use_cache=False)
        return out.logits[0].float(), batch["targets"][mask]

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        logits, targets = self.loss_logits(model, batch)
        losses = F.cross_entropy(logits, targets, reduction="none")
        correct = (logits.argmax(-1) == targets).float()
        rows = torch.nonzero(batch["targets"] != IGNORE)[:, 0]  # which row each trained token is in
        n_rows = batch["targets"].shape[0]
        per_row = lambda v: torch.zeros(n_rows, dtype=torch.float64).index_add_(0, rows.cpu(), v.double().cpu())  # noqa: E731
        return {
            "loss_sum": per_row(losses).numpy(),
            "correct": per_row(correct).numpy(),
            "tokens": per_row(torch.ones_like(losses)).numpy(),
        }

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        tokens = float(outputs["tokens"].sum()) if outputs else 0.0
        if tokens == 0:
            return {"loss": float("nan"), "perplexity": float("nan"), "token_accuracy": float("nan"), "tokens": 0}
        loss = float(outputs["loss_sum"].sum()) / tokens
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "token_accuracy": float(outputs["correct"].sum()) / tokens,
            "tokens": int(tokens),
        }

    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        """The template is saved with the tokenizer (chat_template.jinja); the generation config of
        saved models stops at the end-of-turn token (done in `finalize_saved`)."""

    def finalize_saved(self, folder: Path) -> None:
        """Make a saved model folder stop generating at the template's end-of-turn token."""
        if self.template is None or self.tokenizer is None:
            return
        from transformers import GenerationConfig

        try:
            gen = GenerationConfig.from_pretrained(folder)
        except OSError:
            gen = GenerationConfig()
        gen.eos_token_id = self.stop_ids()
        gen.pad_token_id = self.pad_id
        gen.save_pretrained(folder)

    def stop_ids(self) -> list[int]:
        """Token ids that end an answer: the template's end-of-turn token and EOS."""
        assert self.tokenizer is not None
        ids = [self.tokenizer.eos_token_id]
        if self.template is not None:
            ids.insert(0, self.tokenizer.convert_tokens_to_ids(self.template.end_of_turn))
        return [int(i) for i in dict.fromkeys(ids) if i is not None]

    # ---- inference ------------------------------------------------------------------------
    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        """The run's merged model/ folder; or, for `method.merge: false`, the base model plus adapter/."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        remote = config.model.trust_remote_code
        model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
        if (model_dir / "config.json").is_file():
            net = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=remote)
            tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
        elif (adapter_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            tokenizer = AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=remote)
            base = AutoModelForCausalLM.from_pretrained(resolve_model(config.model).path, trust_remote_code=remote)
            if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
                base.resize_token_embeddings(len(tokenizer))
            net = PeftModel.from_pretrained(base, adapter_dir)
        else:
            raise RunError(f"{run_dir} has no saved model (no model/ or adapter/)",
                           fix="use a run that finished, or resume it with `tunelab train --resume`")
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.template = _saved_template(run_dir, tokenizer)
        # Prompts are asked as training asked them: through the template of a chat-trained run, raw otherwise.
        self.renderer = renderer_for("chat" if self.template else "prompt-completion", tokenizer, self.template,
                                     config.lm)
        self._install_selector(net)  # eval_step (tunelab eval) scores trained positions only
        return net.eval(), tokenizer

    def encode_prompt(self, item: dict[str, Any], config: Config) -> list[int]:
        """Token ids of one inference prompt, rendered as training rendered it.

        `item` holds `messages` (a conversation ending before the wanted answer) or `prompt` (a
        string: a single user turn for chat-trained runs, raw text for prompt-completion runs)."""
        assert self.renderer is not None, "load_trained first"
        return self.renderer.encode_prompt(item)


def _saved_template(run_dir: Path, tokenizer: PreTrainedTokenizerBase) -> ChatTemplate | None:
    """The chat template a run trained with: recorded in data.json, saved in the tokenizer. Runs on
    prompt-completion or raw text used none, even when the base model has one."""
    import json

    info_file = run_dir / "data.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    recorded = info.get("template")
    if not recorded or not tokenizer.chat_template:
        return None
    return ChatTemplate(recorded["name"], tokenizer.chat_template, recorded["end_of_turn"])


def check_packing_isolation(net: nn.Module) -> None:
    """Refuse packing when the model lets packed samples attend to each other.

    transformers builds a block-diagonal mask from position ids for the architectures that use its
    masking utilities; a model that does not would silently train on cross-sample attention. Two
    short samples are scored packed and alone; their logits must agree.
    """
    vocab = net.get_input_embeddings().weight.shape[0]
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randint(0, vocab, (1, 5), generator=gen), torch.randint(0, vocab, (1, 4), generator=gen)
    positions = torch.cat([torch.arange(5), torch.arange(4)])[None]
    was_training = net.training
    net.eval()
    with torch.inference_mode():
        packed = net(input_ids=torch.cat([a, b], 1), position_ids=positions, use_cache=False).logits[0, 5:]
        alone = net(input_ids=b, use_cache=False).logits[0]
    net.train(was_training)
    if not torch.allclose(packed, alone, atol=1e-3, rtol=1e-3):
        arch = type(net).__name__
        raise TrainingError(f"lm.packing: {arch} lets packed samples attend to each other in this transformers "
                            "version", fix="set lm.packing: false for this model")


def _fmt_rows(rows: dict[str, int]) -> str:
    return ", ".join(f"{s} {n}" for s, n in rows.items())


def prompt_tokens(model: nn.Module) -> int | None:
    """For a PEFT prompt-learning model, how many virtual tokens precede the input in the decoder's
    hidden states (prompt tuning: num_virtual_tokens; prefix tuning: 0, its prefix lives in the
    attention cache); None for every other model."""
    inner = getattr(model, "module", model)  # DDP wraps the PEFT model
    configs = getattr(inner, "peft_config", None)
    if not configs or getattr(inner, "_adapters_disabled", False):  # disable_adapter(): the plain base forward
        return None
    spec = configs.get(getattr(inner, "active_adapter", "default"))
    if spec is None or not getattr(spec, "is_prompt_learning", False):
        return None
    return 0 if str(spec.peft_type).endswith("PREFIX_TUNING") else int(spec.num_virtual_tokens)
