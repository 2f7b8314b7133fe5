"""Forgetting and its mitigations: retention sets scored before and after training, the
`eval.max_forgetting` gate, baselines for new heads, L2-SP, layer-wise learning-rate decay and replay."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import write_config, write_jsonl
from tunelab.config import load_config
from tunelab.data import general_text
from tunelab.engine.optim import build_optimizer, layer_scales
from tunelab.engine.regularize import L2SP, canonical_name
from tunelab.errors import ConfigError
from tunelab.recipes.train import train

SHIFTED = "zq " * 60  # a distribution far from any general text


def lm_config(tmp_path: Path, name: str, **sections) -> Path:
    """Full fine-tuning of the tiny Llama on one repeated pattern, scored on general-text."""
    data = write_jsonl(tmp_path / "shifted.jsonl", [{"text": SHIFTED} for _ in range(48)])
    body = {
        "task": "causal-lm",
        "model": {"source": "tiny-random-llama"},
        "data": {"train": str(data)},
        "method": {"name": "full"},
        "train": {"max_steps": 40, "batch_size": 8, "learning_rate": 3e-2, "max_length": 64, "seed": 0,
                  "num_threads": 1},
        "eval": {"retention": [{"source": "general-text", "max_rows": 16}], "max_forgetting": 0.05,
                 "generate_samples": 0},
        "output": {"dir": str(tmp_path / "runs")},
    }
    return write_config(tmp_path / f"{name}.yaml", body, sections)


def test_training_on_a_shifted_distribution_raises_retention_loss_and_fails_the_gate(tmp_path):
    outcome = train(load_config(lm_config(tmp_path, "shifted")))
    entry = outcome.results["retention"]["general-text"]
    assert entry["metric"] == "perplexity" and entry["info"]["rows"] == 16
    assert entry["after"]["loss"] > entry["before"]["loss"] + 0.5
    assert entry["forgetting"] == pytest.approx(entry["after"]["perplexity"] / entry["before"]["perplexity"] - 1)
    assert entry["passed"] is False
    gates = outcome.results["gates"]
    assert gates["passed"] is False and "forgetting on general-text: perplexity" in gates["checks"][0]["message"]
    record = json.loads((outcome.run.path / "run.json").read_text())
    assert record["status"] == "succeeded" and record["gates"]["passed"] is False
    assert json.loads((outcome.run.path / "eval_base.json").read_text())["retention"]["general-text"] == entry["before"]


def test_replay_lowers_forgetting(tmp_path):
    plain = train(load_config(lm_config(tmp_path, "plain")))
    replayed = train(load_config(lm_config(tmp_path, "replay", data={"replay": {"fraction": 0.5}})))
    data = json.loads((replayed.run.path / "data.json").read_text())
    assert data["replay"]["samples"] == data["samples"]["train"]  # fraction 0.5: as many replayed as task samples
    lost = {name: run.results["retention"]["general-text"]["forgetting"] for name, run in
            (("plain", plain), ("replay", replayed))}
    assert lost["replay"] < lost["plain"] / 2


def test_gate_failure_exits_with_status_3_after_saving_the_run(tmp_path, monkeypatch, capsys):
    from tunelab.cli.main import main
    from tunelab.errors import GATE_FAILED

    monkeypatch.setattr("sys.argv", ["tunelab", "train", str(lm_config(tmp_path, "cli"))])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == GATE_FAILED == 3
    printed = capsys.readouterr().out
    assert "gate failed:" in printed and "general-text" in printed
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "model" / "model.safetensors").is_file()


def test_general_text_halves_are_disjoint_and_skip_training_text():
    retention, _ = general_text.documents("retention", None)
    replay, _ = general_text.documents("replay", None)
    keys = set().union(*(general_text.paragraph_keys(d) for d in retention))
    assert not any(general_text.paragraph_keys(d) & keys for d in replay)
    first = retention[0]
    chosen, skipped = general_text.documents("retention", 5, exclude=general_text.paragraph_keys(first))
    assert first not in chosen and skipped >= 1 and len(chosen) == 5


# ---- classifiers: a previous task's held-out set, scored by its own head --------------------------
def _topic_run(make_config):
    return train(load_config(make_config("topics", train={"epochs": 12, "learning_rate": 3e-3, "num_threads": 1})))


def _noise_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"text": " ".join(rng.choices("abcdefghij", k=6)), "label": rng.choice(["yes", "no"])} for _ in range(n)]


def _second_task(make_config, tmp_path, topics, name, **train_cfg):
    """A new task (random labels) started from the topic model, with the topic test set retained."""
    data = {s: str(write_jsonl(tmp_path / "noise" / f"{s}.jsonl", _noise_rows(48, i))) for i, s in
            enumerate(("train", "validation", "test"))}
    path = make_config(name, model={"source": str(topics.run.path / "model")}, data=data,
                       train={"epochs": 6, "learning_rate": 1e-2, "num_threads": 1, **train_cfg},
                       eval={"metric": "accuracy", "retention": [{"source": str(tmp_path / "data" / "test.jsonl"),
                                                                   "name": "topics", "metric": "accuracy"}]})
    return train(load_config(path))


def test_previous_task_head_scores_retention_before_and_after(make_config, tmp_path):
    topics = _topic_run(make_config)
    plain = _second_task(make_config, tmp_path, topics, "noise")
    entry = plain.results["retention"]["topics"]
    # Before training, the previous head on the untouched backbone *is* the previous model.
    assert entry["before"]["accuracy"] == topics.results["test"]["accuracy"]
    assert entry["before"]["loss"] == pytest.approx(topics.results["test"]["loss"], abs=1e-5)
    assert entry["after"]["accuracy"] < entry["before"]["accuracy"]
    assert entry["forgetting"] > 0.1 and entry["limit"] is None and "gates" in plain.results
    # L2-SP pulls the backbone back toward the topic model: less of the topic task is lost.
    anchored = _second_task(make_config, tmp_path, topics, "noise-l2sp", l2_sp=50.0)
    assert anchored.results["retention"]["topics"]["forgetting"] < entry["forgetting"]


def test_retention_errors_stop_before_the_run_folder(make_config, tmp_path):
    for retention, message in (
        ([{"source": "general-text"}], "general-text measures causal LMs"),
        ([{"source": str(tmp_path / "data" / "test.jsonl")}], "has no trained text-classification head"),
    ):
        with pytest.raises(ConfigError, match=message):
            train(load_config(make_config("bad", eval={"retention": retention})))
    assert not (tmp_path / "runs").exists()


# ---- baselines ----------------------------------------------------------------------------------------
def test_new_head_is_compared_with_the_majority_class(make_config, text_data):
    rows = [json.loads(line) for line in text_data["train"].read_text().splitlines()]
    rows += [{"text": "goal goal", "label": "sport"}] * 10  # sport is now the majority
    write_jsonl(text_data["train"], rows)
    outcome = train(load_config(make_config(train={"num_threads": 1})))
    base = outcome.results["base"]
    assert base["kind"] == "majority-class" and "no text-classification head" in base["note"]
    test_labels = [json.loads(line)["label"] for line in text_data["test"].read_text().splitlines()]
    assert base["test"]["accuracy"] == test_labels.count("sport") / len(test_labels)
    assert outcome.results["gain"]["test"]["accuracy"] == pytest.approx(
        outcome.results["test"]["accuracy"] - base["test"]["accuracy"])
    samples = [json.loads(line) for line in (outcome.run.path / "samples_test.jsonl").read_text().splitlines()]
    assert [s["loss"] for s in samples] == sorted((s["loss"] for s in samples), reverse=True)
    assert {"input", "label", "predicted", "score"} <= set(samples[0])


def test_ner_baseline_finds_no_entity():
    from tunelab.tasks import TASKS, PreparedData
    from tunelab.tasks.token_classification import _objects

    task = TASKS.get("token-classification")()
    data = PreparedData(None, None, None, {"labels": ["O", "B-DRUG", "I-DRUG"]})
    outputs = {"sample": torch.arange(2).numpy(), "words": _objects([[0, 1], [0, 1, 2]]),
               "pred": _objects([[1, 2], [0, 1, 2]]), "gold": _objects([[1, 2], [0, 1, 2]]),
               "loss_sum": torch.ones(2).double().numpy(), "tokens": torch.ones(2).numpy()}
    assert task.compute_metrics(outputs, data)["f1"] == 1.0
    baseline = task.compute_metrics(task.baseline_outputs(outputs, data), data)
    assert baseline["f1"] == 0.0 and math.isnan(baseline["loss"])


# ---- L2-SP and layer-wise learning-rate decay -----------------------------------------------------------
def test_l2_sp_adds_the_gradient_of_its_penalty_and_skips_new_heads():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    reg = L2SP(model, strength=0.5, new_parameters={"1.weight", "1.bias"})
    assert reg.anchored == 20
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    penalty = reg.add_gradients()
    assert penalty == pytest.approx(0.5 / 2 * 20)
    assert torch.equal(model[0].weight.grad, torch.full((4, 4), 0.5))
    assert model[1].weight.grad is None
    explicit = sum(0.5 / 2 * (p - s).pow(2).sum() for p, s in zip(list(model[0].parameters()), start[:2]))
    assert float(explicit.detach()) == pytest.approx(penalty)


def test_canonical_names_strip_peft_wrappers():
    assert canonical_name("base_model.model.classifier.modules_to_save.default.weight") == "classifier.weight"
    assert canonical_name("base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.weight") == (
        "bert.encoder.layer.0.attention.self.query.weight")


def test_layer_lr_decay_scales_blocks_from_the_top(make_config):
    from transformers import AutoModelForSequenceClassification

    from tunelab.models import resolve_model

    config = load_config(make_config(train={"layer_lr_decay": 0.5}))
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(config.model).path, num_labels=3)
    n = model.config.num_hidden_layers
    scales = layer_scales(model, 0.5)
    named = {name: scales[id(p)] for name, p in model.named_parameters()}
    assert named["bert.embeddings.word_embeddings.weight"] == 0.5**n
    assert named[f"bert.encoder.layer.{n - 1}.output.dense.weight"] == 1.0
    assert named["bert.encoder.layer.0.output.dense.weight"] == 0.5 ** (n - 1)
    assert named["classifier.weight"] == 1.0
    optimizer = build_optimizer(model, config.train)
    assert optimizer.param_groups[0]["lr"] == config.train.learning_rate
    assert min(g["lr"] for g in optimizer.param_groups) == config.train.learning_rate * 0.5**n
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_chat_retention_set_is_also_scored_by_generation(tmp_path):
    from tests.test_causal_lm import chat_rows

    earlier = write_jsonl(tmp_path / "earlier_chat.jsonl", chat_rows(12, seed=7))
    train_data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(40, seed=1))
    path = lm_config(tmp_path, "chat", data={"train": str(train_data)},
                     train={"max_steps": 4, "learning_rate": 1e-3},
                     eval={"retention": [{"source": str(earlier), "name": "earlier"}], "generate_samples": 2,
                           "max_forgetting": None},
                     generation={"max_new_tokens": 4})
    entry = train(load_config(path)).results["retention"]["earlier"]
    assert entry["info"]["rows"] == 12 and entry["limit"] is None and entry["passed"]
    for when in ("before", "after"):
        assert set(entry[when]["generation"]) >= {"exact_match", "rouge_l"}
        assert entry[when]["tokens"] > 0
