"""The objective interface: what the engine calls to train and validate a model.

A task says what the data is and how a trained model is served; an objective says what training
optimises. The engine sees only an objective: it pads a batch (`collate`), counts its loss terms
(`count_items`), sums their loss (`loss_sum`) and scores validation batches (`eval_step`, then
`compute_metrics`). The loss is a *sum* so the engine can divide by the global item count of the
optimizer step: the gradient is then the same for any accumulation and any number of processes.

An objective computes its loss from one kind of model output that the task produces (`consumes`
must be among the task's `Task.outputs`): next-token logits of the trained positions for causal
LMs, class logits of a classification head for classifiers and taggers. Evaluation defaults to the
task's own metrics, so base vs tuned, retention and gates read the same numbers whatever the
objective; an objective with metrics of its own (preference accuracy, rewards) adds them.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import nn

from tunelab.choices import Choices
from tunelab.errors import ConfigError

if TYPE_CHECKING:
    import datasets

    from tunelab.config import Config
    from tunelab.engine import Trainer
    from tunelab.tasks.base import PreparedData, Task

IGNORE = -100  #: target of positions that carry no loss (what torch's cross_entropy ignores by default)
S = TypeVar("S")  # the objective's settings: its class in config/schema.py (ObjectiveConfig)


class Objective(Generic[S]):
    """Base class; subclasses set `name` and `consumes` and implement `count_items` and `loss_sum`."""

    name: str = ""
    #: the task output the loss is computed from (a `Task.outputs` entry)
    consumes: str = ""
    #: what one training sample holds: "sequences", or "pairs" (a chosen and a rejected answer)
    layout: str = "sequences"
    #: metric name -> greater is better, for objectives that score validation their own way
    #: (empty: the task's metrics)
    own_metrics: ClassVar[dict[str, bool]] = {}
    #: what `eval.metric` means when the config leaves it out (None: the task's default)
    default_metric: ClassVar[str | None] = None
    #: True when the loss reads the starting model's scores (`with_reference` adds them to the data)
    uses_reference: ClassVar[bool] = False

    def __init__(self, task: Task, settings: S) -> None:
        self.task, self.settings = task, settings

    def before_training(self, trainer: Trainer) -> None:
        """Called once the trainer holds the starting model, before any step (and before a resumed
        run loads its checkpoint): objectives that compare against the starting model score it here."""

    def with_reference(self, dataset: datasets.Dataset, score: Any, config: Config) -> datasets.Dataset:
        """`dataset` with the columns the loss reads from the starting model, where `score(dataset,
        scorer)` runs that model (training: the model before step 1; `tunelab eval`: it rebuilt).
        Default: the dataset as it is."""
        return dataset

    def pop_step_stats(self) -> dict[str, tuple[float, float]]:
        """Statistics of the micro-batches since the last call, as name -> (sum, count); the engine
        sums them over processes and logs sum / count with each step (rewards, margins)."""
        return {}

    # ---- training ---------------------------------------------------------------------------
    @property
    def iterations(self) -> int:
        """Optimizer updates per batch of prepared micro-batches (GRPO reuses its sampled answers)."""
        return 1

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Pad one batch of dataset rows into tensors (the task's layout unless the objective needs its own)."""
        return self.task.collate(rows)

    def prepare_batch(self, model: nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
        """A collated training micro-batch made ready for `count_items` and `loss_sum`, with the
        unwrapped model: objectives that write their own training sequences (GRPO samples answers)
        do it here. Default: the batch as collated."""
        return batch

    def count_items(self, batch: dict[str, torch.Tensor]) -> int:
        """How many loss terms the batch contributes (rows, labelled tokens, trained tokens, pairs)."""
        raise NotImplementedError

    def loss_sum(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss summed (not averaged) over the batch's items."""
        raise NotImplementedError

    # ---- validation -------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per-row outputs of one batch; the engine concatenates them across batches and processes."""
        return self.task.eval_step(model, batch)

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        return self.task.compute_metrics(outputs, data)

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        """The k worst-scored rows of an evaluation, readable (the task's reading of its own outputs)."""
        return self.task.worst_samples(outputs, dataset, data, k)

    @classmethod
    def settings_metrics(cls, settings: Any) -> dict[str, bool]:
        """The metrics of its own a run with these settings reports (GRPO adds one per reward)."""
        return dict(cls.own_metrics)

    @property
    def metrics(self) -> dict[str, bool]:
        """Metric name -> greater is better; `eval.metric` must be one of them."""
        return self.settings_metrics(self.settings) or self.task.metrics

    def greater_is_better(self, metric: str) -> bool:
        return self.metrics[metric]


OBJECTIVES: Choices[type[Objective[Any]]] = Choices("objective")


def metrics_of(settings: Any, task: Task) -> dict[str, bool]:
    """The validation metrics a run of `task` with these objective settings reports (name -> greater
    is better)."""
    return OBJECTIVES.get(settings.name).settings_metrics(settings) or task.metrics


def check_fits(objective_name: str, task: Task) -> None:
    """Refuse an objective the task cannot feed (its loss needs an output the task does not produce)."""
    consumes = OBJECTIVES.get(objective_name).consumes
    if consumes not in task.outputs:
        usable = [name for name, cls in OBJECTIVES.items() if cls.consumes in task.outputs]
        raise ConfigError(f"objective {objective_name!r} needs {consumes}, which a {task.name} model does not "
                          f"produce", fix=f"use objective.name: {' | '.join(usable)}")


def base_function(model: nn.Module) -> Any:
    """A context in which `model` computes what the starting model did: a PEFT model with its adapters
    disabled (a fresh LoRA/DoRA adapter is the identity only up to rounding), anything else as it is.
    GRPO calls it during training, so `Lora.validate` refuses PiSSA/OLoRA there."""
    disable = getattr(model, "disable_adapter", None)
    if not callable(disable) or _moves_base(model):
        # PiSSA/OLoRA took part of each weight into the adapter: adapters off is W_res, and before the
        # first step the adapted model is the starting one (callers score the base before training).
        return nullcontext()
    return disable()


def _moves_base(model: nn.Module) -> bool:
    """Whether the active PEFT adapter was initialised from the base weights (PiSSA, OLoRA, CorDA)."""
    configs = getattr(model, "peft_config", {})
    active = getattr(model, "active_adapter", "default")
    init = str(getattr(configs.get(active), "init_lora_weights", True)).lower()
    return init.startswith(("pissa", "olora", "corda"))


def build_objective(config: Config, task: Task) -> Objective[Any]:
    """The config's objective (resolved by `Task.validate_config`) bound to `task`."""
    assert config.objective is not None, "Task.validate_config resolves the objective"
    return OBJECTIVES.get(config.objective.name)(task, config.objective)
