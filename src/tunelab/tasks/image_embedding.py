"""Image embedding tuning (visual search over a product catalog, digits): a vision backbone whose
embeddings put matching images close.

Two layouts, chosen by the columns of the training file:
- labelled images (an image folder, or `data.image_column` + `data.label_column`): images of one label
  match. Each training image is paired with another of its label (a fixed, seeded pairing, both sides
  augmented); the contrastive loss leaves the other images of the anchor's label out of its negatives.
  Evaluation queries every image of a split against all the others of that split: hit@k (Recall@K of
  metric learning), precision@10, MRR@10, nDCG@10.
- pairs by path (`embedding.anchor_column` + `embedding.positive_column` holding image paths): as the
  text embedding task, distinct anchors are ranked against the distinct positives.
The backbone is the image classifier's without its head: timm-layout folders (EfficientNet-Lite0) with
num_classes 0 give pooled features; Hugging Face vision models their CLS (or mean) token, or the pooled
feature map of a convolution net. Embeddings are unit length unless `embedding.normalize: false`.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunelab.data import Table, fingerprint_table, load_table, require_columns
from tunelab.data.images import check_images
from tunelab.data.split import hold_out_missing, random_split
from tunelab.errors import ConfigError, DataError, RunError
from tunelab.models import resolve_model
from tunelab.models.vision import create_vision_backbone, is_timm_folder
from tunelab.tasks.base import TASKS, PreparedData, Task
from tunelab.tasks.embedding import RETRIEVAL, cosine, retrieval_problem, text_id
from tunelab.tasks.image_classification import (
    TimmClassifier,
    image_rows,
    pixel_batch,
    preprocess_for,
    write_preprocess,
)

if TYPE_CHECKING:
    import datasets

    from tunelab.config import Config
    from tunelab.data.transforms import Preprocess
    from tunelab.models import ResolvedModel

log = logging.getLogger(__name__)
LABELLED = ("hit@1", "hit@5", "hit@10", "precision@10", "mrr@10", "ndcg@10")


@TASKS.register("image-embedding")
class ImageEmbedding(Task):
    name = "image-embedding"
    peft_task_type = None
    uses_tokenizer = False
    metrics = {**{m: True for m in dict.fromkeys(LABELLED + RETRIEVAL)}, "loss": False}
    default_metric = "mrr@10"
    evaluates_base = True  # the pretrained backbone already embeds: scored like the tuned one
    outputs = ("embeddings",)
    default_objective = "contrastive"
    servable_as = None  # inputs are image files, which the server does not take
    sections = ("embedding", "image")

    def __init__(self) -> None:
        super().__init__()
        self.preprocess: Preprocess | None = None
        self.config: Config | None = None
        self.rng = random.Random(0)
        self.pooling = "cls"
        self.normalize = True
        self.paired = False

    # ---- config ---------------------------------------------------------------------------
    def validate_config(self, config: Config) -> None:
        super().validate_config(config)
        assert config.objective is not None
        if config.objective.name != "contrastive":
            raise ConfigError(f"objective {config.objective.name} is not available for image embeddings",
                              fix="use objective.name: contrastive (in-batch negatives)")
        if config.embedding.negative_column or config.embedding.score_column:
            raise ConfigError("embedding.negative_column / score_column are read by the text embedding task only",
                              fix="remove them: image pairs are (anchor, positive) or labelled images")

    def _setup(self, config: Config, model_path: Path) -> None:
        self.preprocess = preprocess_for(config, model_path)
        self.config = config
        self.rng = random.Random(config.train.seed)
        spec = config.embedding
        self.pooling = "cls" if spec.pooling == "auto" else spec.pooling
        self.normalize = True if spec.normalize == "auto" else bool(spec.normalize)

    # ---- data -----------------------------------------------------------------------------
    def prepare(self, config: Config, tokenizer: Any, model: ResolvedModel) -> PreparedData:
        self._setup(config, model.path)
        tables = {split: load_table(path, config.data, split) for split, path in config.data.split_paths().items()}
        spec = config.embedding
        self.paired = {spec.anchor_column, spec.positive_column} <= set(tables["train"].dataset.column_names)
        info: dict[str, Any] = {"labels": [], "files": [fingerprint_table(t) for t in tables.values()],
                                "images": {}, "layout": "pairs" if self.paired else "labelled"}
        splits = {split: self._rows(table, config, info) for split, table in tables.items()}
        seed = config.train.seed
        splits, info["split_from_train"] = hold_out_missing(
            splits, config.data.validation_size, config.data.test_size,
            lambda ds, size, what: random_split(ds, size, seed))
        splits = {split: self._finish(ds, config, train=split == "train") for split, ds in splits.items()
                  if ds is not None}
        info["rows"] = {s: len(d) for s, d in splits.items() if d is not None}
        info["pooling"], info["normalize"] = self.pooling, self.normalize
        log.info("data: %s %s; pooling %s%s", ", ".join(f"{s} {n}" for s, n in info["rows"].items()),
                 "image pairs" if self.paired else "labelled images", self.pooling,
                 ", normalized" if self.normalize else "")
        return PreparedData(splits["train"], splits["validation"], splits.get("test"), info)

    def prepare_heldout(self, config: Config, tokenizer: Any, model: ResolvedModel, path: str,
                        labels: list[str]) -> PreparedData:
        self._setup(config, resolve_model(config.model).path)
        table = load_table(path, config.data, "test")
        spec = config.embedding
        self.paired = {spec.anchor_column, spec.positive_column} <= set(table.dataset.column_names)
        info: dict[str, Any] = {"labels": [], "files": [fingerprint_table(table)], "images": {}}
        ds = self._finish(self._rows(table, config, info), config, train=False)
        info["rows"] = {"test": len(ds)}
        return PreparedData(train=None, validation=None, test=ds, info=info)

    def _rows(self, table: Table, config: Config, info: dict[str, Any]) -> datasets.Dataset:
        return self._pair_rows(table, config, info) if self.paired else self._labelled_rows(table, config, info)

    def _labelled_rows(self, table: Table, config: Config, info: dict[str, Any]) -> datasets.Dataset:
        require_columns(table, [config.data.image_column, config.data.label_column],
                        keys={config.data.image_column: "data.image_column",
                              config.data.label_column: "data.label_column"})
        good, info["images"][table.split] = check_images(table, config.data)
        ds = image_rows(table, good, config.data.image_column, config.data.label_column)
        labels = [str(v) for v in ds["label"]]
        if table.split == "train" and len(set(labels)) < 2:
            raise DataError(f"{table.name}: label column {config.data.label_column!r} has a single label",
                            fix="labelled images need at least two labels: images of one label match each other")
        return ds.add_column("anchor_group", [text_id(label) for label in labels])

    def _pair_rows(self, table: Table, config: Config, info: dict[str, Any]) -> datasets.Dataset:
        spec = config.embedding
        columns = {"anchor": spec.anchor_column, "positive": spec.positive_column}
        require_columns(table, list(columns.values()),
                        keys={column: f"embedding.{side}_column" for side, column in columns.items()})
        keep: np.ndarray | None = None
        for side, column in columns.items():
            side_config = config.data.model_copy(update={"image_column": column})
            good, info["images"][f"{table.split}.{side}"] = check_images(table, side_config)
            keep = good if keep is None else np.intersect1d(keep, good)
        assert keep is not None
        ds = image_rows(table, keep, columns["anchor"], columns["positive"])  # "label": the positive's path
        ids = [text_id(str(v)) for v in ds["label"]]
        ds = ds.rename_column("label", "positive_image").add_column("positive_base", ds["base"])
        return ds.add_column("anchor_id", [text_id(str(v)) for v in ds["image"]]).add_column("positive_id", ids) \
            .add_column("anchor_group", ids).add_column("positive_group", ids)

    def _finish(self, ds: datasets.Dataset, config: Config, *, train: bool) -> datasets.Dataset:
        """Training rows get augmentation and (labelled) a partner image of their label; evaluation rows
        of labelled images are numbered, the ids their ranking refers to."""
        if self.paired:
            return ds.add_column("length", [2] * len(ds)).add_column("augment", [train] * len(ds))
        ds = ds.add_column("anchor_id", list(range(len(ds))))
        if not train:
            return ds.add_column("length", [1] * len(ds))
        labels = [str(v) for v in ds["label"]]
        partner = _partners(labels, config.train.seed)
        alone = sum(1 for i, j in enumerate(partner) if i == j)
        if alone:
            log.warning("train: %d label(s) have a single image; each is paired with an augmented copy of itself",
                        alone)
        images, bases = ds["image"], ds["base"]
        return ds.add_column("positive_image", [images[j] for j in partner]) \
            .add_column("positive_base", [bases[j] for j in partner]) \
            .add_column("positive_group", ds["anchor_group"]).add_column("length", [2] * len(ds)) \
            .add_column("augment", [True] * len(ds))

    # ---- model ----------------------------------------------------------------------------
    def build_model(self, config: Config, model: ResolvedModel, data: PreparedData) -> nn.Module:
        return self._load(model.path, config)

    def _load(self, path: Path, config: Config) -> nn.Module:
        if is_timm_folder(path):
            backbone, _ = create_vision_backbone(path, 0)  # num_classes 0: pooled features, no head
            folder_config = json.loads((path / "config.json").read_text())
            return TimmClassifier(backbone, folder_config, []).to(memory_format=torch.channels_last)
        from transformers import AutoModel

        net = AutoModel.from_pretrained(path, trust_remote_code=config.model.trust_remote_code, dtype=torch.float32,
                                        **self.load_kwargs)
        if getattr(net, "pooler", None) is not None and getattr(net.config, "model_type", "") in TOKEN_MODELS:
            net.pooler = None  # a token model's pooler is an untrained dense layer here: we pool the tokens
        return net

    def encode(self, model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
        """One embedding per image: pooled features (normalised)."""
        out = model(pixel_values=pixel_values)
        if isinstance(out, torch.Tensor):
            features = out
        elif out.last_hidden_state.dim() == 3:  # tokens (ViT and kin)
            hidden = out.last_hidden_state
            features = {"cls": hidden[:, 0], "mean": hidden.mean(1), "max": hidden.max(1).values}[self.pooling]
        else:  # a convolution net's feature map: its own global pooling
            features = out.pooler_output.flatten(1)
        features = features.float()
        return F.normalize(features, p=2, dim=-1) if self.normalize else features

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]:
        assert self.preprocess is not None and self.config is not None
        augment = rows.get("augment")
        batch = {"anchor_pixel_values": pixel_batch(self.preprocess, rows["image"], rows["base"], augment,
                                                    self.config, self.rng),
                 "anchor_group": torch.as_tensor(rows["anchor_group"], dtype=torch.long),
                 "anchor_id": torch.as_tensor(rows["anchor_id"], dtype=torch.long)}
        if "positive_image" in rows:
            batch["positive_pixel_values"] = pixel_batch(self.preprocess, rows["positive_image"],
                                                         rows["positive_base"], augment, self.config, self.rng)
            batch["positive_group"] = torch.as_tensor(rows["positive_group"], dtype=torch.long)
        if "positive_id" in rows:
            batch["positive_id"] = torch.as_tensor(rows["positive_id"], dtype=torch.long)
        return batch

    def pair_embeddings(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {side: self.encode(model, batch[f"{side}_pixel_values"])
                for side in ("anchor", "positive") if f"{side}_pixel_values" in batch}

    # ---- scoring --------------------------------------------------------------------------
    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        sides = self.pair_embeddings(model, batch)
        out = {side: emb.cpu().numpy() for side, emb in sides.items()}
        out["anchor_id"], out["anchor_group"] = batch["anchor_id"].cpu().numpy(), batch["anchor_group"].cpu().numpy()
        if "positive_id" in batch:
            out["positive_id"] = batch["positive_id"].cpu().numpy()
            out["loss"] = (1 - F.cosine_similarity(sides["anchor"], sides["positive"])).cpu().numpy()
        else:
            out["loss"] = np.zeros(len(out["anchor"]), dtype=np.float32)  # set in compute_metrics
        return out

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]:
        from tunelab.metrics.retrieval import retrieval_metrics

        if "positive_id" in outputs:  # pairs: distinct anchors against distinct positives
            queries, documents, relevant = retrieval_problem(outputs)
            loss = float(outputs["loss"].mean()) if len(outputs["loss"]) else float("nan")
            return {**retrieval_metrics(cosine(queries, documents), relevant), "loss": loss}
        assert self.config is not None and self.config.objective is not None
        scores, relevant = labelled_problem(outputs["anchor"], outputs["anchor_group"])
        loss = labelled_loss(scores, relevant, getattr(self.config.objective, "scale", 20.0))
        keep = [q for q, wanted in enumerate(relevant) if wanted]  # a label with one image has nothing to find
        metrics = retrieval_metrics(scores[keep], [relevant[q] for q in keep])
        # recall@k (the share of all same-label images in the top k) is no measure of search here
        return {**{m: v for m, v in metrics.items() if not m.startswith("recall@")}, "loss": loss}

    def worst_samples(self, outputs: dict[str, np.ndarray], dataset: datasets.Dataset, data: PreparedData,
                      k: int) -> list[dict[str, Any]]:
        """Labelled images whose nearest image is of another label, by how far the wrong one is ahead."""
        if "positive_id" in outputs or not len(outputs["anchor"]):
            return []
        scores, relevant = labelled_problem(outputs["anchor"], outputs["anchor_group"])
        top = scores.argmax(1)
        wrong = [q for q, r in enumerate(relevant) if r and int(top[q]) not in r]
        lead = {q: scores[q, top[q]] - max(scores[q, j] for j in relevant[q]) for q in wrong}
        rows = []
        for q in sorted(wrong, key=lambda q: -lead[q])[:k]:
            row, found = dataset[int(outputs["anchor_id"][q])], dataset[int(outputs["anchor_id"][top[q]])]
            rows.append({"row": int(outputs["anchor_id"][q]), "input": _describe(row), "expected": row["label"],
                         "retrieved": f"{_describe(found)} ({found['label']})", "score": float(lead[q])})
        return rows

    # ---- saving and serving ---------------------------------------------------------------
    def save_artifacts(self, run_dir: Path, data: PreparedData) -> None:
        (run_dir / "embedding.json").write_text(json.dumps(
            {"pooling": self.pooling, "normalize": self.normalize, "modality": "image"}, indent=2) + "\n")

    def finalize_saved(self, folder: Path) -> None:
        assert self.preprocess is not None
        write_preprocess(folder, self.preprocess)

    def load_trained(self, run_dir: Path, config: Config) -> tuple[nn.Module, Any]:
        base = resolve_model(config.model).path
        self._setup(config, base)
        saved = json.loads((run_dir / "embedding.json").read_text())
        self.pooling, self.normalize = saved["pooling"], saved["normalize"]
        model_dir, adapter_dir = run_dir / "model", run_dir / "adapter"
        if (model_dir / "config.json").is_file():
            net = self._load(model_dir, config)
        elif (adapter_dir / "adapter_config.json").is_file():
            from peft import PeftModel

            net = PeftModel.from_pretrained(self._load(base, config), adapter_dir)
        else:
            raise RunError(f"{run_dir} has no saved model (no model/ or adapter/)",
                           fix="use a run that finished, or resume it with `tunelab train --resume`")
        return net.eval(), None

    def read_corpus(self, path: Path, column: str | None) -> list[str]:
        """The images of a search corpus (an image folder, or a table of paths) as paths to open."""
        assert self.config is not None
        data = self.config.data.model_copy(update={"train": str(path), "image_column": column or "image"})
        table = load_table(path, data, "train")
        good, _ = check_images(table, data)
        ds = image_rows(table, good, data.image_column, None)
        return [str(Path(base) / value) if isinstance(value, str) else f"row {i}"
                for i, (value, base) in enumerate(zip(ds["image"], ds["base"]))]

    def embed(self, model: nn.Module, tokenizer: Any, items: list[str], max_length: int,
              batch_size: int = 32) -> np.ndarray:
        """[images, dimension] embeddings of image paths (relative to the working directory)."""
        assert self.preprocess is not None and self.config is not None
        chunks = []
        for start in range(0, len(items), batch_size):
            paths = items[start : start + batch_size]
            pixels = pixel_batch(self.preprocess, paths, [str(Path.cwd())] * len(paths), None, self.config,
                                 self.rng)
            with torch.inference_mode():
                chunks.append(self.encode(model, pixels).numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)

    def predict(self, model: nn.Module, tokenizer: Any, texts: list[str], config: Config,
                top_k: int = 1) -> list[dict[str, Any]]:
        vectors = self.embed(model, tokenizer, texts, 0)
        return [{"text": path, "embedding": vector.tolist()} for path, vector in zip(texts, vectors)]


TOKEN_MODELS = {"vit", "deit", "dinov2", "beit", "swin", "clip_vision_model", "siglip_vision_model"}


def _partners(labels: list[str], seed: int) -> list[int]:
    """For each row, another row of its label: each label's rows shuffled (seeded) and paired with the
    next one round the cycle; a label's single row is paired with itself."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    rng = random.Random(seed)
    partner = list(range(len(labels)))
    for rows in by_label.values():
        order = rows[:]
        rng.shuffle(order)
        for a, b in zip(order, order[1:] + order[:1]):
            partner[a] = b
    return partner


def labelled_problem(vectors: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, list[set[int]]]:
    """Every image as a query against all the others: cosine scores with itself ranked last, and the
    images of its label as relevant."""
    scores = cosine(vectors, vectors)
    np.fill_diagonal(scores, -np.inf)
    same = groups[:, None] == groups[None, :]
    np.fill_diagonal(same, False)
    return scores, [set(np.flatnonzero(row).tolist()) for row in same]


def labelled_loss(scores: np.ndarray, relevant: list[set[int]], scale: float) -> float:
    """The validation loss of labelled images: -log of the softmax mass (scaled cosines over all other
    images) on the query's own label, averaged over queries. Unlike a mean distance it does not reward
    every embedding collapsing onto one point."""
    from scipy.special import logsumexp

    losses = [float(logsumexp(scale * row[~np.isinf(row)]) - logsumexp(scale * row[sorted(r)]))
              for row, r in zip(scores, relevant) if r]
    return float(np.mean(losses)) if losses else float("nan")


def _describe(row: dict[str, Any]) -> str:
    value = row["image"]
    return value if isinstance(value, str) else "(image bytes)"
