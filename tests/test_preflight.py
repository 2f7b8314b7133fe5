"""Constraints between settings, and between settings and the model or data, are refused before a run
folder exists, each with one line naming the key and the largest value that fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl
from tests.test_causal_lm import chat_rows
from tests.test_token_classification import ner_rows
from tunelab.config import load_config
from tunelab.errors import ConfigError, TunelabError
from tunelab.recipes.train import train


def _refused(path: Path, pattern: str) -> str:
    config = load_config(path)
    with pytest.raises(TunelabError, match=pattern) as info:
        train(config)
    runs = Path(config.output.dir)
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was left behind"
    assert "\n" not in str(info.value)
    return str(info.value)


def _write(tmp_path: Path, body: dict, name: str = "cfg") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.fixture
def ner_body(tmp_path: Path) -> dict:
    data = {s: str(write_jsonl(tmp_path / f"{s}.jsonl", ner_rows(n, seed, long=True)))
            for s, n, seed in [("train", 40, 1), ("validation", 8, 2), ("test", 8, 3)]}
    return {"task": "token-classification", "model": {"source": "tiny-random-bert"}, "data": data,
            "train": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-2, "max_length": 32},
            "output": {"dir": str(tmp_path / "runs")}}


def test_ner_at_a_short_max_length_uses_a_stride_that_fits(ner_body: dict, tmp_path: Path) -> None:
    """The default overlap (32 tokens) cannot fit a 30-token window: it becomes half a window, and the
    long sentences are split into windows and merged back."""
    from transformers import AutoTokenizer

    from tunelab.models import resolve_model
    from tunelab.tasks.token_classification import window_stride

    outcome = train(load_config(_write(tmp_path, ner_body)))
    assert outcome.run.read_json("run.json")["status"] == "succeeded"
    data = outcome.run.read_json("data.json")
    assert data["windows"]["train"] > data["rows"]["train"]  # long sentences made several windows
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(load_config(_write(tmp_path, ner_body)).model).path)
    assert window_stride(load_config(_write(tmp_path, ner_body)), tokenizer) == 15
    ner_body["train"]["max_length"] = 64  # room for the default again
    assert window_stride(load_config(_write(tmp_path, ner_body)), tokenizer) == 32


def test_an_explicit_stride_that_does_not_fit_is_refused(ner_body: dict, tmp_path: Path) -> None:
    ner_body["tokens"] = {"stride": 32}
    message = _refused(_write(tmp_path, ner_body), r"tokens.stride 32 does not fit train.max_length 32")
    assert "at most 29" in message and "set tokens.stride to 15" in message


def test_max_length_beyond_the_models_positions_is_refused(ner_body: dict, tmp_path: Path) -> None:
    ner_body["train"]["max_length"] = 600  # the tiny BERT has 512 positions
    _refused(_write(tmp_path, ner_body), r"train.max_length 600 is longer than tiny-random-bert can read: it has "
                                         r"512 positions — set train.max_length to 512 or less")


def test_generation_beyond_the_models_positions_is_refused(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(40, seed=1))
    body = {"task": "causal-lm", "model": {"source": "tiny-random-llama"}, "data": {"train": str(data)},
            "train": {"max_steps": 2, "batch_size": 8, "max_length": 500}, "generation": {"max_new_tokens": 64},
            "output": {"dir": str(tmp_path / "runs")}}
    _refused(_write(tmp_path, body), r"generation.max_new_tokens 64 after prompts of up to train.max_length 500 "
                                     r"tokens passes tiny-random-llama's 512 positions — set generation.max_new_tokens "
                                     r"to 12 or less")
    body["eval"] = {"generate_samples": 0}  # no generation during evaluation: nothing to fit
    load_config(_write(tmp_path, body, "nogen"))  # (validates; training it is covered elsewhere)


def test_warmup_longer_than_the_run_is_refused(make_config) -> None:
    # 96 rows, batch 8, 2 epochs: 24 optimizer steps
    message = _refused(make_config(train={"warmup_steps": 24}), r"train.warmup_steps 24 is not below the run's "
                                                                 r"24 optimizer steps")
    assert "set train.warmup_steps to 2 (or at most 23)" in message


def test_held_out_fractions_must_leave_training_rows(tmp_path: Path) -> None:
    body = {"task": "text-classification", "model": {"source": "tiny-random-bert"},
            "data": {"train": "t.jsonl", "validation_size": 0.5, "test_size": 0.5}}
    with pytest.raises(ConfigError, match=r"data.validation_size 0.5 \+ data.test_size 0.5 hold out all of "
                                          r"data.train"):
        load_config(_write(tmp_path, body))
    body["data"]["test"] = "test.jsonl"  # a given test file: only validation is split off
    load_config(_write(tmp_path, body))


def test_output_dir_naming_a_file_is_refused_before_any_data_is_read(make_config, tmp_path: Path,
                                                                     monkeypatch) -> None:
    from tunelab.recipes import governance

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setattr(governance, "prepare", lambda config: pytest.fail("data was read first"))
    for where in (blocker, blocker / "runs"):
        config = load_config(make_config(output={"dir": str(where)}))
        with pytest.raises(ConfigError, match=r"output.dir.* is a file, not a folder"):
            train(config)


@pytest.mark.parametrize(("sections", "pattern"), [
    ({"objective": {"name": "grpo", "rewards": [{"name": "length", "max_tokens": 9}]},
      "distributed": {"strategy": "fsdp"}}, r"objective grpo cannot run under distributed.strategy fsdp"),
    ({"method": {"name": "qlora"}, "distributed": {"strategy": "deepspeed", "deepspeed": {"stage": 3}}},
     r"method qlora cannot run under DeepSpeed ZeRO-3"),
    ({"train": {"l2_sp": 0.1}, "distributed": {"strategy": "deepspeed"}}, r"train.l2_sp cannot run under .*deepspeed"),
    ({"train": {"l2_sp": 0.1}, "distributed": {"strategy": "fsdp"}}, r"train.l2_sp cannot run under .*fsdp"),
    ({"distributed": {"strategy": "deepspeed", "deepspeed": {"stage": 2, "offload_params": True}}},
     r"offload_params needs stage 3 \(it is 2\)"),
    ({"train": {"gradient_checkpointing": True},
      "distributed": {"strategy": "fsdp", "fsdp": {"activation_checkpointing": True}}}, r"both recompute activations"),
])
def test_sharding_combinations_that_cannot_run_are_refused(tmp_path: Path, sections: dict, pattern: str) -> None:
    """Refused on a laptop's single process as on the cluster: the answer does not wait for the launch."""
    from tunelab.engine.accel import check_distributed

    data = str(write_jsonl(tmp_path / "chat.jsonl", chat_rows(8, seed=1)))
    body = {"task": "causal-lm", "model": {"source": "tiny-random-llama"}, "data": {"train": data},
            "output": {"dir": str(tmp_path / "runs")}, **sections}
    if "grpo" in str(sections):
        body["data"]["train"] = str(write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(8)]))
    config = load_config(_write(tmp_path, body))
    with pytest.raises(ConfigError, match=pattern) as info:
        check_distributed(config)
    assert "\n" not in str(info.value) and " — " in str(info.value)  # one line, with the fix


def test_deepspeed_config_file_merges_under_what_train_decides(tmp_path: Path, monkeypatch) -> None:
    """A user's DeepSpeed JSON keeps its own keys; batch, accumulation, clipping and precision follow train.*."""
    from tunelab.engine.accel import deepspeed_config

    (tmp_path / "ds.json").write_text('{"zero_optimization": {"overlap_comm": true}, "wall_clock_breakdown": true,'
                                      ' "gradient_accumulation_steps": 99}')
    data = str(write_jsonl(tmp_path / "chat.jsonl", chat_rows(8, seed=1)))
    body = {"task": "causal-lm", "model": {"source": "tiny-random-llama"}, "data": {"train": data},
            "train": {"batch_size": 6, "gradient_accumulation_steps": 2, "max_grad_norm": 0.5, "precision": "bf16"},
            "distributed": {"strategy": "deepspeed", "deepspeed": {"stage": 1, "config": str(tmp_path / "ds.json")}}}
    monkeypatch.setenv("WORLD_SIZE", "4")
    ds = deepspeed_config(load_config(_write(tmp_path, body)))
    assert ds["zero_optimization"] == {"overlap_comm": True, "stage": 1}
    assert ds["wall_clock_breakdown"] is True
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (2, 2)
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"] == {"enabled": True}
    (tmp_path / "ds.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"distributed.deepspeed.config: cannot read .*ds.json as JSON"):
        deepspeed_config(load_config(_write(tmp_path, body)))
