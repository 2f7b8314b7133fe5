"""Image classification (product catalogs, digits): one label per image.

Backbones are Hugging Face `AutoModelForImageClassification` folders (ViT, ConvNeXt, ...) or timm-
layout folders (config.json with `architecture` + safetensors; efficientnet-lite0 in the catalog).
Every image is decoded once before training (corrupt ones fail or are skipped as configured); the
training split gets augmentation, evaluation the model's resize + center crop.
"""

from __future__ import annotations

import bisect
import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from tunelab.data import fingerprint_table, load_table, require_columns, stratified_split, value_counts
from tunelab.data.images import check_images, open_image
from tunelab.data.split import hold_out_missing
from tunelab.data.transforms import Preprocess
from tunelab.errors import DataError, RunError
from tunelab.models import resolve_model
from tunelab.models.vision import create_vision_backbone, is_timm_folder, vision_data_config
from tunelab.tasks.base import TASKS, PreparedData, load_tracking_new
from tunelab.tasks.classifier import ClassifierTask

if TYPE_CHECKING:
    import datasets

    from tunelab.config import Config
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)


class TimmClassifier(nn.Module):
    """A timm-layout backbone with the HF-style surface the engine and methods use:
    `forward(pixel_values=...)` returning logits, `config`, and `save_pretrained` to a timm folder."""

    def __init__(self, backbone: nn.Module, folder_config: dict[str, Any], labels: list[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.folder_config = {**folder_config, "num_classes": len(labels), "label_names": labels}
        self.config = _Labels(labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values)

    def save_pretrained(self, folder: str | Path, **_: Any) -> None:
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.backbone.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(self.folder_config, indent=2) + "\n")


class _Labels:
    """The bit of a transformers config that prediction and ONNX export read."""

    def __init__(self, labels: list[str]) -> None:
        self.id2label = dict(enumerate(labels))
        self.label2id = {name: i for i, name in enumerate(labels)}


@TASKS.register("image-classification")
class ImageClassification(ClassifierTask):
    name = "image-classification"
    peft_task_type = None
    head_modules = ["classifier"]  # trained in full (and saved) beside a LoRA adapter
    uses_tokenizer = False
    metrics = {"accuracy": True, "top5_accuracy": True, "macro_f1": True, "weighted_f1": True, "loss": False}
    default_metric = "macro_f1"
    sections = ("image",)
    servable_as = None  # inputs are image files: `tunelab predict` reads them, the server takes only text

    @classmethod
    def check_rows(cls, dataset: datasets.Dataset, config: Config) -> list[dict[str, Any]]:
        """Label and path of each row, never the image bytes (the image check decodes them itself)."""
        keep = [c for c in (config.data.label_column, config.data.image_column) if c in dataset.column_names]
        feature = dataset.features.get(config.data.image_column)
        if getattr(feature, "dtype", None) not in ("string", "large_string"):
            keep = [c for c in keep if c != config.data.image_column]
        return dataset.select_columns(keep).to_list()

    def __init__(self) -> None:
        super().__init__()
        self.preprocess: Preprocess | None = None
        self.config: Config | None = None

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: Any, model: ResolvedModel) -> PreparedData:
        self._setup(config, model.path)
        tables = {s: load_table(p, config.data, s) for s, p in config.data.split_paths().items()}
        checks, splits = {}, {}
        for split, table in tables.items():
            require_columns(table, [config.data.image_column, config.data.label_column],
                            keys={config.data.image_column: "data.image_column",
                                  config.data.label_column: "data.label_column"})
            good, checks[split] = check_images(table, config.data)
            splits[split] = image_rows(table, good, config.data.image_column, config.data.label_column)
        labels = _label_names(splits["train"], tables["train"], config)
        ids = {name: i for i, name in enumerate(labels)}
        info: dict[str, Any] = {"labels": labels, "files": [fingerprint_table(t) for t in tables.values()],
                                "images": checks}
        for split, ds in splits.items():
            splits[split] = _with_label_ids(ds, ids, split, config, info)
        seed = config.train.seed
        splits, info["split_from_train"] = hold_out_missing(
            splits, config.data.validation_size, config.data.test_size,
            lambda ds, size, what: stratified_split(ds, "labels", size, seed))
        splits["train"] = splits["train"].map(lambda b: {"augment": [True] * len(b["labels"])}, batched=True)
        info["rows"] = {s: len(d) for s, d in splits.items()}
        info["label_counts"] = {s: {labels[int(k)]: v for k, v in value_counts(d, "labels").items()}
                                for s, d in splits.items()}
        log.info("data: %s images; %d labels", ", ".join(f"{s} {n}" for s, n in info["rows"].items()), len(labels))
        return PreparedData(splits["train"], splits["validation"], splits["test"], info)

    def prepare_heldout(self, config: Config, tokenizer: Any, model: ResolvedModel, path: str,
                        labels: list[str]) -> PreparedData:
        """One extra labelled image set for `tunelab eval` (the run's label set; others left out)."""
        table = load_table(path, config.data, "test")
        require_columns(table, [config.data.image_column, config.data.label_column])
        good, check = check_images(table, config.data)
        info: dict[str, Any] = {"labels": labels, "files": [fingerprint_table(table)], "images": {"test": check}}
        rows = image_rows(table, good, config.data.image_column, config.data.label_column)
        ds = _with_label_ids(rows, {n: i for i, n in enumerate(labels)}, "test", config, info)
        info["rows"] = {"test": len(ds)}
        return PreparedData(train=None, validation=None, test=ds, info=info)

    def _setup(self, config: Config, model_path: Path) -> None:
        self.preprocess = preprocess_for(config, model_path)
        self.config = config
        self.rng = random.Random(config.train.seed)

    # ---- model ----------------------------------------------------------------------------
    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        return self._load(model.path, data.info["labels"], config)

    def _load(self, path: Path, labels: list[str], config: Config) -> nn.Module:
        if is_timm_folder(path):
            backbone, fresh = create_vision_backbone(path, len(labels))
            if fresh:
                log.info("new classifier for %d labels: %s", len(labels), ", ".join(fresh))
            self.new_parameters = {f"backbone.{name}" for name in fresh}
            folder_config = json.loads((path / "config.json").read_text())
            # Convolution nets train ~1.5x faster on CPU (oneDNN) with NHWC tensors, as timm's
            # --channels-last does; the batches are made NHWC in collate.
            return TimmClassifier(backbone, folder_config, labels).to(memory_format=torch.channels_last)
        from transformers import AutoModelForImageClassification

        return load_tracking_new(
            self, AutoModelForImageClassification, path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={name: i for i, name in enumerate(labels)}, ignore_mismatched_sizes=True,
            trust_remote_code=config.model.trust_remote_code, dtype=torch.float32, **self.load_kwargs,
        )

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        assert self.preprocess is not None and self.config is not None
        pixel_values = pixel_batch(self.preprocess, rows["image"], rows["base"], rows.get("augment"),
                                   self.config, self.rng)
        return {"pixel_values": pixel_values, "labels": torch.as_tensor(rows["labels"], dtype=torch.long)}

    def _logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(pixel_values=batch["pixel_values"])
        return (out if isinstance(out, torch.Tensor) else out.logits).float()

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        """The classifier metrics plus top-5 accuracy (no loss line for an empty set)."""
        metrics = super().compute_metrics(outputs, data)
        loss = metrics.pop("loss")
        logits, labels = outputs["logits"], outputs["labels"]
        if len(labels):
            top = np.argsort(-logits, axis=-1)[:, : min(5, len(data.info["labels"]))]
            metrics["top5_accuracy"] = float((top == labels[:, None]).any(-1).mean())
            metrics["loss"] = loss
        return metrics

    def worst_samples(
        self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData, k: int
    ) -> list[dict[str, Any]]:
        # scikit-learn: imported when metrics are computed, not when the task is built
        from tunelab.metrics.classification import worst_rows

        return worst_rows(outputs, data.info["labels"], k, lambda i: self.describe_row(dataset, i))

    def describe_row(self, dataset: datasets.Dataset, row: int) -> str:
        value = dataset[row]["image"]
        return value if isinstance(value, str) else f"row {row} (image bytes)"

    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        (run_dir / "labels.json").write_text(json.dumps(data.info["labels"], indent=2) + "\n")

    def finalize_saved(self, folder: Path) -> None:
        """Keep the preprocessing beside the weights, so the folder is usable on its own."""
        assert self.preprocess is not None
        write_preprocess(folder, self.preprocess)

    # ---- inference ------------------------------------------------------------------------
    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, Any]:
        labels = json.loads((run_dir / "labels.json").read_text())
        model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
        base = resolve_model(config.model).path
        self._setup(config, base)
        if (model_dir / "config.json").is_file():
            net = self._load(model_dir, labels, config)
        elif (adapter_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            net = PeftModel.from_pretrained(self._load(base, labels, config), adapter_dir)
        else:
            raise RunError(f"{run_dir} has no saved model (no model/ or adapter/)",
                           fix="use a run that finished, or resume it with `tunelab train --resume`")
        return net.eval(), None

    def predict(self, model: nn.Module, tokenizer: Any, texts: list[str], config: Config,
                top_k: int = 1) -> list[dict[str, Any]]:
        """`texts` are image paths; returns the top_k labels with probabilities for each."""
        assert self.preprocess is not None
        names = model.config.id2label
        results = []
        for path in texts:
            pixels = self.preprocess.evaluate(open_image(path, Path.cwd()))[None]
            with torch.inference_mode():
                probs = self._logits(model, {"pixel_values": pixels}).softmax(-1)[0]
            scores, ids = probs.topk(min(top_k, probs.shape[-1]))
            results.append({"text": path, "labels": [{"label": names[int(i)], "score": float(s)}
                                                     for s, i in zip(scores, ids, strict=True)]})
        return results

    def onnx_example(self, model: nn.Module, tokenizer: Any,
                     config: Config) -> tuple[dict[str, torch.Tensor], dict[str, dict[int, str]]]:
        assert self.preprocess is not None
        size = self.preprocess.size
        example = {"pixel_values": torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))}
        return example, {"pixel_values": {0: "batch"}}


def preprocess_for(config: Config, model_path: Path) -> Preprocess:
    """The model's evaluation transform (resize, center crop, normalisation), at image.size if set."""
    cfg = vision_data_config(model_path)
    size = config.image.size or int(cfg["input_size"][-1])
    return Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["crop_pct"], cfg["interpolation"])


def pixel_batch(preprocess: Preprocess, values: list[Any], bases: list[str], augment: list[bool] | None,
                config: Config, rng: random.Random) -> torch.Tensor:
    """Decoded, transformed images as one NHWC-strided batch: training rows (`augment`) get image.augment,
    the others the evaluation transform."""
    pixels = []
    for value, base, train in zip(values, bases, augment or [False] * len(values), strict=True):
        image = open_image(value, Path(base))
        pixels.append(preprocess.train(image, config.image.augment, rng) if train else preprocess.evaluate(image))
    return torch.stack(pixels).contiguous(memory_format=torch.channels_last)


def write_preprocess(folder: Path, p: Preprocess) -> None:
    settings = {"input_size": [3, p.size, p.size], "mean": list(p.mean), "std": list(p.std),
                "crop_pct": p.crop_pct, "interpolation": p.interpolation}
    (folder / "tunelab_preprocess.json").write_text(json.dumps(settings, indent=2) + "\n")


def image_rows(table: Any, good: np.ndarray, image_column: str, label_column: str | None) -> datasets.Dataset:
    """The usable rows as {image, base (folder relative paths start from)[, label]}."""
    starts = table.starts or [0]
    folders = [str(f.parent) for f in table.files]
    base = [folders[max(bisect.bisect_right(starts, int(i)) - 1, 0)] if len(starts) == len(folders) else folders[0]
            for i in good]
    ds = table.dataset.select(good).select_columns([image_column, *([label_column] if label_column else [])])
    if image_column != "image":
        ds = ds.rename_column(image_column, "image")
    if label_column and label_column != "label":
        ds = ds.rename_column(label_column, "label")
    return ds.add_column("base", base)


def _label_names(train: datasets.Dataset, table: Any, config: Config) -> list[str]:
    counts = value_counts(train, "label")
    if len(counts) < 2:
        raise DataError(f"{table.name}: label column {config.data.label_column!r} has a single class",
                        fix="an image classifier needs at least two classes")
    return sorted(counts)


def _with_label_ids(ds: datasets.Dataset, ids: dict[str, int], split: str, config: Config,
                    info: dict[str, Any]) -> datasets.Dataset:
    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {"labels": [ids.get(str(v), -1) for v in batch["label"]], "length": [1] * len(batch["label"])}

    ds = ds.map(encode, batched=True, remove_columns=["label"])
    unseen = sum(1 for v in ds["labels"] if v < 0)
    if unseen:
        log.warning("%s: %d images have labels never seen in train; they are left out", split, unseen)
        info.setdefault("unseen_labels", {})[split] = unseen  # eval.json's warnings count them
        ds = ds.filter(lambda b: [v >= 0 for v in b["labels"]], batched=True)
    return ds


