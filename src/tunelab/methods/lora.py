"""LoRA through PEFT; the task's new head (e.g. the classifier) trains fully and is saved with the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import METHODS, Method

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


# For architectures PEFT has no default for (vision transformers, among others): the attention's
# query and value projections, under the names transformers uses for them.
FALLBACK_TARGETS = (["q_proj", "v_proj"], ["query", "value"])


def _fallback_targets(model: nn.Module) -> list[str] | None:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if getattr(getattr(model, "config", None), "model_type", None) in DEFAULTS:
        return None  # PEFT's own default applies
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return next((pair for pair in FALLBACK_TARGETS if set(pair) <= names), None)


@METHODS.register("lora")
class Lora(Method):
    name = "lora"
    use_dora = False

    def apply(self, model: nn.Module, config: Config, task: Task) -> nn.Module:
        from peft import LoraConfig, get_peft_model

        spec = config.method
        targets = None if spec.target_modules == "auto" else spec.target_modules
        if targets is None:
            targets = _fallback_targets(model)
        peft_config = LoraConfig(
            task_type=task.peft_task_type,
            r=spec.r,
            lora_alpha=spec.alpha,
            lora_dropout=spec.dropout,
            target_modules=targets,
            bias=spec.bias,
            use_dora=self.use_dora,
            **_embedding_training(model, config, task),
            **({"modules_to_save": task.head_modules} if task.peft_task_type is None and task.head_modules else {}),
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
