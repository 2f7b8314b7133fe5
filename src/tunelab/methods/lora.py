"""LoRA through PEFT; the task's new head (e.g. the classifier) trains fully and is saved with the adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import METHODS
from tunelab.methods.peft_method import PeftMethod, head_kwargs, targets

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


@METHODS.register("lora")
class Lora(PeftMethod):
    name = "lora"
    use_dora = False

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        from peft import LoraConfig
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

        spec = config.method
        return LoraConfig(
            task_type=task.peft_task_type,
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=targets(model, config, DEFAULTS),
            bias=spec.bias,
            use_dora=self.use_dora,
            use_rslora=spec.use_rslora,
            init_lora_weights=True if spec.init == "default" else spec.init,
            **_embedding_training(model, config, task),
            **head_kwargs(task),
        )

    def lr_scales(self, model: nn.Module, config: Config) -> dict[int, float]:
        """LoRA+ (method.lr_ratio): the B matrices learn `lr_ratio` times faster than A."""
        ratio = config.method.lr_ratio
        if not ratio:
            return {}
        return {id(p): ratio for n, p in model.named_parameters() if p.requires_grad and ".lora_B." in n}


def _embedding_training(model: nn.Module, config: Config, task: Task) -> dict[str, Any]:
    """LoraConfig kwargs for `method.train_embeddings`: train only the rows of added tokens (PEFT
    trainable tokens), or the whole input embedding and LM head (modules_to_save)."""
    mode = getattr(config.method, "train_embeddings", "none")
    new_ids = task.added_token_ids()
    if mode == "auto":
        mode = "new-tokens" if new_ids else "none"
    if mode == "none":
        return {}
    names = _embedding_module_names(model)
    if mode == "all":
        return {"modules_to_save": names}
    if not new_ids:
        raise ConfigError("method.train_embeddings: new-tokens, but this run adds no tokens",
                          fix="add tokens with lm.add_tokens, or set method.train_embeddings: auto")
    return {"trainable_token_indices": {name: new_ids for name in names}}


def _embedding_module_names(model: nn.Module) -> list[str]:
    """Names (last component) of the input embedding and, when not tied to it, the output head."""
    wanted = [model.get_input_embeddings()]
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = getattr(model.config, "tie_word_embeddings", False)
    if output is not None and not tied:
        wanted.append(output)
    return [name.rsplit(".", 1)[-1] for name, module in model.named_modules() if any(module is w for w in wanted)]
