"""LoHa through PEFT (LyCORIS): the update as the Hadamard product of two low-rank products."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.peft_method import PeftMethod, head_kwargs, targets

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


@METHODS.register("loha")
class Loha(PeftMethod):
    name = "loha"

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import LoHaConfig
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING as DEFAULTS

        spec = config.method
        return LoHaConfig(task_type=task.peft_task_type, r=spec.r, alpha=spec.alpha, rank_dropout=spec.rank_dropout,
                          module_dropout=spec.module_dropout, target_modules=targets(model, config, DEFAULTS),
                          **head_kwargs(task))
