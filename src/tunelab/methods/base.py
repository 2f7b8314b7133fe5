"""The method interface: how a loaded model is adapted before training and saved after it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.choices import Choices

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


class Method:
    """Base class; `full` is this class unchanged. Subclasses override `apply` and/or `save`."""

    name = "full"

    def validate(self, config: Config, task: Task) -> None:
        """Reject settings this method cannot honour here (hardware, task), before anything loads."""

    def load_kwargs(self, config: Config) -> dict[str, Any]:
        """Extra `from_pretrained` kwargs the method needs when the task loads the model."""
        return {}

    def apply(self, model: nn.Module, config: Config, task: Task) -> nn.Module:
        """Freeze, wrap or otherwise prepare `model` for training; return the model to train."""
        return model

    def lr_scales(self, model: nn.Module, config: Config) -> dict[int, float]:
        """Learning-rate factors by parameter id for parameters that train faster or slower (LoRA+)."""
        return {}

    def save(self, model: nn.Module, run_model_dir: Path, config: Config) -> dict[str, str]:
        """Write a folder loadable with plain transformers; return {artifact: path} written."""
        model.save_pretrained(run_model_dir, safe_serialization=True)
        return {"model": str(run_model_dir)}


METHODS: Choices[type[Method]] = Choices("method")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared tensors are counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        count = getattr(param, "ds_numel", None) or param.numel()  # ZeRO-3 keeps a local partition only
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total
