"""The starting model's scores, cached across runs like tokenized data.

Before the first step a causal-LM run scores the base model: validation and test loss, answers to the
held-out prompts, every retention set. Those depend only on the base weights and on what is scored,
not on the learning rate, epochs or LoRA rank a user iterates on; the base is scored with its adapters
disabled (engine-free: PEFT's `disable_adapter`), so the figures are the base model's own. The key is
a sha256 over everything the figures depend on: the model's content fingerprint, the method where it
changes the base (QLoRA quantizes it), the scored rows' token ids, the prompts and references, the
precision, attention kernel, eval batch size, generation settings, seed, device and library versions.
A changed input is a different key, never a stale value. Single-process runs only: every process of a
distributed run must take the same branch, and a cache file can appear between their checks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab import __version__
from tunelab.config.schema import GrpoObjective
from tunelab.paths import cache_dir

if TYPE_CHECKING:
    import datasets

    from tunelab.config import Config
    from tunelab.tasks import HeldOutSet, PreparedData

log = logging.getLogger(__name__)
# adapters disabled: the unchanged base
PEFT_AT_INIT = {"lora", "dora", "ia3", "loha", "lokr", "vera", "oft", "prompt-tuning", "prefix-tuning"}


def cache_key(config: Config, fingerprint: str, data: PreparedData, retention: list[HeldOutSet],
              attention: str, device: str, world: int, tokenizer_size: int) -> str:
    import torch
    import transformers

    method = {"name": "peft"} if config.method.name in PEFT_AT_INIT else config.method.model_dump(mode="json")
    parts = {
        "tunelab": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "model": fingerprint, "method": method, "task": config.task, "tokenizer_size": tokenizer_size,
        "precision": config.train.precision, "attention": attention, "device": device, "world": world,
        "seed": config.train.seed, "max_length": config.train.max_length, "objective": _objective(config),
        "eval_batch": config.eval.batch_size or 2 * config.train.batch_size, "base": config.eval.base,
        "generation": config.generation.model_dump(mode="json"),
        "generate_max_new_tokens": config.eval.generate_max_new_tokens,
        "validation": _rows(data.validation), "test": _rows(data.test), "files": _files(data),
        "sections": _task_sections(config),
        "prompts": [[p["prompt_ids"], p["reference"]] for p in data.extra.get("prompts") or []],
        "retention": [[s.name, s.metric, s.greater_is_better, _rows(s.data.test),
                       [[p["prompt_ids"], p["reference"]] for p in s.prompts[: config.eval.generate_samples]]]
                      for s in retention],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _task_sections(config: Config) -> dict[str, Any]:
    """The task's own config sections (image size, pooling, an evaluation corpus, target scaling): how
    the scored rows become inputs and scores, which the rows' digest does not show."""
    from tunelab.tasks import TASKS

    sections = TASKS.get(config.task).sections
    return {name: getattr(config, name).model_dump(mode="json") for name in sections
            if getattr(config, name, None) is not None}


def _objective(config: Config) -> Any:
    """The objective's settings (what preference and RL metrics of the base depend on: beta, rewards,
    sampling), with the bytes of any reward file, whose edits change scores the settings do not show."""
    if config.objective is None:
        return None
    settings = config.objective.model_dump(mode="json", by_alias=True)
    files = config.objective.files() if isinstance(config.objective, GrpoObjective) else []
    return [settings, [hashlib.sha256(Path(f).read_bytes()).hexdigest() for _, f in files if Path(f).is_file()]]


def load(key: str) -> dict[str, Any] | None:
    if os.environ.get("TUNELAB_BASE_CACHE") == "0":
        return None
    try:
        return json.loads(_path(key).read_text())
    except (OSError, ValueError):
        return None


def store(key: str, scores: dict[str, Any]) -> None:
    if os.environ.get("TUNELAB_BASE_CACHE") == "0":
        return
    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(scores))
        os.replace(tmp, path)  # readers see the whole file or none
    except OSError as err:
        log.debug("base scores not cached: %s", err)


def _rows(ds: datasets.Dataset | None) -> str | None:
    """A digest of every column a split scores: token ids and labels, but also the other sides of a pair
    (anchor_input_ids, positive_input_ids) and image paths, which `_files` backs with their bytes."""
    if ds is None:
        return None
    table = ds.with_format(None)[:]
    return hashlib.sha256(json.dumps(table, sort_keys=True, default=repr).encode()).hexdigest()


def _files(data: PreparedData) -> list[Any]:
    """The sha256 of the files the scored splits were read from (an image's bytes change under the same
    path); every split's where validation or test was cut from train."""
    entries = data.info.get("files") or []
    held = [e for e in entries if isinstance(e, dict) and e.get("split") in ("validation", "test")]
    chosen = held if len(held) == len([s for s in (data.validation, data.test) if s is not None]) else entries
    return [[f.get("sha256") for f in e.get("files", [])] for e in chosen if isinstance(e, dict)]


def _path(key: str) -> Path:
    return cache_dir() / "base-scores" / f"{key}.json"
