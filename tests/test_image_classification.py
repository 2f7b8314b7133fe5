"""Image classification on the tiny random ViT and (slow) EfficientNet-Lite0: training, predict,
LoRA, augmentation, bad images, ONNX."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tunelab.config import load_config
from tunelab.recipes.train import train

COLORS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def make_images(root: Path, per_class: int, seed: int, size: int = 24) -> Path:
    """An image folder of noisy coloured squares: a task a tiny ViT learns in a few steps."""
    rng = random.Random(seed)
    for name, rgb in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = np.random.default_rng(rng.randrange(1 << 30)).integers(-40, 40, (size, size, 3))
            pixels = np.clip(np.asarray(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def image_config(tmp_path: Path):
    folders = {s: make_images(tmp_path / s, n, seed) for s, n, seed in [("train", 24, 1), ("validation", 6, 2),
                                                                          ("test", 6, 3)]}

    def make(**sections) -> Path:
        body = {"task": "image-classification", "model": {"source": "tiny-random-vit"},
                "data": {k: str(v) for k, v in folders.items()},
                "train": {"epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "log_every": 1},
                "output": {"dir": str(tmp_path / "runs")}}
        for section, values in sections.items():
            merge = isinstance(values, dict) and section != "method"
            body[section] = {**body.get(section, {}), **values} if merge else values
        path = tmp_path / "img.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return make


def test_tiny_vit_learns_colours_and_predicts_paths(image_config, tmp_path: Path) -> None:
    from tunelab.recipes.predict import predict_texts

    outcome = train(load_config(image_config()))
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert results["test"]["accuracy"] == 1.0, results["test"]
    assert results["test"]["top5_accuracy"] == 1.0
    assert results["test"]["confusion_matrix"]["labels"] == ["blue", "green", "red"]
    probe = tmp_path / "probe.png"
    Image.new("RGB", (40, 30), COLORS["green"]).save(probe)  # another size: resized and cropped
    [prediction] = predict_texts(outcome.run.path, [str(probe)], top_k=2)
    assert prediction["labels"][0]["label"] == "green" and len(prediction["labels"]) == 2
    assert (outcome.run.path / "model" / "tunelab_preprocess.json").is_file()


def test_lora_on_vit_trains_adapter_and_head(image_config) -> None:
    outcome = train(load_config(image_config(method={"name": "lora", "r": 4, "alpha": 8},
                                             train={"learning_rate": 1e-2})))
    record = json.loads((outcome.run.path / "run.json").read_text())
    assert record["trainable_params"] < 0.5 * record["total_params"]
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert results["test"]["accuracy"] >= 0.9
    assert (outcome.run.path / "adapter" / "adapter_config.json").is_file()


def test_augmentation_changes_training_pixels_not_evaluation(image_config) -> None:
    from tunelab.models import resolve_model
    from tunelab.tasks.image_classification import ImageClassification

    config = load_config(image_config(image={"augment": {"random_resized_crop": True, "horizontal_flip": True,
                                                         "color_jitter": 0.4}}))
    task = ImageClassification()
    data = task.prepare(config, None, resolve_model(config.model))
    rows = data.train[:4]
    first, second = task.collate(rows)["pixel_values"], task.collate(rows)["pixel_values"]
    assert not torch.equal(first, second)  # a new random crop/flip/jitter each time
    evals = [task.collate(data.test[:4])["pixel_values"] for _ in range(2)]
    assert torch.equal(*evals) and evals[0].shape[-1] == 32


def test_corrupt_images_are_skipped_and_counted(image_config, tmp_path: Path) -> None:
    (tmp_path / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    outcome = train(load_config(image_config(data={"bad_images": "skip"}, train={"max_steps": 1})))
    data = json.loads((outcome.run.path / "data.json").read_text())
    assert data["images"]["train"]["bad"] == 1 and data["rows"]["train"] == 72  # 3 classes x 24 good images


def test_image_classifier_exports_to_onnx(image_config) -> None:
    import onnxruntime as ort

    from tunelab.recipes.export import export_run

    outcome = train(load_config(image_config(train={"max_steps": 2})))
    summary = export_run(outcome.run.path, "onnx")
    session = ort.InferenceSession(summary["path"], providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    assert session.run(["logits"], {"pixel_values": batch})[0].shape == (3, 3)
    assert summary["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("train_last", [0, 1])
def test_freeze_all_but_the_last_blocks(image_config, train_last: int) -> None:
    from safetensors.torch import load_file

    from tunelab.models.vision import tiny_vit_folder

    outcome = train(load_config(image_config(method={"name": "freeze", "train_last": train_last},
                                             train={"max_steps": 2})))
    tuned = load_file(outcome.run.path / "model" / "model.safetensors")
    base = load_file(tiny_vit_folder() / "model.safetensors")
    changed = {k for k in base if k in tuned and tuned[k].shape == base[k].shape and not torch.equal(tuned[k], base[k])}
    # Saved in the checkpoint's original layout (vit.encoder.layer.N), as transformers writes it.
    assert not any(k.startswith(("vit.embeddings", "vit.encoder.layer.0.")) for k in changed)
    assert any(k.startswith("vit.encoder.layer.1.") for k in changed) == (train_last == 1)
    assert any(k.startswith("vit.layernorm") for k in changed)  # the head after the blocks trains


def test_eval_command_scores_a_new_image_folder(image_config, tmp_path: Path) -> None:
    from tunelab.recipes.evaluate import evaluate_run

    outcome = train(load_config(image_config()))
    fresh = make_images(tmp_path / "fresh", 4, seed=11)
    metrics, written = evaluate_run(outcome.run.path, fresh)
    assert metrics["support"] == 12 and metrics["accuracy"] >= 0.9 and written.is_file()


@pytest.mark.slow
def test_efficientnet_lite0_fine_tunes_on_digits(tmp_path: Path) -> None:
    """The real EfficientNet-Lite0 (ImageNet weights) on a slice of MNIST-5k."""
    from tunelab.data.corpora import CORPORA

    CORPORA.get("mnist-digits")(tmp_path / "digits")
    body = {"task": "image-classification", "model": {"source": "efficientnet-lite0"},
            "data": {s: str(tmp_path / "digits" / s) for s in ("train", "validation", "test")},
            "image": {"size": 64}, "train": {"max_steps": 40, "batch_size": 32, "learning_rate": 2e-3},
            "eval": {"every_steps": 40}, "output": {"dir": str(tmp_path / "runs")}}
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump(body))
    outcome = train(load_config(config))
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert results["test"]["accuracy"] > 0.8, results["test"]  # chance is 0.1
    assert json.loads((outcome.run.path / "model" / "config.json").read_text())["num_classes"] == 10


def test_best_checkpoint_keeps_its_batchnorm_statistics() -> None:
    """Restoring the best weights must restore BatchNorm running statistics too."""
    from tunelab.engine.checkpoint import _running_buffers, trainable_state

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).train()
    net(torch.randn(8, 3, 8, 8))
    state = trainable_state(net)
    assert torch.equal(state["1.running_mean"], net[1].running_mean) and "1.num_batches_tracked" in state
    assert set(_running_buffers(net)) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
