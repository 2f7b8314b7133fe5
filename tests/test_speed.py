"""What makes a small run fast and says where its time went: precision/attention auto, FLOP counting
(MFU), timings in run.json, the base-score cache, and the evaluation generation budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.test_causal_lm import lm_config  # noqa: F401 - fixture
from tunelab.config import load_config
from tunelab.engine import hardware
from tunelab.engine.flops import FlopMeter
from tunelab.engine.hardware import Peak


def fake_peak(fp32: float, bf16: float) -> Peak:
    return Peak(device="cpu: test", fp32_flops=fp32, bf16_flops=bf16, bf16_supported=True)


@pytest.fixture
def cpu_peak(monkeypatch):
    """Pretend training runs on a CPU with the given matmul peaks."""
    def use(fp32: float, bf16: float) -> None:
        monkeypatch.setattr(hardware, "device_kind", lambda: "cpu")
        monkeypatch.setattr(hardware, "measured_peak", lambda kind=None: fake_peak(fp32, bf16))
    return use


def test_auto_precision_follows_the_measured_bf16_gain_and_the_model_size(lm_config, cpu_peak) -> None:
    config = load_config(lm_config())
    assert config.train.precision == "auto"
    cpu_peak(100e9, 230e9)
    assert hardware.resolve_precision(config, 135_000_000)[0] == "bf16"
    precision, reason = hardware.resolve_precision(config, 35_000)  # a tiny test model stays fp32
    assert precision == "fp32" and "parameters" in reason
    cpu_peak(100e9, 110e9)  # bf16 emulated, no faster: fp32
    precision, reason = hardware.resolve_precision(config, 135_000_000)
    assert precision == "fp32" and "1.10x" in reason
    explicit = load_config(lm_config(train={"precision": "bf16"}))
    assert hardware.resolve_precision(explicit, 35_000) == ("bf16", "set in the config")


def test_auto_attention_is_eager_only_for_short_bf16_rows_on_cpu(lm_config, cpu_peak) -> None:
    cpu_peak(100e9, 230e9)
    assert hardware.resolve_attention(load_config(lm_config()), "bf16") == "eager"
    assert hardware.resolve_attention(load_config(lm_config()), "fp32") is None
    long_rows = load_config(lm_config(train={"max_length": 1024}))
    assert hardware.resolve_attention(long_rows, "bf16") is None
    assert hardware.resolve_attention(load_config(lm_config(model={"source": "tiny-random-llama",
                                                                      "attention": "sdpa"})), "bf16") == "sdpa"


def test_checkpoint_parameters_are_read_from_safetensors_headers() -> None:
    from transformers import AutoModelForCausalLM

    from tunelab.models.tiny import tiny_llama_folder

    net = AutoModelForCausalLM.from_pretrained(tiny_llama_folder())
    stored = hardware.checkpoint_parameters(tiny_llama_folder())
    # tied embeddings are stored once and counted once, like parameters()
    assert stored == sum(p.numel() for p in net.parameters())


def test_flop_meter_counts_forward_and_weight_gradient_matmuls() -> None:
    meter = FlopMeter(fake_peak(1e9, 2e9), "fp32", devices=1)
    layer = nn.Linear(16, 32, bias=False)
    x = torch.randn(4, 16)  # the input needs no gradient: backward computes the weight's only
    with meter.counting():
        layer(x).sum().backward()
    matmul = 2 * 4 * 16 * 32
    assert meter.step_flops(positions=4) == 2 * matmul
    assert meter.step_flops(positions=8) == 4 * matmul  # later steps priced per position
    with meter.counting():  # not counted again
        layer(x).sum().backward()
    assert meter.summary(2e9, 2.0) == {"tflops": 0.001, "mfu": 1.0}
    assert FlopMeter(fake_peak(1e9, 2e9), "bf16", devices=2).peak_flops == 4e9


def test_run_records_timings_throughput_and_its_resolved_precision(lm_config) -> None:
    from tunelab.recipes.train import train

    run = train(load_config(lm_config())).run
    record = run.read_json("run.json")
    assert record["precision"] == "fp32" and "parameters" in record["precision_reason"]
    assert load_config(run.path / "config.yaml").train.precision == "fp32"  # reproductions use the same
    timings = record["timings"]
    # the base scores come from the cache when an earlier test scored the same model and rows
    base_phase = "base_cache" if record.get("base_scores", {}).get("cached") else "base_eval"
    for phase in ("import", "tokenize", "model_build", base_phase, "train_steps", "final_eval", "save", "total"):
        assert timings[phase] >= 0, phase
    assert sum(v for k, v in timings.items() if k != "total") == pytest.approx(timings["total"], abs=0.1)
    assert record["throughput"]["tflops"] > 0 and 0 < record["throughput"]["mfu"] < 1
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert all(line["mfu"] > 0 for line in lines if "split" not in line)


def test_base_scores_are_reused_for_the_same_model_and_data_only(lm_config, tmp_path: Path) -> None:
    from tests.conftest import write_jsonl
    from tests.test_causal_lm import chat_rows
    import shutil

    from tunelab.paths import cache_dir
    from tunelab.recipes.train import train

    shutil.rmtree(cache_dir() / "base-scores", ignore_errors=True)  # other tests share the session's cache
    first = train(load_config(lm_config(train={"max_steps": 2}))).run
    # another learning rate and LoRA rank: the same base model scored on the same rows
    second = train(load_config(lm_config(train={"max_steps": 3, "learning_rate": 5e-3},
                                         method={"name": "lora", "r": 8, "alpha": 16}))).run
    assert first.read_json("run.json")["base_scores"]["cached"] is False
    assert second.read_json("run.json")["base_scores"] == {**first.read_json("run.json")["base_scores"],
                                                            "cached": True}
    assert second.read_json("eval_base.json") == first.read_json("eval_base.json")
    other = write_jsonl(tmp_path / "other" / "chat.jsonl", chat_rows(80, seed=7))
    third = train(load_config(lm_config(data={"train": str(other)}, train={"max_steps": 2}))).run
    assert third.read_json("run.json")["base_scores"]["cached"] is False


def test_lora_base_scores_are_the_base_models_own(lm_config, monkeypatch) -> None:
    """The base is scored with the adapter disabled: the same figures as full fine-tuning's start."""
    from tunelab.recipes.train import train

    monkeypatch.setenv("TUNELAB_BASE_CACHE", "0")
    lora = train(load_config(lm_config(train={"max_steps": 1}))).run.read_json("eval_base.json")
    full = train(load_config(lm_config(method={"name": "full"}, train={"max_steps": 1}))).run.read_json(
        "eval_base.json")
    assert lora["validation"] == full["validation"] and lora["answers"] == full["answers"]


def test_evaluation_answers_get_a_budget_sized_to_the_references() -> None:
    from tunelab.config.schema import GenerationConfig
    from tunelab.engine.generation import eval_budget
    from tunelab.models.tiny import tiny_llama_folder
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_folder())
    prompts = [{"reference": "short"}, {"reference": "a somewhat longer reference answer here"}]
    longest = len(tokenizer(prompts[1]["reference"], add_special_tokens=False)["input_ids"])
    assert eval_budget(prompts, tokenizer, GenerationConfig(max_new_tokens=128)) == 2 * longest + 16
    assert eval_budget(prompts, tokenizer, GenerationConfig(max_new_tokens=10)) == 10
    assert eval_budget(prompts, tokenizer, GenerationConfig(max_new_tokens=128), 40) == 40


def test_the_matmul_probe_leaves_the_global_rng_alone() -> None:
    """The probe can run inside the first training step: drawing from the global RNG there changed the
    run's dropout masks, so a run that probed and one that read hardware.json trained differently."""
    from tunelab.engine import hardware

    before = torch.get_rng_state()
    hardware._matmul_flops(torch.device("cpu"), torch.float32, 64)
    assert torch.equal(before, torch.get_rng_state())
