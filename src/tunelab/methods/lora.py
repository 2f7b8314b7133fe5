"""LoRA through PEFT; the task's new head (e.g. the classifier) trains fully and is saved with the adapter."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import METHODS
from tunelab.methods.peft_method import PeftMethod, head_kwargs, targets

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task

# Inits that move part of each frozen weight into the adapter (W = W_res + B0 A0): PEFT's names for them.
MUTATING_INITS = {"pissa": "pissa", "pissa-fast": "pissa_niter_16", "olora": "olora"}


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
            init_lora_weights=_init_lora_weights(spec.init),
            **_embedding_training(model, config, task),
            **head_kwargs(task),
        )

    def validate(self, config: Config, task: Task) -> None:
        init = getattr(config.method, "init", "default")
        if init not in MUTATING_INITS:
            return
        if self.name != "lora":
            raise ConfigError(f"method.init: {init} changes the frozen base weights, which {self.name} does not "
                              "support", fix="use method.name: lora, or method.init: default")
        if config.objective is not None and getattr(config.objective, "beta", 0) and config.objective.name == "grpo":
            # GRPO's reference is the model with adapters off during training; with PiSSA/OLoRA that is
            # W_res, not the starting model.
            raise ConfigError(f"method.init: {init} takes part of the base into the adapter, so GRPO's reference "
                              "(the model with adapters off) would not be the starting model",
                              fix="use method.init: default, or objective.beta: 0")

    def apply(self, model: nn.Module, config: Config, task: Task) -> nn.Module:
        peft_model = super().apply(model, config, task)
        if config.method.init in MUTATING_INITS:
            from peft import get_peft_model_state_dict

            # B0 and A0, kept with the model (the method object that saves is not the one that applied);
            # `save_adapter` turns the trained adapter into B A - B0 A0 on the original weights.
            initial = {k: t.detach().clone() for k, t in get_peft_model_state_dict(peft_model).items()}
            peft_model.tunelab_initial_adapter = initial
        return peft_model

    def save_adapter(self, model: nn.Module, adapter_dir: Path) -> None:
        initial = getattr(model, "tunelab_initial_adapter", None)
        if initial is None:
            return super().save_adapter(model, adapter_dir)
        import copy

        from safetensors.torch import save_file

        # PiSSA/OLoRA: saved through PEFT's conversion as a plain LoRA of rank 2r on the original W. The
        # initial adapter is written flagged as a plain init, so PEFT does not decompose the base again.
        with tempfile.TemporaryDirectory(prefix="tunelab-lora-init-") as scratch:
            folder = Path(scratch) / "initial"
            spec = copy.deepcopy(model.peft_config["default"])
            spec.init_lora_weights = True
            spec.save_pretrained(folder)
            save_file({k: t.contiguous() for k, t in initial.items()}, folder / "adapter_model.safetensors")
            model.save_pretrained(adapter_dir, path_initial_model_for_weight_conversion=str(folder))
        _restore_dropped(model, adapter_dir)

    def lr_scales(self, model: nn.Module, config: Config) -> dict[int, float]:
        """LoRA+ (method.lr_ratio): the B matrices learn `lr_ratio` times faster than A."""
        ratio = config.method.lr_ratio
        if not ratio:
            return {}
        return {id(p): ratio for n, p in model.named_parameters() if p.requires_grad and ".lora_B." in n}


def _restore_dropped(model: nn.Module, adapter_dir: Path) -> None:
    """PEFT's PiSSA/OLoRA conversion (0.21) writes only the lora_A/lora_B tensors and drops the rest of the
    adapter, the trained classifier head among them: put those back from the model."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    path = adapter_dir / "adapter_model.safetensors"
    converted = load_file(path)
    dropped = {k: t.detach().contiguous() for k, t in get_peft_model_state_dict(model).items() if k not in converted
               and ".lora_A." not in k and ".lora_B." not in k}
    if dropped:
        save_file({**converted, **dropped}, path, metadata={"format": "pt"})


def _init_lora_weights(init: str) -> bool | str:
    """method.init as PEFT's `init_lora_weights`."""
    return True if init == "default" else MUTATING_INITS.get(init, init)


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
