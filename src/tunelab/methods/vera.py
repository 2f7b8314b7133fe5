"""VeRA through PEFT: shared frozen random projections, two learned scaling vectors per layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.peft_method import PeftMethod, head_kwargs, targets

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


@METHODS.register("vera")
class Vera(PeftMethod):
    name = "vera"

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import VeraConfig
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING as DEFAULTS

        spec = config.method
        # save_projection: the shared random matrices go into the adapter file, so it loads anywhere
        # without regenerating them from the PRNG key
        return VeraConfig(task_type=task.peft_task_type, r=spec.r, vera_dropout=spec.dropout,
                          d_initial=spec.d_initial, target_modules=targets(model, config, DEFAULTS),
                          save_projection=True, projection_prng_key=config.train.seed, **head_kwargs(task))
