"""OFT and BOFT through PEFT: a learned orthogonal matrix (block-diagonal, or a product of butterfly
factors) multiplies each adapted weight."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.methods.base import METHODS
from tunelab.methods.peft_method import PeftMethod, head_kwargs, targets

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


@METHODS.register("oft")
class Oft(PeftMethod):
    name = "oft"

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import OFTConfig
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_OFT_TARGET_MODULES_MAPPING as DEFAULTS

        spec = config.method
        # r=0: the number of blocks follows from oft_block_size (PEFT takes one of the two)
        return OFTConfig(task_type=task.peft_task_type, r=0, oft_block_size=spec.block_size,
                         module_dropout=spec.module_dropout, target_modules=targets(model, config, DEFAULTS),
                         **head_kwargs(task))


@METHODS.register("boft")
class Boft(PeftMethod):
    name = "boft"

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import BOFTConfig
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_BOFT_TARGET_MODULES_MAPPING as DEFAULTS

        spec = config.method
        # boft_block_num=0: the number of blocks follows from the block size (PEFT takes one of the two)
        return BOFTConfig(task_type=task.peft_task_type, boft_block_size=spec.block_size, boft_block_num=0,
                          boft_n_butterfly_factor=spec.butterfly_factors, boft_dropout=spec.dropout,
                          target_modules=targets(model, config, DEFAULTS), **head_kwargs(task))
