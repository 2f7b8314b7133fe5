"""Constraints between settings, or between a setting and the model or data, checked before the run
folder exists. pydantic validates each field alone; these need the model's config or the size of
the training data. Each refusal is one line naming the key and the largest value that fits.

(`tokens.stride` against the window is checked where windows are made, `window_stride` in
tasks/token_classification.py, since it needs the tokenizer's special tokens.)
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tunelab.engine.batching import planned_steps
from tunelab.errors import ConfigError

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.models import ResolvedModel
    from tunelab.tasks import Task

log = logging.getLogger(__name__)
# Models whose position table starts after the padding index (RoBERTa's "padding_idx + 1" offset).
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "ibert", "data2vec-text"}


def position_limit(model_config: Any) -> int | None:
    """How many token positions the model was built for (None: no fixed limit, or not a text model)."""
    limit = next((getattr(model_config, k) for k in ("max_position_embeddings", "n_positions", "n_ctx")
                  if isinstance(getattr(model_config, k, None), int)), None)
    if limit is not None and getattr(model_config, "model_type", None) in _OFFSET_POSITIONS:
        limit -= (getattr(model_config, "pad_token_id", None) or 0) + 1
    return limit


def check_model_fit(config: Config, task: Task, resolved: ResolvedModel) -> None:
    """train.max_length — plus generation.max_new_tokens when the task generates during evaluation —
    within the model's positions (beyond them a learned position table has no row: an index error
    mid-run, or silent garbage with rotary positions)."""
    if not task.uses_tokenizer:
        return
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=config.model.trust_remote_code)
    limit = position_limit(getattr(model_config, "text_config", None) or model_config)
    if limit is None:
        return
    name = config.model.source
    if config.train.max_length > limit:
        raise ConfigError(f"train.max_length {config.train.max_length} is longer than {name} can read: it has "
                          f"{limit} positions", fix=f"set train.max_length to {limit} or less")
    generates = task.generates and config.eval.generate_samples > 0
    if generates and config.train.max_length + config.generation.max_new_tokens > limit:
        room = limit - config.train.max_length
        raise ConfigError(
            f"generation.max_new_tokens {config.generation.max_new_tokens} after prompts of up to train.max_length "
            f"{config.train.max_length} tokens passes {name}'s {limit} positions",
            fix=f"set generation.max_new_tokens to {room} or less, lower train.max_length, or eval.generate_samples: 0"
            if room > 0 else "lower train.max_length, or set eval.generate_samples: 0")


def check_plan(config: Config, rows: int) -> None:
    """Settings counted in steps against the steps the run will take."""
    cfg = config.train
    steps = planned_steps(rows, cfg)
    if cfg.warmup_steps is not None and cfg.warmup_steps >= steps:
        raise ConfigError(f"train.warmup_steps {cfg.warmup_steps} is not below the run's {steps} optimizer steps "
                          f"({rows} training rows, batch {cfg.batch_size}): the learning rate would never reach "
                          "its peak", fix=f"set train.warmup_steps to {max(steps // 10, 1)} (or at most {steps - 1}), "
                                          "or use train.warmup_ratio")
    every = config.eval.every_steps
    if every is not None and every > steps:
        log.warning("eval.every_steps %d is more than the run's %d steps: validation runs once, at the end",
                    every, steps)
    if cfg.checkpoint_every is not None and cfg.checkpoint_every > steps:
        log.warning("train.checkpoint_every %d is more than the run's %d steps: no periodic checkpoint is written",
                    cfg.checkpoint_every, steps)


def check_output(config: Config) -> None:
    """`output.dir` must be (or become) a writable folder: found before any data is read, not as a raw
    NotADirectoryError when the run folder is created minutes later."""
    import os
    from pathlib import Path

    target = Path(config.output.dir)
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        what = "output.dir" if existing == target else f"output.dir ({target}): {existing}"
        raise ConfigError(f"{what} is a file, not a folder", fix="set output.dir to a folder (it is created if missing)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"output.dir: {existing} is not writable by this user", fix="choose a folder you can write to")
