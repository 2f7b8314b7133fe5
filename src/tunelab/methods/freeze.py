"""Freeze the embeddings, the first N transformer layers and/or parameters matching name patterns."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import nn

from tunelab.errors import ConfigError, TrainingError
from tunelab.methods.base import METHODS, Method

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


@METHODS.register("freeze")
class Freeze(Method):
    name = "freeze"

    def apply(self, model: nn.Module, config: Config, task: Task) -> nn.Module:
        spec = config.method
        if spec.train_last is not None:
            return _train_last(model, spec.train_last, spec.patterns)
        frozen: list[nn.Parameter] = []
        layers, layers_name = find_layers(model)
        if spec.layers > len(layers):
            raise ConfigError(
                f"method.layers is {spec.layers} but the model has {len(layers)} layers",
                fix=f"use a value from 0 to {len(layers)}",
            )
        for layer in list(layers)[: spec.layers]:
            frozen.extend(layer.parameters())
        if spec.embeddings:
            frozen.extend(embedding_parameters(model, layers_name))
        patterns = [re.compile(p) for p in spec.patterns]
        frozen.extend(p for n, p in model.named_parameters() if any(r.search(n) for r in patterns))
        for param in frozen:
            param.requires_grad_(False)
        if not any(p.requires_grad for p in model.parameters()):
            raise TrainingError("method 'freeze' froze every parameter", fix="freeze fewer layers or patterns")
        return model


def _train_last(model: nn.Module, n: int, patterns: list[str]) -> nn.Module:
    """Freeze every parameter registered before the last `n` blocks; the blocks and the head after
    them (final norm, classifier) train."""
    blocks = find_blocks(model)
    if n > len(blocks):
        raise ConfigError(f"method.train_last is {n} but the model has {len(blocks)} blocks",
                          fix=f"use a value from 0 to {len(blocks)}")
    last_block = {id(p) for p in blocks[-1].parameters()}
    keep = {id(p) for block in blocks[len(blocks) - n :] for p in block.parameters()}
    after, seen_last = set(), False
    for param in model.parameters():  # registration order: what follows the last block is the head
        if id(param) in last_block:
            seen_last = True
        elif seen_last:
            after.add(id(param))
    regexes = [re.compile(p) for p in patterns]
    for name, param in model.named_parameters():
        trainable = (id(param) in keep or id(param) in after) and not any(r.search(name) for r in regexes)
        param.requires_grad_(trainable)
    if not any(p.requires_grad for p in model.parameters()):
        raise TrainingError("method 'freeze' froze every parameter", fix="raise method.train_last")
    return model


def find_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's blocks in order: the transformer layers, or a CNN's `blocks`/`stages` (nested
    stages are flattened into their blocks)."""
    try:
        layers, _ = find_layers(model)
        return list(layers)
    except ConfigError:
        pass
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("blocks", "stages") and isinstance(module, (nn.Sequential, nn.ModuleList)):
            flat: list[nn.Module] = []
            for child in module:
                is_stage = isinstance(child, (nn.Sequential, nn.ModuleList))
                flat.extend(child if is_stage else [child])
            return flat
    raise ConfigError(f"cannot find the blocks of {type(model).__name__}",
                      fix="use method.patterns to name the parameters to freeze")


def find_layers(model: nn.Module) -> tuple[nn.ModuleList, str]:
    """The stack of transformer blocks: the ModuleList as long as config.num_hidden_layers."""
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    for name, module in candidates:
        if expected is None or len(module) == expected:
            return module, name
    raise ConfigError(
        f"cannot find the transformer layers of {type(model).__name__}",
        fix="use method.patterns to name the parameters to freeze",
    )


def embedding_parameters(model: nn.Module, layers_name: str) -> list[nn.Parameter]:
    """Parameters registered before the first transformer layer: token/position embeddings and their norm.

    Relying on registration order keeps this architecture-agnostic (BERT's `embeddings.*`,
    Llama's `embed_tokens`) without a per-model table.
    """
    params = []
    for name, param in model.named_parameters():
        if name.startswith(layers_name + "."):
            break
        params.append(param)
    return params
