"""Image embeddings (visual search): labelled images and image pairs on the tiny random ViT, the
false-negative mask of the contrastive loss, search by image and the exported index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import write_config
from tunelab.config import load_config
from tunelab.config.schema import ContrastiveObjective
from tunelab.errors import ConfigError, DataError
from tunelab.objectives.embedding import Contrastive
from tunelab.recipes.train import train

TINTS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1)}


def make_tinted(root: Path, per_class: int, seed: int, size: int = 24) -> Path:
    """Noisy grey squares with a faint tint per label: the grey level varies more than the tint, so the
    random ViT's embeddings mix the labels and tuning has something to learn."""
    rng = np.random.default_rng(seed)
    for name, rgb in TINTS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.uniform(0, 170) + np.asarray(rgb) * rng.uniform(40, 85) + rng.normal(0, 25, (size, size, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return {s: make_tinted(tmp_path / s, n, seed) for s, n, seed in [("train", 24, 1), ("validation", 8, 2),
                                                                      ("test", 8, 3)]}


def config_for(tmp_path: Path, data: dict[str, Path], name: str = "img", **sections) -> Path:
    body = {"task": "image-embedding", "model": {"source": "tiny-random-vit"},
            "data": {k: str(v) for k, v in data.items()},
            "train": {"epochs": 4, "batch_size": 8, "learning_rate": 1e-3, "log_every": 1, "seed": 0},
            "output": {"dir": str(tmp_path / "runs")}}
    return write_config(tmp_path / f"{name}.yaml", body, sections)


def test_labelled_images_tune_towards_same_label_neighbours_and_search_by_image(tmp_path, folders):
    from tunelab.recipes.export import export_run
    from tunelab.recipes.search import search

    outcome = train(load_config(config_for(tmp_path, folders)))
    run = outcome.run.path
    results = json.loads((run / "eval.json").read_text())
    base, tuned = results["base"]["test"], results["test"]
    assert results["base"]["kind"] == "pretrained"
    # measured: test nDCG@10 0.763 -> 1.000, precision@10 0.504 -> 0.700 (7 other images per label)
    assert base["ndcg@10"] < 0.85 and tuned["ndcg@10"] > 0.97
    assert tuned["precision@10"] == pytest.approx(0.7, abs=0.02) and tuned["hit@1"] == 1.0
    assert "recall@1" not in tuned  # the share of all same-label images in the top k: no search measure
    assert json.loads((run / "embedding.json").read_text()) == {"pooling": "cls", "normalize": True,
                                                                "modality": "image"}

    probe = tmp_path / "probe.png"
    Image.new("RGB", (30, 30), (90, 170, 90)).save(probe)  # green-tinted grey, another size
    [found] = search(run, [str(probe)], folders["validation"], top_k=5)
    assert [Path(r["document"]).parent.name for r in found["results"]] == ["green"] * 5
    assert found["results"][0]["score"] >= found["results"][-1]["score"]

    exported = export_run(run, "index", corpus=folders["validation"])
    folder = Path(exported["path"])
    vectors = np.load(folder / "embeddings.npy")
    documents = [json.loads(line)["text"] for line in (folder / "documents.jsonl").read_text().splitlines()]
    assert vectors.shape == (24, 32) and len(documents) == 24
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    import faiss

    scores, rows = faiss.read_index(str(folder / "index.faiss")).search(vectors[:3], 1)
    assert rows[:, 0].tolist() == [0, 1, 2] and np.allclose(scores[:, 0], 1.0, atol=1e-5)


def test_image_pairs_by_path(tmp_path, folders):
    """Pairs of paths (anchor, positive): distinct anchors ranked against distinct positives."""
    def pairs(split: str, per_class: int) -> Path:
        root = folders[split]  # absolute paths: the same relative names in two splits would read as leakage
        rows = [{"query": str(root / label / f"{i}.png"), "match": str(root / label / f"{(i + 1) % per_class}.png")}
                for label in TINTS for i in range(per_class)]
        path = folders[split] / "pairs.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    files = {"train": pairs("train", 24), "validation": pairs("validation", 8), "test": pairs("test", 8)}
    outcome = train(load_config(config_for(tmp_path, files, embedding={"anchor_column": "query",
                                                                       "positive_column": "match"})))
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert json.loads((outcome.run.path / "data.json").read_text())["layout"] == "pairs"
    assert results["test"]["queries"] == 24 and results["test"]["documents"] == 24
    assert results["test"]["recall@10"] > results["base"]["test"]["recall@10"]


def test_contrastive_leaves_same_label_rows_out_of_the_negatives():
    """Rows 0 and 1 share a label: row 0's loss ranks its positive against row 2's only; the plain loss
    (no groups) would also count row 1's positive as a negative."""
    torch.manual_seed(0)
    anchor, positive = torch.randn(3, 4), torch.randn(3, 4)

    class Sides:
        def pair_embeddings(self, model, batch):
            return {"anchor": anchor, "positive": positive}

    objective = Contrastive(Sides(), ContrastiveObjective(scale=20))
    groups = {"anchor_group": torch.tensor([5, 5, 9]), "positive_group": torch.tensor([5, 5, 9]),
              "anchor_pixel_values": torch.zeros(3, 1)}
    cos = F.normalize(anchor, dim=-1) @ F.normalize(positive, dim=-1).T * 20
    expected = sum(torch.logsumexp(cos[i, keep], 0) - cos[i, i] for i, keep in [(0, [0, 2]), (1, [1, 2]),
                                                                                 (2, [0, 1, 2])])
    assert objective.loss_sum(None, groups).item() == pytest.approx(expected.item(), rel=1e-5)
    plain = objective.loss_sum(None, {"anchor_pixel_values": torch.zeros(3, 1)})
    assert plain.item() == pytest.approx(F.cross_entropy(cos, torch.arange(3), reduction="sum").item(), rel=1e-5)
    assert objective.count_items(groups) == 3


def test_image_embedding_refuses_what_it_cannot_do(tmp_path, folders):
    with pytest.raises(ConfigError, match="objective triplet is not available for image embeddings"):
        train(load_config(config_for(tmp_path, folders, objective={"name": "triplet"})))
    one = make_tinted(tmp_path / "one", 4, 0)
    for name in ("green", "blue"):
        for file in (one / name).iterdir():
            file.unlink()
        (one / name).rmdir()
    with pytest.raises(DataError, match="has a single label"):
        train(load_config(config_for(tmp_path, {"train": one, "validation": folders["validation"]}, "one")))


def test_base_scores_are_reused_only_for_the_same_pixels(tmp_path, folders):
    """The base-score cache hits for an unchanged rerun, and misses when the task's section changes
    (pooling here; image.size likewise) or an evaluated image gets new bytes under the same path
    (neither shows in the rows' paths)."""
    def cached(name: str, **sections) -> bool:
        config = config_for(tmp_path, folders, name, train={"max_steps": 1}, **sections)
        return train(load_config(config)).run.read_json("run.json")["base_scores"]["cached"]

    assert cached("first") is False and cached("again") is True
    assert cached("mean", embedding={"pooling": "mean"}) is False
    Image.new("RGB", (24, 24), (10, 10, 200)).save(folders["validation"] / "red" / "0.png")
    assert cached("edited") is False


@pytest.mark.slow
def test_efficientnet_lite0_visual_search_on_digits_beats_its_imagenet_features(tmp_path: Path) -> None:
    """examples/visual-search.yaml, shortened (64 px, 40 steps), on the real MNIST-5k digits: the tuned
    backbone finds same-digit neighbours more often than its ImageNet features do."""
    import yaml

    from tunelab.data.corpora import CORPORA

    CORPORA.get("mnist-digits")(tmp_path / "digits")
    body = yaml.safe_load((Path(__file__).parents[1] / "examples" / "visual-search.yaml").read_text())
    body["data"] = {s: str(tmp_path / "digits" / s) for s in ("train", "validation", "test")}
    body["image"]["size"] = 64
    body["train"].update({"max_steps": 40})
    body["eval"]["every_steps"] = 40
    body["output"] = {"dir": str(tmp_path / "runs")}
    config = tmp_path / "visual-search.yaml"
    config.write_text(yaml.safe_dump(body))
    outcome = train(load_config(config))
    base, tuned = outcome.results["base"]["test"], outcome.results["test"]
    assert tuned["queries"] == 500 and tuned["documents"] == 500
    assert tuned["hit@1"] > base["hit@1"] + 0.05 and tuned["mrr@10"] > base["mrr@10"]
    assert json.loads((outcome.run.path / "model" / "config.json").read_text())["num_classes"] == 0
