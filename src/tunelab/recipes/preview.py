"""`tunelab data preview`: what the model will be trained on, token by token, before training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tunelab.config import Config
from tunelab.errors import ConfigError
from tunelab.models import load_tokenizer, resolve_model
from tunelab.objectives.base import IGNORE
from tunelab.recipes.governance import resolve_data
from tunelab.tasks import TASKS

if TYPE_CHECKING:
    from tunelab.tasks.causal_lm import CausalLM


@dataclass
class PreviewSample:
    where: str
    pieces: list[tuple[str, bool]]  # (decoded token text, carries loss)


def preview(config: Config, n: int = 3) -> tuple[list[PreviewSample], dict[str, Any]]:
    """The first `n` training samples as rendered and masked for training, and the data statistics
    (a preference pair shows its chosen and its rejected sequence).

    Runs the same pre-flight checks as `tunelab train`, so a config it accepts will start training."""
    config, _inputs, _workspace = resolve_data(config)  # NAME@version data refs → the version's files
    task_class = TASKS.get(config.task)
    if not task_class.masks_tokens:
        masked = [name for name, cls in TASKS.items() if cls.masks_tokens]
        raise ConfigError(f"data preview shows {' / '.join(masked)} samples; task {config.task!r} has no loss mask",
                          fix=f"use it with task: {masked[0]}")
    task: CausalLM = task_class()  # type: ignore[assignment]
    task.validate_config(config)
    resolved = resolve_model(config.model)
    tokenizer = load_tokenizer(resolved, config.model)
    encoded, info, _ = task.encode_splits(config, tokenizer, resolved)
    train = encoded["train"]
    assert task.renderer is not None
    samples = []
    for row in train.select(range(min(n, len(train)))):
        where = task.where("train", row["row"])
        if "desirable" in row:  # a KTO sample: say which way its answer is labelled
            where += " · desirable" if row["desirable"] else " · undesirable"
        if not task.renderer.label_columns:  # a GRPO prompt: nothing in the data is trained
            ids = row["input_ids"]
            samples.append(PreviewSample(f"{where} · prompt", token_pieces(tokenizer, ids, [False] * len(ids))))
        # one sequence per sample, or a preference pair's two: chosen_labels, rejected_labels
        for labels in task.renderer.label_columns:
            side = labels.removesuffix("labels").rstrip("_")
            trained = [label != IGNORE for label in row[labels]]
            ids = row[f"{side}_input_ids" if side else "input_ids"]
            shown = f"{where} · {side}" if side else where
            samples.append(PreviewSample(shown, token_pieces(tokenizer, ids, trained)))
    return samples, info


def token_pieces(tokenizer: Any, ids: list[int], trained: list[bool]) -> list[tuple[str, bool]]:
    """Each token's text, decoded incrementally so multi-byte characters split across tokens show
    up once, on the token that completes them."""
    pieces, shown = [], ""
    for j, keep in enumerate(trained):
        text = tokenizer.decode(ids[: j + 1])
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            pieces.append(("", keep))
            continue
        pieces.append((text[len(shown):], keep))
        shown = text
    return pieces
