"""IA3 through PEFT: learned vectors rescaling keys, values and feed-forward activations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.peft_method import PeftMethod, head_kwargs, targets

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


@METHODS.register("ia3")
class Ia3(PeftMethod):
    name = "ia3"

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import IA3Config
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as DEFAULTS

        chosen = targets(model, config, DEFAULTS)
        feedforward = config.method.feedforward_modules
        if feedforward == "auto":
            # PEFT's default when it has one for the architecture; no feed-forward module among our fallback
            feedforward = None if chosen is None else []
        return IA3Config(task_type=task.peft_task_type, target_modules=chosen, feedforward_modules=feedforward,
                         **head_kwargs(task))
