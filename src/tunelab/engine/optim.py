"""AdamW with decoupled weight decay groups, layer-wise learning-rate decay, and the warmup schedules
from transformers."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from tunelab.methods.freeze import find_blocks

if TYPE_CHECKING:
    from tunelab.config.schema import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig, method_scales: dict[int, float] | None = None
                    ) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and norm weights (1-D tensors) get no weight decay.

    With `train.layer_lr_decay`, every block gets its own learning rate (see `layer_scales`);
    `method_scales` (by parameter id, the method's: LoRA+) multiply in. Groups are ordered highest
    rate first."""
    scales = layer_scales(model, cfg.layer_lr_decay) if cfg.layer_lr_decay else {}
    method_scales = method_scales or {}
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        if param.requires_grad:
            key = (scales.get(id(param), 1.0) * method_scales.get(id(param), 1.0), param.ndim >= 2)
            groups.setdefault(key, []).append(param)
    ordered = sorted(groups.items(), key=lambda item: (-item[0][0], not item[0][1]))
    param_groups = [
        {"params": params, "lr": cfg.learning_rate * scale, "weight_decay": cfg.weight_decay if decays else 0.0}
        for (scale, decays), params in ordered
    ]
    # The fused kernel (one pass over all tensors) is what HF Trainer uses by default too.
    return torch.optim.AdamW(param_groups, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_epsilon,
                             fused=True)


def layer_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """Learning-rate factor per parameter (by id) for layer-wise decay.

    The top block trains at 1, each block below at `decay` times the one above, and everything
    registered before the first block (embeddings) at decay ** n_blocks. Parameters after the last
    block (final norm, task head) keep the full rate: they are new or task-specific. Registration
    order is what tells embeddings from heads, as in the freeze method, so no per-architecture table."""
    blocks = find_blocks(model)
    depth = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    n = len(blocks)
    scales: dict[int, float] = {}
    before_blocks = True
    for param in model.parameters():
        if id(param) in depth:
            before_blocks = False
            scales[id(param)] = decay ** (n - 1 - depth[id(param)])
        else:
            scales[id(param)] = decay**n if before_blocks else 1.0
    return scales


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total_steps)
    name = {"constant": "constant_with_warmup"}.get(cfg.scheduler, cfg.scheduler)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
