"""GRPO on the tiny random Llama: prompt-only layouts, the built-in rewards and your own, group
advantages, the clipped loss with its KL term against a plain-torch reference written here, training
that raises a reward, several updates per batch of answers, and the refusals."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import write_jsonl
from tests.test_preference import _normalize, job_writer, prepared
from tunelab.config import load_config
from tunelab.config.schema import (
    ExactMatchReward,
    GrpoObjective,
    JsonSchemaReward,
    LengthReward,
    RegexReward,
)
from tunelab.errors import ConfigError, DataError, TrainingError
from tunelab.objectives import OBJECTIVES
from tunelab.objectives.base import IGNORE
from tunelab.objectives.rewards import build_rewards
from tunelab.recipes.train import train
from tunelab.tasks.causal_lm import CausalLM

COLORS = ["red", "blue", "green"]
LOWERCASE = '''
def lowercase(prompts, completions, **columns):
    """The share of an answer's characters that are lowercase letters."""
    return [sum(c.islower() for c in text) / max(len(text), 1) for text in completions]
'''


def prompt_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"prompt": [{"role": "user", "content": f"Color of item {i}?"}], "answer": rng.choice(COLORS),
             "id": i} for i in range(n)]


@pytest.fixture
def grpo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # the reward file is named relative to where tunelab runs
    (tmp_path / "rewards.py").write_text(LOWERCASE)
    data = write_jsonl(tmp_path / "data" / "prompts.jsonl", prompt_rows(48, seed=1))

    objective = {"name": "grpo", "num_generations": 8, "max_new_tokens": 4, "allow_code": True,
                 "rewards": [{"name": "function", "path": "rewards.py:lowercase"}]}
    # an objective section adds to these settings (the tests vary one knob at a time)
    return job_writer(tmp_path, data, objective, method={"name": "full"}, replaced=("method",), max_steps=20,
                      max_length=64)


def steps(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "split" not in r]


# ---- data --------------------------------------------------------------------------------------
def test_prompt_only_rows_keep_their_other_columns_for_the_rewards(tmp_path: Path) -> None:
    chat, info = _normalize(tmp_path, prompt_rows(2, 0))
    assert info["records"] == "chat-prompt-only" and info["kind"] == "chat-prompt-only"
    assert chat[1]["messages"] == [{"role": "user", "content": "Color of item 1?"}]
    assert json.loads(chat[1]["extra"]) == {"answer": prompt_rows(2, 0)[1]["answer"], "id": 1}
    plain, info = _normalize(tmp_path, [{"prompt": "2 + 2 =", "solution": "4"}])
    assert info["records"] == "prompt-only" and json.loads(plain[0]["extra"]) == {"solution": "4"}
    with pytest.raises(DataError, match=r"rows\.jsonl line 1: 'prompt' must end with a user message"):
        _normalize(tmp_path, [{"prompt": [{"role": "assistant", "content": "hi"}]}])


def test_prompts_are_encoded_as_inference_encodes_them(grpo_config) -> None:
    config, task, _, data = prepared(grpo_config())
    row = data.train[0]
    messages = [{"role": "user", "content": f"Color of item {json.loads(row['extra'])['id']}?"}]
    assert row["input_ids"] == task.encode_prompt({"messages": messages}, config)
    assert task.tokenizer.decode(row["input_ids"]).endswith("<|assistant|>\n")  # the generation prompt
    assert config.eval.metric == "reward"  # the objective's default metric


# ---- rewards -----------------------------------------------------------------------------------
def _scores(settings, answers: list[str], rows: list[dict] | None = None, lengths: list[int] | None = None):
    [reward] = build_rewards([settings])
    return reward.score([""] * len(answers), answers, lengths or [len(a) for a in answers],
                        rows or [{}] * len(answers))


def test_built_in_rewards() -> None:
    rows = [{"answer": "Blue"}] * 4
    assert _scores(ExactMatchReward(column="answer"), [" blue ", "Blue.", "BLUE", "red"], rows) == [1, 0, 1, 0]
    assert _scores(ExactMatchReward(column="answer", ignore_case=False), ["blue", "Blue"], rows[:2]) == [0, 1]
    extract = ExactMatchReward(column="answer", extract=r"Answer:\s*(\w+)")
    assert _scores(extract, ["I think... Answer: blue", "blue", "Answer: red"], rows[:3]) == [1, 0, 0]
    assert _scores(RegexReward(pattern=r"<answer>.+</answer>"), ["x <answer>4</answer>", "4"]) == [1, 0]
    assert _scores(RegexReward(pattern=r"\d+", full_match=True), [" 42 ", "42 apples"]) == [1, 0]
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert _scores(JsonSchemaReward(schema=schema), ['{"n": 3}', '```json\n{"n": 3}\n```', '{"n": "x"}', "no"]) == [
        1, 1, 0.5, 0]
    band = LengthReward(min_tokens=4, max_tokens=8)
    assert _scores(band, ["x"] * 5, lengths=[4, 8, 10, 2, 14]) == [1, 1, 0.5, 0.5, 0]


def test_reward_settings_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is not a valid regular expression"):
        RegexReward(pattern="(unclosed")
    with pytest.raises(ValidationError, match="max_tokens .* is below min_tokens"):
        LengthReward(min_tokens=9, max_tokens=3)
    with pytest.raises(ValidationError, match="set objective.allow_code: true"):
        GrpoObjective(rewards=[{"name": "function", "path": "r.py:f"}])
    with pytest.raises(ValidationError, match="is not 'file.py:function_name'"):
        GrpoObjective(allow_code=True, rewards=[{"name": "function", "path": "r.py"}])
    with pytest.raises(ConfigError, match="is not a valid JSON Schema"):
        build_rewards([JsonSchemaReward(schema={"type": "no-such-type"})])
    with pytest.raises(ConfigError, match="reward file 'missing.py' does not exist"):
        build_rewards(GrpoObjective(allow_code=True, rewards=[{"name": "function", "path": "missing.py:f"}]).rewards)


def test_a_function_reward_is_called_as_trl_calls_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("r.py").write_text("def f(prompts, completions, answer, **rest):\n"
                            "    return [None if a is None else float(c == a) for c, a in zip(completions, answer)]\n"
                            "def short(prompts, completions, **rest):\n    return [1.0]\n")
    settings = GrpoObjective(allow_code=True, rewards=[{"name": "function", "path": "r.py:f"},
                                                       {"name": "function", "path": "r.py:short"}])
    first, second = build_rewards(settings.rewards)
    assert (first.label, second.label) == ("function", "function_2")
    rows = [{"answer": "a"}, {"answer": "b"}, {"answer": None}]
    assert first.score(["p"] * 3, ["a", "a", "a"], [1, 1, 1], rows) == [1.0, 0.0, 0.0]  # None counts as 0
    with pytest.raises(TrainingError, match=r"reward r.py:short returned 1 values for 3 answers"):
        second.score(["p"] * 3, ["a"] * 3, [1] * 3, rows)
    assert len(first.record()["sha256"]) == 64


def test_a_reward_reading_a_missing_column_is_refused(grpo_config) -> None:
    path = grpo_config(objective={"rewards": [{"name": "exact_match", "column": "solution"}], "allow_code": False})
    with pytest.raises(DataError, match=r"the exact_match reward reads column 'solution', which the rows do not have "
                                        r"\(other columns: answer, id\)"):
        train(load_config(path))


# ---- advantages and the loss -------------------------------------------------------------------
def _objective(grpo_config, **sections):
    """The config, task, a seeded starting model, the data and the GRPO objective of one job."""
    config, task, resolved, data = prepared(grpo_config(**sections))
    torch.manual_seed(0)
    net = task.build_model(config, resolved, data)
    return config, task, net, data, OBJECTIVES.get("grpo")(task, config.objective)


def test_advantages_are_normalised_within_each_group(grpo_config) -> None:
    _, _, net, data, objective = _objective(grpo_config)
    batch = objective.collate(data.train[:2])
    torch.manual_seed(1)
    prepared = objective.prepare_batch(net, batch)
    stats = objective.pop_step_stats()
    answers = (prepared["targets"] != IGNORE).sum(1)
    assert prepared["advantages"].shape == (16,) and answers.min() >= 1 and answers.max() <= 4
    texts = [objective.task.tokenizer.decode(
        [t for t in row.tolist() if t != IGNORE], skip_special_tokens=True).strip() for row in prepared["targets"]]
    rewards = torch.tensor([sum(c.islower() for c in t) / max(len(t), 1) for t in texts], dtype=torch.float64)
    grouped = rewards.view(2, 8)
    expected = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).flatten()
    torch.testing.assert_close(prepared["advantages"], expected)
    assert stats["reward"][0] / stats["reward"][1] == pytest.approx(float(rewards.mean()))
    assert stats["completion_length"][1] == 16


def _reference_grpo(s: GrpoObjective, logp: torch.Tensor, batch: dict, max_new: int) -> torch.Tensor:
    """TRL's GRPO loss (summed, before the engine's division) on [rows, positions] token log-probs."""
    mask = (batch["targets"] != IGNORE).float()
    a = batch["advantages"][:, None].float()
    old = batch["old_logps_full"] if "old_logps_full" in batch else logp.detach()
    ratio = torch.exp(logp - old)
    high = s.epsilon_high if s.epsilon_high is not None else s.epsilon
    loss = -torch.min(ratio * a, torch.clamp(ratio, 1 - s.epsilon, 1 + high) * a)
    if s.beta:
        d = batch["ref_full"] - logp
        loss = loss + s.beta * (torch.exp(d) - d - 1)
    if s.loss_type == "grpo":
        return ((loss * mask).sum(1) / mask.sum(1)).sum()
    return (loss * mask).sum()


def _full_logps(net, batch) -> torch.Tensor:
    logits = net(input_ids=batch["input_ids"], use_cache=False).logits.float()
    return torch.gather(logits.log_softmax(-1), 2, batch["targets"].clamp(min=0)[..., None])[..., 0]


@pytest.mark.parametrize("settings", [
    {"loss_type": "dapo"}, {"loss_type": "grpo"}, {"loss_type": "dr_grpo"},
    {"num_iterations": 2, "epsilon": 0.1, "epsilon_high": 0.3}, {"beta": 0.2, "loss_type": "grpo"},
], ids=["dapo", "grpo", "dr_grpo", "clipped", "kl"])
def test_loss_and_gradients_match_a_plain_torch_reference(grpo_config, settings) -> None:
    method = {"method": {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0}} if settings.get("beta") else {}
    config, task, net, data, objective = _objective(grpo_config, objective=settings, **method)
    torch.manual_seed(1)
    batch = objective.prepare_batch(net, objective.collate(data.train[:2]))
    objective.pop_step_stats()
    mask = batch["targets"] != IGNORE
    with torch.no_grad():
        if "old_logps" in batch:  # as if one update had happened since sampling: ratios leave 1 and clip
            batch["old_logps"] = batch["old_logps"] + 0.4 * torch.randn_like(batch["old_logps"])
            full = torch.zeros(mask.shape)
            full[mask] = batch["old_logps"].float()
            batch["old_logps_full"] = full
        if "ref_logps" in batch:
            full = torch.zeros(mask.shape)
            full[mask] = batch["ref_logps"].float()
            batch["ref_full"] = full
        for p in net.parameters():  # the policy moved off the reference, so the KL is not 0
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    loss = objective.loss_sum(net, batch)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    expected = _reference_grpo(config.objective, _full_logps(net, batch), batch, config.objective.max_new_tokens)
    expected.backward()
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-4, abs=1e-6)
    items = objective.count_items(batch)
    assert items == {"dapo": int(mask.sum()), "grpo": 16, "dr_grpo": 16 * 4}[config.objective.loss_type]
    stats = objective.pop_step_stats()
    if "old_logps" in batch:
        assert 0 < stats["clip_fraction"][0] < stats["clip_fraction"][1]
    if config.objective.beta:
        assert stats["kl"][0] > 0
    for name, p in net.named_parameters():
        if p.grad is not None:
            scale = float(p.grad.abs().max()) or 1.0
            torch.testing.assert_close(ours[name], p.grad, rtol=1e-3, atol=1e-4 * scale,
                                       msg=lambda m, name=name: f"{name}: {m}")


# ---- training ------------------------------------------------------------------------------------
def test_grpo_raises_the_reward_and_records_the_reward_code(grpo_config, tmp_path: Path) -> None:
    outcome = train(load_config(grpo_config()))
    logged = steps(outcome.run.path)
    rewards = [r["reward"] for r in logged]
    assert sum(rewards[-5:]) / 5 > 2 * sum(rewards[:5]) / 5, rewards  # the sampled answers get better
    assert {"reward_std", "completion_length", "reward_function", "zero_std_groups", "clip_fraction"} <= set(logged[0])
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert results["test"]["reward"] > results["base"]["test"]["reward"]
    record = json.loads((outcome.run.path / "run.json").read_text())
    assert record["rewards"][0]["sha256"] == hashlib.sha256((tmp_path / "rewards.py").read_bytes()).hexdigest()
    worst = [json.loads(x) for x in (outcome.run.path / "samples_test.jsonl").read_text().splitlines()]
    assert worst and {"prompt", "answer", "reward", "reward_function"} <= set(worst[0])


def test_several_updates_per_batch_of_answers(grpo_config) -> None:
    outcome = train(load_config(grpo_config("mu", objective={"num_iterations": 3}, train={"max_steps": 2})))
    logged = steps(outcome.run.path)
    assert len(logged) == 2 and logged[-1]["clip_fraction"] > 0  # later updates move off the sampling policy
    assert logged[1]["lr"] < logged[0]["lr"]  # the schedule counts every update: 6 of them


@pytest.fixture
def database_url():
    """The lineage test below runs on SQLite (the store is tested on both backends in test_workspace.py)."""
    return


def test_the_reward_code_is_lineage_and_reproduce_checks_it(workspace, grpo_config, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tunelab.cli.main import app
    from tunelab.workspace.lineage import get_run

    outcome = train(load_config(grpo_config("lineage", train={"max_steps": 1})))
    with workspace.read() as session:
        inputs = {i.split: (i.path, i.sha256) for i in get_run(session, outcome.run.id).inputs}
    assert inputs["reward"] == ("rewards.py", hashlib.sha256((tmp_path / "rewards.py").read_bytes()).hexdigest())
    (tmp_path / "rewards.py").write_text(LOWERCASE.replace("islower", "isupper"))
    result = CliRunner().invoke(app, ["reproduce", outcome.run.id])
    assert isinstance(result.exception, DataError)
    assert "objective.rewards: rewards.py changed since the run" in str(result.exception)


def test_a_full_fine_tune_keeps_a_frozen_copy_for_the_kl(grpo_config, caplog) -> None:
    """No adapter to switch off: the KL reference is a frozen copy of the starting model, and its cost
    is logged. The KL starts at 0 (policy = reference) and grows as the policy moves."""
    with caplog.at_level("INFO", logger="tunelab.objectives.grpo"):
        outcome = train(load_config(grpo_config("kl-full", objective={"beta": 0.1}, train={"max_steps": 4})))
    assert "a frozen copy of the starting model is the KL reference" in caplog.text
    kl = [r["kl"] for r in steps(outcome.run.path)]
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[-1] > 1e-4


def test_base_scores_are_not_reused_across_objective_settings(grpo_config, tmp_path: Path) -> None:
    """The base model's reward depends on the rewards and the sampling, not only on model and data."""
    first = train(load_config(grpo_config("a", train={"max_steps": 1}))).run
    again = train(load_config(grpo_config("b", train={"max_steps": 1}))).run
    longer = train(load_config(grpo_config("c", objective={"max_new_tokens": 6}, train={"max_steps": 1}))).run
    (tmp_path / "rewards.py").write_text(LOWERCASE.replace("islower", "isupper"))
    edited = train(load_config(grpo_config("d", train={"max_steps": 1}))).run
    assert again.read_json("run.json")["base_scores"]["key"] == first.read_json("run.json")["base_scores"]["key"]
    assert longer.read_json("run.json")["base_scores"]["cached"] is False
    assert edited.read_json("run.json")["base_scores"]["cached"] is False
    assert longer.read_json("eval_base.json")["test"]["completion_length"] == 6


def test_eval_metric_may_be_one_reward_and_preview_shows_the_prompts(grpo_config) -> None:
    from tunelab.recipes.preview import preview

    rewards = [{"name": "exact_match", "column": "answer"}, {"name": "regex", "pattern": "^\\w+$"},
               {"name": "regex", "pattern": "."}]
    config = load_config(grpo_config(objective={"rewards": rewards}, eval={"metric": "reward_regex_2"}))
    task = CausalLM()
    task.validate_config(config)
    assert set(task.run_metrics(config)) == {"reward", "reward_exact_match", "reward_regex", "reward_regex_2"}
    with pytest.raises(ConfigError, match="eval.metric 'reward_regex_3' is not a grpo metric"):
        CausalLM().validate_config(load_config(grpo_config(objective={"rewards": rewards},
                                                           eval={"metric": "reward_regex_3"})))
    samples, _ = preview(config, n=2)
    assert [s.where.rsplit(" · ", 1)[1] for s in samples] == ["prompt", "prompt"]
    assert not any(keep for s in samples for _, keep in s.pieces)
    assert "Color of item" in "".join(p for p, _ in samples[0].pieces)


@pytest.mark.slow
def test_grpo_trains_on_two_processes(grpo_config) -> None:
    """Each process samples the groups of its own prompts and the update is shared (DDP); sampling is
    random, so the curve is not the single process's, but the step counts, rewards and the saved model
    are all there, and the dapo token count is global."""
    from tests.test_distributed import launch_two

    path = grpo_config("dist-grpo", train={"max_steps": 3, "batch_size": 3})
    result = launch_two(path, "double")
    assert result.returncode == 0, result.stderr[-3000:]
    run = next(p for p in (path.parent / "runs").iterdir() if p.name.startswith("double"))
    logged = steps(run)
    assert [r["step"] for r in logged] == [1, 2, 3] and all(0 <= r["reward"] <= 1 for r in logged)
    assert json.loads((run / "run.json").read_text())["status"] == "succeeded"
    assert (run / "model" / "model.safetensors").is_file()
