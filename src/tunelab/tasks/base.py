"""The task interface, in three parts.

- **Data**: how raw rows become model inputs (`prepare`, `prepare_heldout`, `prepare_retention`,
  `where`), which model and head to load (`build_model`), what a run folder keeps (`save_artifacts`).
- **Scoring**: the model outputs objectives are computed from (`outputs`, `loss_logits`), batch
  padding (`collate`) and the task's own metrics (`eval_step`, `compute_metrics`, baselines). What
  training *optimises* is not here: it is the objective (`tunelab.objectives`), chosen in the
  config with a default per task, and the only thing the engine calls.
- **Serving**: loading a finished run and answering with it (`load_trained`, `predict`,
  `encode_prompt`, `onnx_example`, `finalize_saved`).

A task also declares what it can do (capabilities), so code outside `tasks/` asks these instead of
comparing task names: `uses_tokenizer`, `generates`, `servable_as`, `outputs`, `sections`, and its
label and annotation columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import TypeAdapter
from torch import nn

from tunelab.choices import Choices, closest
from tunelab.config.schema import CrossEntropyObjective, ModelConfig, ObjectiveConfig
from tunelab.data import general_text
from tunelab.errors import ConfigError, ExportError, RunError
from tunelab.models import resolve_model
from tunelab.objectives import OBJECTIVES, check_fits, metrics_of

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

    from tunelab.config import Config
    from tunelab.config.schema import RetentionSet
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


@dataclass
class HeldOutSet:
    """A retention set as a task prepared it: rows to score, and how to score them before and after
    training (the change is the forgetting)."""

    name: str
    data: PreparedData  #: rows in `data.test`; `data.info` is what compute_metrics needs (labels)
    metric: str
    greater_is_better: bool
    #: the module that scores the set, given the model being trained (classifiers: the earlier task's
    #: head on the shared backbone); identity for causal LMs
    score_with: Callable[[nn.Module], nn.Module] = lambda model: model
    #: the task that scores the set when it is not the run's own (a text-classification set kept by a
    #: multi-label or regression run); None: the run's task
    scorer: Task | None = None
    prompts: list[dict[str, Any]] = field(default_factory=list)  #: causal LMs: generation prompts
    info: dict[str, Any] = field(default_factory=dict)  #: source, rows, overlap removed


#: config sections that belong to one kind of task; a task reads only those in its `sections`
TASK_SECTIONS = ("lm", "generation", "token_classification", "multi_label", "regression", "embedding", "image")
log = logging.getLogger(__name__)


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
    #: whether evaluation generates text (generation settings must fit the model)
    generates: bool = False
    #: modules trained in full beside a LoRA adapter when PEFT has no task type for the task (new heads)
    head_modules: list[str] = []
    #: what `baseline_outputs` scores: (kind, short label, description) in eval.json's base section
    baseline: tuple[str, str, str] = ("majority-class", "majority", "the majority class of the training data")
    #: the retention set `eval.retention: auto` measures (None: no default)
    default_retention: str | None = None
    #: model outputs an objective can be computed from (`Objective.consumes`), via `loss_logits`
    outputs: tuple[str, ...] = ()
    #: the objective a config without `objective:` trains with
    default_objective: str = ""
    #: how `tunelab serve` answers with a trained model: predict (labels, entities) or chat (generation)
    servable_as: Literal["predict", "chat"] | None = None
    #: whether samples are rendered from records with a per-token loss mask (`encode_splits`; `data preview`)
    masks_tokens: bool = False
    #: the task-specific config sections (of TASK_SECTIONS) this task reads; the others must stay default
    sections: tuple[str, ...] = ()

    def __init__(self) -> None:
        #: extra `from_pretrained` kwargs a method needs (4-bit quantization for qlora)
        self.load_kwargs: dict[str, Any] = {}
        #: names of parameters build_model initialized fresh (new heads); L2-SP does not anchor them
        self.new_parameters: set[str] = set()

    def validate_config(self, config: Config) -> None:
        """Reject settings this task cannot honour, before any data or model is loaded.

        Fills in task defaults the config left open (eval.metric), so the saved config is resolved."""
        self._resolve_objective(config)
        self._refuse_foreign_sections(config)
        if config.eval.metric is None:
            assert config.objective is not None
            config.eval.metric = OBJECTIVES.get(config.objective.name).default_metric or self.default_metric
        metrics = self.run_metrics(config)
        if config.eval.metric not in metrics:
            hint = closest(config.eval.metric, list(metrics))
            fix = f"did you mean {hint!r}?" if hint else f"choose one of {', '.join(metrics)}"
            what = f"{self.name} metric" if metrics is self.metrics else f"{config.objective.name} metric"
            raise ConfigError(f"eval.metric {config.eval.metric!r} is not a {what}", fix=fix)

    def run_metrics(self, config: Config) -> dict[str, bool]:
        """The validation metrics of a run (its objective's own, else the task's): name -> greater is better."""
        assert config.objective is not None, "validate_config resolves the objective"
        return metrics_of(config.objective, self)

    def _resolve_objective(self, config: Config) -> None:
        """Fill in the task's default objective, move the deprecated train.label_smoothing into it,
        and refuse an objective this task's model cannot feed."""
        smoothing = config.train.label_smoothing
        if config.objective is None:
            config.objective = _default_settings(self.default_objective)
        if smoothing is not None:
            config.train.label_smoothing = None
            if smoothing and not isinstance(config.objective, CrossEntropyObjective):
                raise ConfigError("train.label_smoothing is for classification tasks",
                                  fix=f"remove it from a {self.name} config")
            if smoothing:  # 0.0 is the old default every earlier config.yaml wrote out: moved silently
                log.warning("train.label_smoothing is now objective.label_smoothing; the old key will stop "
                            "working in the next release")
                config.objective.label_smoothing = smoothing  # type: ignore[union-attr]
        check_fits(config.objective.name, self)

    def _refuse_foreign_sections(self, config: Config) -> None:
        """A setting of another task's section (lm.packing on a classifier) would be silently ignored."""
        for section in TASK_SECTIONS:
            if section in self.sections:
                continue
            key = _first_changed(getattr(config, section), section)
            if key is not None:
                owners = [n for n, cls in TASKS.items() if section in cls.sections]
                raise ConfigError(f"{key} is a {' / '.join(owners)} setting; a {self.name} run does not read it",
                                  fix=f"remove {section}: from this config")

    @classmethod
    def label_columns(cls, config: Config) -> list[str]:
        """Columns that hold the targets (not scanned for PII, not part of the row text)."""
        return []

    @classmethod
    def class_labels(cls, config: Config) -> tuple[str, str | None] | None:
        """The column of class labels the data check counts (balance, labels missing from train), and
        the delimiter of labels written in one string; None when the targets are not classes."""
        columns = cls.label_columns(config)
        return (columns[0], None) if columns else None

    @classmethod
    def annotation_columns(cls, config: Config) -> list[str]:
        """Columns that annotate the text rather than being text (left out of duplicates and lengths)."""
        return []

    @classmethod
    def check_rows(cls, dataset: datasets.Dataset, config: Config) -> list[dict[str, Any]]:
        """The rows the data check reads, as plain dicts."""
        return dataset.to_list()

    def prepare(self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel) -> PreparedData:
        raise NotImplementedError

    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        raise NotImplementedError

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        """Pad one batch of dataset rows (a dict of columns) into tensors."""
        raise NotImplementedError

    def loss_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass objectives compute their loss from: (logits [..., classes], targets [...]),
        targets IGNORE where no loss is taken. Which output it is, `outputs` names."""
        raise NotImplementedError

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Per-row outputs for one batch; the engine concatenates them across batches and processes."""
        raise NotImplementedError

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        raise NotImplementedError

    def baseline_outputs(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, np.ndarray] | None:
        """Evaluation outputs of a trivial baseline (classifiers: the majority class), for tasks whose
        starting model has no head to score; None when the base model itself is scored."""
        return None

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        """The k worst-scored rows of an evaluation, readable (input text, label, prediction, loss)."""
        return []

    def train_sample(self, data: PreparedData, rows: int, seed: int) -> tuple[datasets.Dataset, np.ndarray] | None:
        """Up to `rows` training rows as evaluation would see them (a seeded sample, no augmentation) and
        their indices in the training split, scored after training for the train/validation gap and the
        label-noise candidates; None for tasks that do not score their training rows."""
        return None

    def label_probability(self, outputs: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per row of an evaluation, the probability the model gives the row's own label; None for
        tasks without one label per row."""
        return None

    def label_suspects(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int,
        earlier_sum: list[float], earlier: int,
    ) -> list[dict[str, Any]]:
        """The k rows of `dataset` whose label the model found least probable, on average over the
        `earlier` evaluations during training (`earlier_sum`: their label_probability, summed) and the
        final outputs: label-noise candidates, readable like `worst_samples`."""
        return []

    def prepare_retention(
        self, config: Config, tokenizer: PreTrainedTokenizerBase, model: ResolvedModel, spec: RetentionSet,
        data: PreparedData,
    ) -> HeldOutSet:
        """Load and tokenize one `eval.retention` set (called before the run folder exists)."""
        raise ConfigError(f"eval.retention is not supported for {self.name} runs", fix="remove eval.retention")

    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        """Write task files a run folder needs beyond the model (label maps, ...)."""

    def added_token_ids(self) -> list[int]:
        """Ids of tokens the run added to the tokenizer (methods may train their embedding rows)."""
        return []

    def calibrate(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any] | None:
        """After training, fit what the task decides from the validation outputs of the final weights
        (multi-label: decision thresholds), used from then on for test, saving and serving; returns
        what was fitted for eval.json, or None when the task fits nothing."""
        return None

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
        raise ExportError(f"ONNX export is not available for {self.name} runs",
                          fix="use --format merged (or gguf for Llama-family causal LMs)")


TASKS: Choices[type[Task]] = Choices("task")


def _default_settings(name: str) -> Any:
    """The settings of objective `name` with every default (its class in ObjectiveConfig)."""
    return TypeAdapter(ObjectiveConfig).validate_python({"name": name})


def _first_changed(section: Any, prefix: str) -> str | None:
    """The dotted key of the first value of `section` that differs from its default, or None."""
    default = type(section)().model_dump()
    for key, value in section.model_dump().items():
        if value != default[key]:
            return f"{prefix}.{key}"
    return None


def dropout_overrides(model_path: Path, value: float | None, trust_remote_code: bool) -> dict[str, float]:
    """from_pretrained kwargs setting every dropout probability in the model's config to `value`."""
    if value is None:
        return {}
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    keys = [k for k, v in config.to_dict().items() if ("dropout" in k or "pdrop" in k) and isinstance(v, float)]
    keys += ["classifier_dropout"] if hasattr(config, "classifier_dropout") else []
    return {k: value for k in keys}


def load_tracking_new(task: Task, auto_class: Any, path: Any, **kwargs: Any) -> nn.Module:
    """`auto_class.from_pretrained(path, **kwargs)`, remembering which parameters were initialized
    fresh (missing from or mismatched with the checkpoint: new heads) in `task.new_parameters`."""
    net, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    mismatched = {k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", ())}
    task.new_parameters = set(info.get("missing_keys", ())) | mismatched
    return net


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

    remote = config.model.trust_remote_code
    model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
    if (model_dir / "config.json").is_file():
        net = auto_class.from_pretrained(model_dir, trust_remote_code=remote)
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=remote)
    elif (adapter_dir / "adapter_config.json").is_file():
        from peft import PeftModel

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


def classifier_retention(
    task: Task, auto_class: Any, config: Config, tokenizer: Any, model: ResolvedModel, spec: RetentionSet
) -> HeldOutSet:
    """A previous task's held-out set, scored by that task's classification head on top of the
    backbone being trained: before training this is the previous model itself (when it is
    `model.source`); after, it shows how much of the previous task the shared backbone lost."""
    from transformers import AutoConfig

    name = spec.name or Path(spec.source).stem
    where = f"eval.retention {name!r}"
    if spec.source == general_text.NAME:
        raise ConfigError(f"{where}: general-text measures causal LMs", fix="give a previous task's held-out file")
    remote = config.model.trust_remote_code
    head_source = spec.head or config.model.source
    head_path = resolve_model(ModelConfig(source=head_source, trust_remote_code=remote)).path
    head, info = auto_class.from_pretrained(head_path, output_loading_info=True, trust_remote_code=remote)
    if info.get("missing_keys"):
        raise ConfigError(f"{where}: {head_source} has no trained {task.name} head "
                          f"({', '.join(sorted(info['missing_keys'])[:2])} missing)",
                          fix="set its head: to the previous task's model folder (runs/<id>/model)")
    ours = AutoConfig.from_pretrained(model.path, trust_remote_code=remote)
    if (head.config.model_type, head.config.hidden_size) != (ours.model_type, getattr(ours, "hidden_size", None)):
        raise ConfigError(f"{where}: the head of {head_source} ({head.config.model_type}) does not fit "
                          f"{config.model.source} ({ours.model_type})", fix="use a head trained on the same backbone")
    labels = [head.config.id2label[i] for i in range(head.config.num_labels)]
    metric = spec.metric or task.default_metric
    if metric not in task.metrics:
        raise ConfigError(f"{where}: metric {metric!r} is not a {task.name} metric",
                          fix=f"choose one of {', '.join(task.metrics)}")
    reading = {"max_rows": spec.max_rows, **({"label_column": spec.label_column} if spec.label_column else {})}
    limited = config.model_copy(update={"data": config.data.model_copy(update=reading)})
    prepared = task.prepare_heldout(limited, tokenizer, model, spec.source, labels)
    if not len(prepared.test):
        raise ConfigError(f"{where}: {spec.source} has no row with a label of {head_source}",
                          fix=f"its labels must be among {', '.join(labels)}")
    info = {"source": spec.source, "head": head_source, "rows": len(prepared.test)}
    return HeldOutSet(name, prepared, metric, task.metrics[metric],
                      score_with=lambda current: share_backbone(head, current), info=info)


def share_backbone(head: nn.Module, current: nn.Module) -> nn.Module:
    """`head` (an HF classifier) with its backbone replaced by `current`'s, the very same modules
    (no copy): it scores with the weights being trained, through its own classification head."""
    inner = current.get_base_model() if hasattr(current, "get_base_model") else current  # PEFT wraps it
    prefix = head.base_model_prefix
    backbone = getattr(inner, prefix, None)
    if backbone is None or type(backbone) is not type(getattr(head, prefix, None)):
        raise ConfigError(f"cannot share the {prefix!r} backbone of {type(inner).__name__} with "
                          f"{type(head).__name__}", fix="use a retention head trained on the same backbone")
    setattr(head, prefix, backbone)
    device = next(backbone.parameters()).device
    return head.to(device).train(current.training)
