"""QLoRA: LoRA on a base model whose frozen weights are stored in 4 bits (bitsandbytes).

Only CUDA has the bitsandbytes 4-bit kernels, so the method is refused elsewhere before anything
loads; on CPU, plain `lora` is the same method without the memory saving.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import METHODS
from tunelab.methods.lora import Lora

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@METHODS.register("qlora")
class Qlora(Lora):
    name = "qlora"

    def validate(self, config: Config, task: Task) -> None:
        if not torch.cuda.is_available():
            raise ConfigError(
                "method qlora needs a CUDA GPU: bitsandbytes' 4-bit kernels do not run on this machine's CPU",
                fix="use method.name: lora here (same adapter, full-precision base), or train on a GPU",
            )
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise ConfigError("method qlora needs the bitsandbytes package",
                              fix="pip install bitsandbytes (a CUDA build of torch must be installed)") from None

    def load_kwargs(self, config: Config) -> dict[str, Any]:
        from transformers import BitsAndBytesConfig

        spec = config.method
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=spec.quant_type,
            bnb_4bit_use_double_quant=spec.double_quant,
            bnb_4bit_compute_dtype=DTYPES[spec.compute_dtype],
        )
        # One process per GPU (Accelerate/torchrun): each loads its copy onto its own device.
        device = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return {"quantization_config": quantization, "device_map": {"": device}}

    def apply(self, model: nn.Module, config: Config, task: Task) -> nn.Module:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.train.gradient_checkpointing
        )
        return super().apply(model, config, task)
