"""The causal-lm commands as a user runs them: data preview, train, chat, generate, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl
from tests.test_causal_lm import chat_rows
from tests.test_cli import tunelab


@pytest.fixture(scope="module")
def lm_job(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-lm")
    data = write_jsonl(root / "chat.jsonl", chat_rows(60, seed=1))
    config = root / "chat.yaml"
    config.write_text(yaml.safe_dump({
        "task": "causal-lm", "model": {"source": "tiny-random-llama"}, "data": {"train": str(data)},
        "method": {"name": "lora", "r": 4}, "lm": {"packing": True},
        "train": {"max_steps": 3, "batch_size": 8, "learning_rate": 1e-2, "max_length": 128},
        "eval": {"generate_samples": 2}, "generation": {"max_new_tokens": 4},
        "output": {"dir": str(root / "runs")},
    }))
    return root, config


@pytest.fixture(scope="module")
def lm_run(lm_job):
    root, config = lm_job
    result = tunelab("--quiet", "train", str(config))
    assert result.returncode == 0, result.stderr
    assert "(base)" in result.stdout and "rouge_l" in result.stdout  # base vs tuned table
    return next((root / "runs").iterdir())


def test_data_preview_shows_samples_and_stats(lm_job) -> None:
    _, config = lm_job
    result = tunelab("data", "preview", str(config), "-n", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("chat.jsonl line") == 2
    assert "The twin is" in result.stdout and "trained" in result.stdout
    assert "template: model, turns end with '</s>'" in result.stdout


def test_data_preview_refuses_a_config_with_nothing_trained(lm_job) -> None:
    _, config = lm_job
    result = tunelab("data", "preview", str(config), "train.max_length=8")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no token is trained" in result.stderr


def test_generate_writes_answers(lm_run, tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "What color is item 2?"}, {"prompt": "Hi"}])
    out = tmp_path / "answers.jsonl"
    result = tunelab("generate", str(lm_run), "--input", str(prompts), "--output", str(out), "--max-new-tokens", "3")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["What color is item 2?", "Hi"] and all("output" in r for r in rows)


def test_generate_names_the_bad_line(lm_run, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "ok"}\n{"question": "no"}\n')
    result = tunelab("generate", str(lm_run), "--input", str(prompts), "--output", str(tmp_path / "o.jsonl"))
    assert result.returncode == 1 and f"{prompts} line 2" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_chat_streams_answers_until_exit(lm_run) -> None:
    result = tunelab("chat", str(lm_run), "--max-new-tokens", "3", stdin="What color is item 1?\n/reset\nHi\n/exit\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("bot> ") == 2


def test_export_gguf_from_the_command_line(lm_run) -> None:
    result = tunelab("export", str(lm_run), "--format", "gguf", "--dtype", "f32")
    assert result.returncode == 0, result.stderr
    assert (lm_run / "exports" / "model-f32.gguf").stat().st_size > 0
    bad = tunelab("export", str(lm_run), "--format", "tflite")
    assert bad.returncode == 1 and "use merged, adapter, gguf, onnx or index" in bad.stderr
    refused = tunelab("export", str(lm_run), "--format", "onnx")
    assert refused.returncode == 1 and "ONNX export is not available for causal-lm runs" in refused.stderr
