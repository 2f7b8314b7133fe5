"""End-to-end training on the tiny random BERT: artifacts, methods, invariants, resume, failures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunelab.config import load_config
from tunelab.engine.reporting import SilentReporter
from tunelab.errors import ConfigError, TrainingError
from tunelab.recipes.train import train


def metrics_lines(run_path: Path) -> list[dict]:
    return [json.loads(line) for line in (run_path / "metrics.jsonl").read_text().splitlines()]


def train_losses(run_path: Path) -> list[float]:
    return [m["loss"] for m in metrics_lines(run_path) if "split" not in m]


def test_full_run_writes_complete_run_folder(make_config):
    outcome = train(load_config(make_config()))
    run = outcome.run.path
    for name in ("config.yaml", "run.json", "data.json", "environment.json", "metrics.jsonl", "eval.json",
                 "train.log", "labels.json", "model/config.json", "model/model.safetensors"):
        assert (run / name).exists(), name
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "succeeded"
    assert record["trainable_params"] == record["total_params"] > 0
    assert record["best_reason"].startswith("best: step ")
    results = json.loads((run / "eval.json").read_text())
    for split in ("validation", "test"):
        assert {"accuracy", "macro_f1", "per_class", "confusion_matrix", "loss"} <= set(results[split])
        assert sum(map(sum, results[split]["confusion_matrix"]["matrix"])) == 24
    assert set(results["test"]["per_class"]) == {"politics", "sport", "tech"}
    step = metrics_lines(run)[0]
    assert {"step", "loss", "lr", "grad_norm", "tokens_per_s", "epoch"} <= set(step)
    env = json.loads((run / "environment.json").read_text())
    assert "torch" in env["packages"] and env["torch_threads"] >= 1
    data = json.loads((run / "data.json").read_text())
    assert data["labels"] == ["politics", "sport", "tech"]
    assert all(len(f["files"][0]["sha256"]) == 64 for f in data["files"])


def test_tiny_model_learns_the_synthetic_topics(make_config):
    outcome = train(load_config(make_config(train={"epochs": 25, "learning_rate": 3e-3})))
    assert outcome.results["test"]["accuracy"] >= 0.9


def test_saved_model_loads_with_plain_transformers_and_matches_test_metrics(make_config, text_data):
    outcome = train(load_config(make_config()))
    model_dir = outcome.run.path / "model"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [json.loads(line) for line in text_data["test"].read_text().splitlines()]
    enc = tokenizer([r["text"] for r in rows], padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**enc).logits.argmax(-1).tolist()
    accuracy = sum(model.config.id2label[p] == r["label"] for p, r in zip(predicted, rows)) / len(rows)
    assert accuracy == pytest.approx(outcome.results["test"]["accuracy"])


# Golden loss curve: 8 optimizer steps of the tiny BERT, fp32, CPU. A change in data order, loss
# normalisation, initialisation or optimizer shows up here. Regenerate only for an intended change.
GOLDEN_LOSSES = [
    1.1006269454956055, 1.1413182020187378, 1.1262221336364746, 1.1009697914123535,
    1.1042559146881104, 1.1152855157852173, 1.0885947942733765, 1.093151569366455,
]


def test_golden_loss_curve(make_config):
    outcome = train(load_config(make_config(train={"max_steps": 8, "learning_rate": 1e-2}, model={"dropout": 0.0})))
    losses = train_losses(outcome.run.path)
    assert len(losses) == 8
    assert losses == pytest.approx(GOLDEN_LOSSES, rel=1e-5, abs=1e-6)


def test_gradient_accumulation_is_invariant(make_config):
    common = {"max_steps": 4, "group_by_length": False}
    one = train(load_config(make_config("a", train={**common, "batch_size": 8}, model={"dropout": 0.0})))
    two = train(load_config(make_config("b", train={**common, "batch_size": 4, "gradient_accumulation_steps": 2},
                                        model={"dropout": 0.0})))
    assert train_losses(one.run.path) == pytest.approx(train_losses(two.run.path), rel=1e-5)


class StopAt(SilentReporter):
    """Simulates Ctrl-C at a given step."""

    def __init__(self, step: int) -> None:
        self.at = step

    def step(self, step: int, record: dict) -> None:
        if step == self.at:
            raise KeyboardInterrupt


def test_resume_reaches_the_same_final_weights(make_config):
    # Dropout stays on, gradient accumulation and mid-epoch interruption: the hard case.
    body = {"max_steps": 9, "checkpoint_every": 4, "gradient_accumulation_steps": 2, "batch_size": 4}
    whole = train(load_config(make_config("whole", train=body)))
    config = load_config(make_config("broken", train=body))
    with pytest.raises(KeyboardInterrupt):
        train(config, reporter=StopAt(6))
    broken = next(p for p in Path(config.output.dir).iterdir() if p.name.startswith("broken"))
    assert json.loads((broken / "run.json").read_text())["status"] == "interrupted"
    assert sorted(p.name for p in (broken / "checkpoints").glob("step-*")) == ["step-0000004"]
    from tunelab.runs import RunFolder

    resumed = train(RunFolder.open(broken).config(), resume=RunFolder.open(broken))
    a = load_file(whole.run.path / "model" / "model.safetensors")
    b = load_file(resumed.run.path / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert train_losses(whole.run.path) == train_losses(resumed.run.path)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(make_config, monkeypatch):
    from tunelab.objectives.cross_entropy import CrossEntropy

    calls = {"n": 0}
    original = CrossEntropy.loss_sum

    def poisoned(self, model, batch):
        calls["n"] += 1
        loss = original(self, model, batch)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(CrossEntropy, "loss_sum", poisoned)
    config = load_config(make_config(train={"max_steps": 8, "checkpoint_every": 2}))
    with pytest.raises(TrainingError, match=r"loss became nan at step 5.*step-0000004"):
        train(config)
    run = next(Path(config.output.dir).iterdir())
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    weights = load_file(run / "checkpoints" / "step-0000004" / "trainable.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_early_stopping_with_patience(make_config):
    config = load_config(make_config(train={"learning_rate": 1e-12, "epochs": 5},
                                     eval={"every_steps": 2, "early_stopping_patience": 2}))
    outcome = train(config)
    record = json.loads((outcome.run.path / "run.json").read_text())
    assert record["stopped_early"] is True
    assert record["steps"] == 6  # best at step 2, no improvement at 4 and 6
    assert record["best"]["step"] == 2


def test_freeze_keeps_frozen_weights(make_config):
    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    outcome = train(load_config(make_config(method={"name": "freeze", "layers": 1, "embeddings": True})))
    base = AutoModelForSequenceClassification.from_pretrained(resolve_model(ModelConfig(source="tiny-random-bert")).path,
                                                              num_labels=3)
    tuned = AutoModelForSequenceClassification.from_pretrained(outcome.run.path / "model")
    before, after = dict(base.named_parameters()), dict(tuned.named_parameters())
    frozen = [n for n in before if n.startswith(("bert.embeddings", "bert.encoder.layer.0."))]
    trained = [n for n in before if n.startswith("bert.encoder.layer.1.")]
    assert frozen and trained
    assert all(torch.equal(before[n], after[n]) for n in frozen)
    assert all(not torch.equal(before[n], after[n]) for n in trained)
    record = json.loads((outcome.run.path / "run.json").read_text())
    assert record["trainable_params"] < record["total_params"]


@pytest.mark.parametrize("method", [
    {"name": "lora", "r": 4, "alpha": 8},
    {"name": "dora", "r": 4, "alpha": 8},
    {"name": "lora", "r": 4, "alpha": 8, "use_rslora": True, "init": "gaussian", "lr_ratio": 16},
    {"name": "ia3"},
    {"name": "loha", "r": 4, "alpha": 4},
    {"name": "lokr", "r": 4, "alpha": 4},
    {"name": "vera", "r": 16},
    {"name": "oft", "block_size": 4},
    {"name": "boft", "block_size": 4, "butterfly_factors": 2},
], ids=["lora", "dora", "rslora-gaussian-lora+", "ia3", "loha", "lokr", "vera", "oft", "boft"])
def test_peft_methods_merge_and_keep_adapter(make_config, method):
    """Each PEFT method trains, saves an adapter that PeftModel loads, and a merged model whose logits
    equal base + adapter; the adapter file holds exactly the parameters the run counted as trainable."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from tunelab.config.schema import ModelConfig
    from tunelab.models import resolve_model

    outcome = train(load_config(make_config(method={**method, "target_modules": "auto"}, train={"max_steps": 4})))
    run = outcome.run.path
    record = json.loads((run / "run.json").read_text())
    assert 0 < record["trainable_params"] < record["total_params"] * 0.5
    assert (run / "adapter" / "adapter_config.json").is_file()
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    # (VeRA's file also holds its shared, frozen random projections, so it loads without the PRNG key)
    trained = {k: t for k, t in saved.items() if not k.split(".")[-1].startswith(("vera_A", "vera_B"))}
    assert sum(t.numel() for t in trained.values()) == record["trainable_params"]
    merged = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model(ModelConfig(source="tiny-random-bert")).path, num_labels=3,
        id2label=merged.config.id2label, label2id=merged.config.label2id)
    adapted = PeftModel.from_pretrained(base, run / "adapter").eval()
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    enc = tokenizer(["goal match team", "vote tax law"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**enc).logits, adapted(**enc).logits, atol=1e-5)


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_lora_inits_from_the_base_weights_save_a_plain_lora(make_config, init):
    """PiSSA/OLoRA start the adapter from each weight's principal directions and take them out of the
    frozen base: before the first step the model computes the base's logits; after training, adapter/ is a
    rank-2r LoRA on the original weights whose logits equal the merged model/."""
    from peft import PeftModel

    from tunelab.config.schema import ModelConfig
    from tunelab.methods import METHODS
    from tunelab.models import load_tokenizer, resolve_model
    from tunelab.tasks import TASKS

    config = load_config(make_config(method={"name": "lora", "r": 4, "alpha": 8, "init": init},
                                     train={"max_steps": 4}))
    task, resolved = TASKS.get(config.task)(), resolve_model(config.model)
    tokenizer = load_tokenizer(resolved, config.model)
    enc = tokenizer(["goal match team", "vote tax law"], padding=True, return_tensors="pt")
    data = task.prepare(config, tokenizer, resolved)
    torch.manual_seed(0)
    model = task.build_model(config, resolved, data).eval()
    with torch.no_grad():
        before = model(**enc).logits
        adapted = METHODS.get("lora")().apply(model, config, task).eval()
        moved = [n for n, p in adapted.named_parameters() if ".lora_A." in n and p.abs().sum() > 0]
        assert moved  # A starts non-zero (the singular vectors), unlike the default init
        assert torch.allclose(adapted(**enc).logits, before, atol=1e-5)

    run = train(config).run.path
    saved = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert saved["r"] == 8 and saved["init_lora_weights"] is True
    merged = AutoModelForSequenceClassification.from_pretrained(run / "model").eval()
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model(ModelConfig(source="tiny-random-bert")).path, num_labels=3,
        id2label=merged.config.id2label, label2id=merged.config.label2id)
    loaded = PeftModel.from_pretrained(base, run / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(merged(**enc).logits, loaded(**enc).logits, atol=1e-5)


def test_base_moving_inits_are_lora_only(make_config):
    with pytest.raises(ConfigError, match="method.init: pissa changes the frozen base weights"):
        train(load_config(make_config(method={"name": "dora", "r": 4, "init": "pissa"})))


def test_tokenization_is_cached_across_runs(make_config):
    first = train(load_config(make_config("one", train={"max_steps": 1})))
    second = train(load_config(make_config("two", train={"max_steps": 1, "learning_rate": 1e-4})))
    assert not any(json.loads((first.run.path / "data.json").read_text())["cache_hits"].values())
    assert all(json.loads((second.run.path / "data.json").read_text())["cache_hits"].values())
    third = train(load_config(make_config("three", train={"max_steps": 1, "max_length": 32})))
    assert not any(json.loads((third.run.path / "data.json").read_text())["cache_hits"].values())


def test_splits_are_derived_when_absent(make_config, text_data):
    outcome = train(load_config(make_config(data={"train": str(text_data["train"]), "validation": None,
                                                   "test": None, "validation_size": 0.25, "test_size": 0.25},
                                            train={"max_steps": 1})))
    info = json.loads((outcome.run.path / "data.json").read_text())
    assert info["split_from_train"] == ["test", "validation"]
    assert info["rows"] == {"train": 48, "validation": 24, "test": 24}
    for split in ("validation", "test"):  # stratified: 8 of each of the 3 balanced classes
        assert set(info["label_counts"][split].values()) == {8}


def test_bf16_autocast_trains(make_config):
    outcome = train(load_config(make_config(train={"max_steps": 3, "precision": "bf16"})))
    assert all(math.isfinite(x) for x in train_losses(outcome.run.path))


def test_gradient_checkpointing_matches_plain(make_config):
    plain = train(load_config(make_config("p", train={"max_steps": 3}, model={"dropout": 0.0})))
    ckpt = train(load_config(make_config("c", train={"max_steps": 3, "gradient_checkpointing": True},
                                         model={"dropout": 0.0})))
    assert train_losses(plain.run.path) == pytest.approx(train_losses(ckpt.run.path), rel=1e-5)


def test_unmerged_adapter_run_predicts_and_evaluates(make_config, text_data):
    from tunelab.recipes.evaluate import evaluate_run
    from tunelab.recipes.predict import predict_texts

    outcome = train(load_config(make_config(method={"name": "lora", "r": 4, "merge": False},
                                            train={"max_steps": 4})))
    run = outcome.run.path
    assert not (run / "model").exists() and (run / "adapter" / "adapter_config.json").is_file()
    predictions = predict_texts(run, ["goal match team", "vote tax law"], top_k=3)
    assert [sorted(g["label"] for g in p["labels"]) for p in predictions] == [["politics", "sport", "tech"]] * 2
    metrics, _ = evaluate_run(run, text_data["test"])
    assert metrics["accuracy"] == pytest.approx(outcome.results["test"]["accuracy"])


def test_lora_plus_trains_the_b_matrices_faster(make_config):
    """LoRA+ (method.lr_ratio): every lora_B matrix sits in optimizer groups at learning_rate x ratio,
    every lora_A and the head at learning_rate."""
    from tunelab.engine.optim import build_optimizer
    from tunelab.methods import METHODS
    from tunelab.tasks import TASKS

    config = load_config(make_config(method={"name": "lora", "r": 4, "alpha": 8, "lr_ratio": 16}))
    task = TASKS.get(config.task)()
    from tunelab.models import load_tokenizer, resolve_model

    resolved = resolve_model(config.model)
    data = task.prepare(config, load_tokenizer(resolved, config.model), resolved)
    lora = METHODS.get("lora")()
    model = lora.apply(task.build_model(config, resolved, data), config, task)
    optimizer = build_optimizer(model, config.train, lora.lr_scales(model, config))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    b = [n for n in names if ".lora_B." in n]
    assert b and all(rate[id(names[n])] == pytest.approx(16 * config.train.learning_rate) for n in b)
    assert all(rate[id(p)] == pytest.approx(config.train.learning_rate) for n, p in names.items() if n not in b)
