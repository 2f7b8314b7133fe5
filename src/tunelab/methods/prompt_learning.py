"""Prompt tuning and prefix tuning through PEFT (causal LMs): learned virtual tokens before every input
(prompt tuning: input embeddings; prefix tuning: keys and values in each attention layer). The base
weights never change, so there is nothing to merge: adapter/ is the trained result and every command
that serves the run loads it onto the base model.

They need unpacked rows: PEFT puts the virtual tokens once before each row and drops position ids, so
several samples packed into one row would share one prompt and attend to each other.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import METHODS
from tunelab.methods.peft_method import PeftMethod

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


# PEFT warns on every generation step of a prompt-learning model that it drops position ids; we pass
# unpacked rows, whose positions are the default ones, so the warning says nothing here.
warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning")


class _PromptLearning(PeftMethod):
    def validate(self, config: Config, task: Task) -> None:
        if task.peft_task_type != "CAUSAL_LM":
            raise ConfigError(f"method {self.name} adapts causal LMs; a {task.name} model has no prompt to extend",
                              fix="use method.name: lora (or another adapter) for this task")
        if config.lm.packing:
            raise ConfigError(f"method {self.name} needs one sample per row: PEFT puts the virtual tokens once "
                              "before each row and ignores the position ids packing relies on",
                              fix="set lm.packing: false")
        assert config.objective is not None
        if config.objective.name != "sft":
            raise ConfigError(f"method {self.name} trains with the sft objective only (the preference and RL "
                              "objectives score sequences with their own forward pass)",
                              fix="use objective.name: sft, or method.name: lora")

    def save(self, model: nn.Module, run_model_dir: Path, config: Config) -> dict[str, str]:
        adapter_dir = run_model_dir.parent / "adapter"
        self.save_adapter(model, adapter_dir)
        return {"adapter": str(adapter_dir)}


@METHODS.register("prompt-tuning")
class PromptTuning(_PromptLearning):
    name = "prompt-tuning"

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        spec = config.method
        text = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": spec.init_text,
                "tokenizer_name_or_path": model.name_or_path} if spec.init_text else {}
        return PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec.num_virtual_tokens, **text)


@METHODS.register("prefix-tuning")
class PrefixTuning(_PromptLearning):
    name = "prefix-tuning"

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import PrefixTuningConfig

        spec = config.method
        return PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=spec.num_virtual_tokens,
                                  prefix_projection=spec.projection)
