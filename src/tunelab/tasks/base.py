"""The task interface: what a task must provide so the engine can train and evaluate it.

A task owns everything that depends on the kind of problem: how raw rows become model inputs,
which head to load, the loss, and the metrics. The engine only sees padded tensor batches, a
summed loss with its item count, and per-batch numpy outputs it concatenates for `compute_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tunelab.errors import ConfigError
from tunelab.registry import Registry, closest

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.models import ResolvedModel


@dataclass
class PreparedData:
    """Tokenized, memory-mapped splits plus a JSON-able description of where they came from."""

    train: datasets.Dataset | None
    validation: datasets.Dataset | None
    test: datasets.Dataset | None
    info: dict[str, Any] = field(default_factory=dict)
    #: task-specific in-memory extras that are not written to data.json (e.g. held-out prompts)
    extra: dict[str, Any] = field(default_factory=dict)


class Task:
    """Base class for tasks. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    peft_task_type: str | None = None
    #: metric name -> True when greater is better; `eval.metric` must be one of these.
    metrics: dict[str, bool] = {}
    #: what `eval.metric` means when the config leaves it out
    default_metric: str = "loss"
    #: whether the starting model is evaluated like the trained one (base vs tuned in eval.json)
    evaluates_base: bool = False
    #: whether the model comes with a tokenizer (image tasks read pixels)
    uses_tokenizer: bool = True
    #: modules trained in full beside a LoRA adapter when PEFT has no task type for the task (new heads)
    head_modules: list[str] = []

    def __init__(self) -> None:
        #: extra `from_pretrained` kwargs a method needs (4-bit quantization for qlora)
        self.load_kwargs: dict[str, Any] = {}

    def validate_config(self, config: Config) -> None:
        """Reject settings this task cannot honour, before any data or model is loaded.

        Fills in task defaults the config left open (eval.metric), so the saved config is resolved."""
        if config.eval.metric is None:
            config.eval.metric = self.default_metric
        if config.eval.metric not in self.metrics:
            hint = closest(config.eval.metric, list(self.metrics))
            fix = f"did you mean {hint!r}?" if hint else f"choose one of {', '.join(self.metrics)}"
            raise ConfigError(f"eval.metric {config.eval.metric!r} is not a {self.name} metric", fix=fix)

    def greater_is_better(self, metric: str) -> bool:
        return self.metrics[metric]

    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        raise NotImplementedError

    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        raise NotImplementedError

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Pad one batch of dataset rows (a dict of columns) into tensors."""
        raise NotImplementedError

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        """How many loss terms the batch contributes (rows, or trained tokens for LMs)."""
        raise NotImplementedError

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor], config: Config) -> torch.Tensor:
        """The loss summed (not averaged) over the batch's items, so the engine can normalise globally."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per-row outputs for one batch; the engine concatenates them across batches and processes."""
        raise NotImplementedError

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        raise NotImplementedError

    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        """Write task files a run folder needs beyond the model (label maps, ...)."""

    def added_token_ids(self) -> list[int]:
        """Ids of tokens the run added to the tokenizer (methods may train their embedding rows)."""
        return []

    def finalize_saved(self, folder: Path) -> None:
        """Adjust a saved model folder (model/ or adapter/) after the method wrote it."""

    def prepare_heldout(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, path: str,
        labels: list[str],
    ) -> PreparedData:
        """Tokenize one extra labelled file (for `tunelab eval`) into `PreparedData.test`."""
        raise NotImplementedError

    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, PreTrainedTokenizerBase]:
        """Load a run's trained model (model/, or base + adapter/) and tokenizer for inference."""
        raise NotImplementedError

    def predict(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], config: Config, top_k: int = 1
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def onnx_example(
        self, model: nn.Module, tokenizer: Any, config: Config
    ) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
        """Example inputs for ONNX export and their dynamic axes; tasks without an ONNX export refuse."""
        from tunelab.errors import ExportError

        raise ExportError(f"ONNX export is not available for {self.name} runs",
                          fix="use --format merged (or gguf for Llama-family causal LMs)")


TASKS: Registry[type[Task]] = Registry("task")


def dropout_overrides(model_path: Path, value: float | None, trust_remote_code: bool) -> dict[str, float]:
    """from_pretrained kwargs setting every dropout probability in the model's config to `value`."""
    if value is None:
        return {}
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    keys = [k for k, v in config.to_dict().items() if ("dropout" in k or "pdrop" in k) and isinstance(v, float)]
    keys += ["classifier_dropout"] if hasattr(config, "classifier_dropout") else []
    return {k: value for k in keys}


def pad_sequences(sequences: list[list[int]], value: int, multiple_of: int | None = None) -> torch.Tensor:
    """Right-pad integer sequences to the longest in the batch (dynamic padding)."""
    longest = max(len(s) for s in sequences)
    if multiple_of:
        longest = -(-longest // multiple_of) * multiple_of
    out = torch.full((len(sequences), longest), value, dtype=torch.long)
    for i, seq in enumerate(sequences):
        out[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
    return out


def load_saved_classifier(run_dir: Path, config: Config, auto_class: Any) -> tuple[nn.Module, Any]:
    """A run's classifier and tokenizer: the merged model/ folder, or (method.merge: false) the base
    model with the run's label set plus adapter/."""
    import json

    from transformers import AutoTokenizer

    from tunelab.errors import RunError

    remote = config.model.trust_remote_code
    model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
    if (model_dir / "config.json").is_file():
        net = auto_class.from_pretrained(model_dir, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
    elif (adapter_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        from tunelab.models import resolve_model

        labels = json.loads((run_dir / "labels.json").read_text())
        base = auto_class.from_pretrained(
            resolve_model(config.model).path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)}, trust_remote_code=remote,
        )
        net = PeftModel.from_pretrained(base, adapter_dir)
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=remote)
    else:
        raise RunError(f"{run_dir} has no saved model (no model/ or adapter/)",
                       fix="use a run that finished, or resume it with `tunelab train --resume`")
    return net.eval(), tokenizer
