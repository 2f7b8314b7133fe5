"""Generation: batched, KV-cached decoding until a stop token, and held-out prompts answered and scored
(metrics/generation.py) against their reference answers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch

from tunelab.engine.sharding import no_grad_for

from tunelab.metrics.generation import score

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tunelab.config.schema import GenerationConfig


def hf_generation_kwargs(cfg: GenerationConfig, stop_ids: list[int], pad_id: int) -> dict[str, Any]:
    """`model.generate` keyword arguments for our generation settings."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": cfg.max_new_tokens,
        "do_sample": cfg.do_sample,
        "repetition_penalty": cfg.repetition_penalty,
        "eos_token_id": stop_ids,
        "pad_token_id": pad_id,
    }
    if cfg.do_sample:
        kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k)
    else:  # greedy: unset the sampling knobs a model's generation_config may carry, to avoid warnings
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    cfg: GenerationConfig,
    stop_ids: list[int],
    pad_id: int,
    batch_size: int = 8,
) -> list[list[int]]:
    """New token ids for each prompt (token ids), generated in left-padded batches of similar length."""
    device = next(model.parameters()).device
    kwargs = hf_generation_kwargs(cfg, stop_ids, pad_id)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    torch.manual_seed(cfg.seed)
    was_training = model.training
    model.eval()
    with no_grad_for(model):
        for batch in _batches(order, batch_size):
            longest = max(len(prompts[i]) for i in batch)
            ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, longest - len(prompts[i]) :] = torch.as_tensor(prompts[i])
                mask[row, longest - len(prompts[i]) :] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, **kwargs)
            for row, i in enumerate(batch):
                answers[i] = _until_stop(out[row, longest:].tolist(), stop_ids)
    model.train(was_training)
    return answers


def _batches(order: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


def _until_stop(ids: list[int], stop_ids: list[int]) -> list[int]:
    for at, token in enumerate(ids):
        if token in stop_ids:
            return ids[:at]
    return ids


EVAL_BATCH = 32  # held-out prompts answered together (a KV-cached batch is nearly free on a CPU)


def eval_budget(prompts: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, cfg: GenerationConfig,
                wanted: int | str = "auto") -> int:
    """max_new_tokens for evaluation answers: `wanted`, or with auto twice the longest reference + 16."""
    if wanted != "auto":
        return int(wanted)
    longest = max((len(tokenizer(p["reference"], add_special_tokens=False)["input_ids"]) for p in prompts), default=0)
    return min(cfg.max_new_tokens, 2 * longest + 16)


def generation_eval(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[dict[str, Any]],
    cfg: GenerationConfig,
    stop_ids: list[int],
    *,
    max_new_tokens: int | str = "auto",
    autocast: Any = None,
) -> tuple[dict[str, float], list[str]]:
    """Answer every held-out prompt; return (metrics, answers). `autocast` is the training run's
    (bf16 runs generate in bf16 too); `max_new_tokens` is eval.generate_max_new_tokens."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    budget = eval_budget(prompts, tokenizer, cfg, max_new_tokens)
    settings = cfg.model_copy(update={"max_new_tokens": budget})
    log.info("generating answers to %d held-out prompts (at most %d new tokens each)", len(prompts), budget)
    with autocast if autocast is not None else nullcontext():
        new_ids = generate(model, [p["prompt_ids"] for p in prompts], settings, stop_ids, pad_id, EVAL_BATCH)
    answers = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in new_ids]
    metrics = score(answers, [p["reference"] for p in prompts])
    metrics["samples"] = len(prompts)
    return metrics, answers
