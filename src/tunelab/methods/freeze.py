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
