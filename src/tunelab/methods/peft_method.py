"""What every PEFT adapter method shares: wrapping the model with `get_peft_model`, the task's new
head trained fully and saved with the adapter, and saving adapter/ (and model/ merged)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from tunelab.errors import ConfigError
from tunelab.methods.base import Method

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.tasks.base import Task


# For architectures PEFT has no default for (vision transformers, among others): the attention's
# query and value projections, under the names transformers uses for them.
FALLBACK_TARGETS = (["q_proj", "v_proj"], ["query", "value"])


class PeftMethod(Method):
    """A subclass says which PEFT config to build (`peft_config`); the rest is here."""

    def peft_config(self, model: nn.Module, config: Config, task: Task) -> Any:
        raise NotImplementedError

    def apply(self, model: nn.Module, config: Config, task: Task) -> nn.Module:
        from peft import get_peft_model

        try:
            return get_peft_model(model, self.peft_config(model, config, task))
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
        self.save_adapter(model, adapter_dir)
        written = {"adapter": str(adapter_dir)}
        if config.method.merge:
            merged = model.merge_and_unload()
            merged.save_pretrained(run_model_dir, safe_serialization=True)
            written["model"] = str(run_model_dir)
        return written


    def save_adapter(self, model: nn.Module, adapter_dir: Path) -> None:
        """adapter/: what `PeftModel.from_pretrained` loads onto the original base model."""
        model.save_pretrained(adapter_dir)


def targets(model: nn.Module, config: Config, defaults: dict[str, Any]) -> Any:
    """method.target_modules for PEFT: the user's list, or None where PEFT has a default for the
    architecture (`defaults`, its model-type table), else the attention's query and value projections."""
    chosen = config.method.target_modules
    if chosen != "auto":
        return chosen
    if getattr(getattr(model, "config", None), "model_type", None) in defaults:
        return None  # PEFT's own default applies
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return next((pair for pair in FALLBACK_TARGETS if set(pair) <= names), None)


def head_kwargs(task: Task) -> dict[str, Any]:
    """The task's new head, trained fully and saved with the adapter, when PEFT's task type does not
    already do it (image classification has no PEFT task type)."""
    return {"modules_to_save": task.head_modules} if task.peft_task_type is None and task.head_modules else {}
