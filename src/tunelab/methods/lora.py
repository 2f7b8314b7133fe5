"""LoRA through PEFT; the task's new head (e.g. the classifier) trains fully and is saved with the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import METHODS, Method

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


@METHODS.register("lora")
class Lora(Method):
    name = "lora"
    use_dora = False

    def apply(self, model: nn.Module, config: Config, task: Task) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        spec = config.method
        targets = None if spec.target_modules == "auto" else spec.target_modules
        peft_config = LoraConfig(
            task_type=task.peft_task_type,
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=targets,
            bias=spec.bias,
            use_dora=self.use_dora,
        )
        try:
            return get_peft_model(model, peft_config)
        except ValueError as err:
            if "target_modules" in str(err):
                model_type = getattr(model.config, "model_type", "?")
                raise ConfigError(
                    f"method.target_modules: PEFT has no default for model type {model_type!r}",
                    fix="list the modules to adapt, e.g. [q_proj, v_proj], or use 'all-linear'",
                ) from None
            raise

    def save(self, model: nn.Module, run_model_dir: Path, config: Config) -> dict[str, str]:
        adapter_dir = run_model_dir.parent / "adapter"
        model.save_pretrained(adapter_dir)
        written = {"adapter": str(adapter_dir)}
        if config.method.merge:
            merged = model.merge_and_unload()
            merged.save_pretrained(run_model_dir, safe_serialization=True)
            written["model"] = str(run_model_dir)
        return written
