"""Preference tuning (DPO, IPO, cDPO, ORPO, SimPO) on the tiny random Llama: record layouts and their
one-line errors, losses and gradients against plain-torch references written here, the reference
computed once from the starting model, a golden DPO curve, resume and 2 processes."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from tests.conftest import write_jsonl
from tests.test_distributed import launch_two, losses
from tests.test_train import StopAt
from tunelab.config import load_config
from tunelab.config.schema import DataConfig, DpoObjective, OrpoObjective, SimpoObjective
from tunelab.data import load_table, normalize_records
from tunelab.errors import ConfigError, DataError, ModelError
from tunelab.models import load_tokenizer, resolve_model
from tunelab.objectives import OBJECTIVES
from tunelab.objectives.base import IGNORE
from tunelab.recipes.train import train
from tunelab.runs import RunFolder
from tunelab.tasks.causal_lm import CausalLM

COLORS = ["red", "blue", "green", "cyan", "pink", "gray", "gold", "teal"]
# Golden per-step DPO losses (tiny llama, lora r=4, lr 1e-2, beta 0.1, 8 steps, fp32, seed 0).
GOLDEN_DPO = [0.6931472, 0.679163, 0.6606208, 0.6481014, 0.6211649, 0.6095509, 0.5971103, 0.5904085]


def pair_rows(n: int, seed: int, chat: bool = True) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.sample(COLORS, 2)
        question = f"What color is item {i}?"
        prompt = [{"role": "user", "content": question}] if chat else f"Q: {question}\nA:"
        rows.append({"prompt": prompt, "chosen": f" Item {i} is {a}.", "rejected": f" I do not know about {b}."})
    return rows


def job_writer(tmp_path: Path, train_file: Path, objective: dict, method: dict | None = None,
               replaced: tuple[str, ...] = ("method", "objective"), **train: Any) -> Any:
    """`make(name, **sections)`, which writes a tiny-Llama alignment config and returns its path. A
    section given replaces the default's keys one by one, except `replaced` ones, which it replaces
    whole (a new method or objective brings its own settings)."""

    def make(name: str = objective["name"], **sections) -> Path:
        body = {
            "task": "causal-lm",
            "model": {"source": "tiny-random-llama"},
            "data": {"train": str(train_file)},
            "method": method or {"name": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "objective": objective,
            "train": {"max_steps": 8, "batch_size": 8, "learning_rate": 1e-2, "max_length": 128, "seed": 0,
                      "log_every": 1, **train},
            "eval": {"generate_samples": 0, "retention": []},
            "output": {"dir": str(tmp_path / "runs"), "name": name},
        }
        for key, value in sections.items():
            merge = isinstance(value, dict) and key not in replaced
            body[key] = {**body.get(key, {}), **value} if merge else value
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(body))
        return path

    return make


def prepared(path: Path) -> tuple[Any, CausalLM, Any, Any]:
    """(config, task, resolved model, prepared data) of a config file, as training prepares them."""
    config = load_config(path)
    task = CausalLM()
    task.validate_config(config)
    resolved = resolve_model(config.model)
    return config, task, resolved, task.prepare(config, load_tokenizer(resolved, config.model), resolved)


def whole_and_resumed(make_config: Any, name: str, body: dict) -> tuple[Path, Path]:
    """An uninterrupted run, and the same run stopped at step 3 and resumed from its checkpoint."""
    whole = train(load_config(make_config(f"whole-{name}", **body)))
    config = load_config(make_config(f"broken-{name}", **body))
    with pytest.raises(KeyboardInterrupt):
        train(config, reporter=StopAt(3))
    broken = next(p for p in Path(config.output.dir).iterdir() if p.name.startswith(f"broken-{name}"))
    resumed = train(RunFolder.open(broken).config(), resume=RunFolder.open(broken))
    return whole.run.path, resumed.run.path


@pytest.fixture
def pairs_config(tmp_path: Path):
    """A DPO config on synthetic chat pairs; keyword sections override the defaults."""
    data = write_jsonl(tmp_path / "data" / "pairs.jsonl", pair_rows(64, seed=1))
    return job_writer(tmp_path, data, {"name": "dpo", "beta": 0.1})


def train_losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "split" not in r]


# ---- record layouts ----------------------------------------------------------------------------
def _normalize(tmp_path: Path, rows: list[dict], **data) -> tuple[list[dict], dict]:
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    cfg = DataConfig(train=str(path), **data)
    ds, info = normalize_records(load_table(str(path), cfg, "train"), cfg)
    return ds.to_list(), info


def test_three_pair_layouts_are_detected_and_normalized(tmp_path: Path) -> None:
    plain, info = _normalize(tmp_path, pair_rows(2, 0, chat=False))
    assert info["records"] == "preference" and info["kind"] == "preference"
    assert set(plain[0]) == {"prompt", "chosen", "rejected", "row"}
    trl, info = _normalize(tmp_path, [{"prompt": [{"role": "user", "content": "Hi?"}],
                                       "chosen": [{"role": "assistant", "content": "Hello."}],
                                       "rejected": "Go away."}])
    assert info["records"] == "chat-preference"
    assert trl[0] == {"messages": [{"role": "user", "content": "Hi?"}], "chosen": "Hello.", "rejected": "Go away.",
                      "row": 0}
    openai, info = _normalize(tmp_path, [{"input": {"messages": [{"role": "user", "content": "Hi?"}]},
                                          "preferred_output": [{"role": "assistant", "content": "Hello."}],
                                          "non_preferred_output": [{"role": "assistant", "content": "Go away."}]}])
    assert info["records"] == "openai-preference" and openai[0]["chosen"] == "Hello." and openai == trl


@pytest.mark.parametrize(("row", "reason"), [
    ({"prompt": "Q", "chosen": "same", "rejected": " same "}, "'chosen' and 'rejected' are the same answer"),
    ({"prompt": "Q", "chosen": "", "rejected": "no"}, "'chosen' is empty"),
    ({"prompt": [{"role": "assistant", "content": "Q"}], "chosen": "a", "rejected": "b"},
     "'prompt' must end with a user message"),
    ({"prompt": [{"role": "user", "content": "Q"}], "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "'chosen' must hold exactly one assistant message"),
])
def test_bad_pairs_name_file_line_and_reason(tmp_path: Path, row: dict, reason: str) -> None:
    good = pair_rows(1, 0, chat=isinstance(row["prompt"], list))[0]
    if isinstance(row["chosen"], list):  # a column holds one type throughout
        good["chosen"] = [{"role": "assistant", "content": good["chosen"]}]
    with pytest.raises(DataError, match=rf"rows\.jsonl line 2: {reason}"):
        _normalize(tmp_path, [good, row])


def test_objective_and_records_must_agree(pairs_config, tmp_path: Path) -> None:
    chat = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "Q"},
                                                                {"role": "assistant", "content": "A"}]}] * 20)
    with pytest.raises(DataError, match="objective dpo trains on preference pairs, but the rows are messages"):
        train(load_config(pairs_config(data={"train": str(chat)})))
    with pytest.raises(DataError, match=r"objective sft trains on single answers, but the rows are chat-preference "
                                        r"records \(preference pairs\)"):
        train(load_config(pairs_config(objective={"name": "sft"})))
    with pytest.raises(ConfigError, match="lm.packing cannot be used with objective dpo: it scores whole sequences"):
        train(load_config(pairs_config(lm={"packing": True})))
    with pytest.raises(ConfigError, match="eval.metric 'perplexity' is not a dpo metric"):
        train(load_config(pairs_config(eval={"metric": "perplexity"})))


def test_only_the_answers_are_trained_and_both_share_the_prompt(pairs_config) -> None:
    _, task, _, data = prepared(pairs_config())
    row = data.train[0]
    tok = task.tokenizer
    for side in ("chosen", "rejected"):
        labels = row[f"{side}_labels"]
        trained = tok.decode([t for t in labels if t != IGNORE])
        assert trained.startswith(" Item" if side == "chosen" else " I do not") and trained.endswith("</s>\n")
    first = [i for i, t in enumerate(row["chosen_labels"]) if t != IGNORE][0]
    assert row["chosen_input_ids"][:first] == row["rejected_input_ids"][:first]  # the same prompt tokens


# ---- losses against references written here ------------------------------------------------------
def _reference_logps(net: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean log-probability of each sequence's trained tokens, from the full logits."""
    logits = net(input_ids=batch["input_ids"], use_cache=False).logits.float()
    mask = batch["targets"] != IGNORE
    token = torch.gather(logits.log_softmax(-1), 2, batch["targets"].clamp(min=0)[..., None])[..., 0]
    sums = (token * mask).sum(1)
    return sums, sums / mask.sum(1)


def _reference_loss(name: str, settings, pol: tuple, ref: tuple | None) -> torch.Tensor:
    (s, m) = pol
    n = len(s) // 2
    sc, sr, mc, mr = s[:n], s[n:], m[:n], m[n:]
    if name == "dpo" and settings.loss == "sigmoid":
        z = settings.beta * ((sc - sr) - (ref[0][:n] - ref[0][n:]))
        eps = settings.label_smoothing
        return (-(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)).sum()
    if name == "dpo":  # ipo, on per-token means
        h = (mc - mr) - (ref[1][:n] - ref[1][n:])
        return ((h - 1 / (2 * settings.beta)) ** 2).sum()
    if name == "orpo":
        odds = lambda p: p - torch.log1p(-torch.exp(p))  # noqa: E731  (TRL's form)
        return (-mc - settings.beta * F.logsigmoid(odds(mc) - odds(mr))).sum()
    z = settings.beta * (mc - mr) - settings.gamma  # simpo
    eps = settings.label_smoothing
    return (-(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)).sum()


@pytest.mark.parametrize("settings", [
    DpoObjective(beta=0.1), DpoObjective(beta=0.5, label_smoothing=0.2), DpoObjective(beta=0.1, loss="ipo"),
    OrpoObjective(beta=0.2), SimpoObjective(beta=2.0, gamma=0.4, label_smoothing=0.1),
], ids=["dpo", "cdpo", "ipo", "orpo", "simpo"])
def test_loss_and_gradients_match_a_plain_torch_reference(pairs_config, settings) -> None:
    from transformers import AutoModelForCausalLM

    config, task, resolved, data = prepared(pairs_config())
    torch.manual_seed(0)
    net = task.build_model(config, resolved, data)
    with torch.no_grad():  # move off the random init so policy and reference differ
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    reference_net = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    objective = OBJECTIVES.get(settings.name)(task, settings)
    batch = objective.collate(data.train[:6])
    ref = None
    if objective.uses_reference:
        with torch.no_grad():
            ref = _reference_logps(reference_net, batch)
        batch["ref_logps"] = ref[0].float()

    loss = objective.loss_sum(net, batch)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    expected = _reference_loss(settings.name, settings, _reference_logps(net, batch), ref)
    expected.backward()
    assert objective.count_items(batch) == 6
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    for name, p in net.named_parameters():  # float32 sums: elements are compared on the tensor's scale
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


# ---- training ------------------------------------------------------------------------------------
def test_golden_dpo_loss_curve_and_reference_from_the_base(pairs_config) -> None:
    outcome = train(load_config(pairs_config()))
    got = train_losses(outcome.run.path)
    assert got == pytest.approx(GOLDEN_DPO, rel=1e-5), got
    assert got[0] == pytest.approx(0.693147, abs=1e-6)  # log 2: the policy starts as the reference
    results = json.loads((outcome.run.path / "eval.json").read_text())
    base, tuned = results["base"]["test"], results["test"]
    assert base["reward_margin"] == 0.0 and base["loss"] == pytest.approx(0.693147, abs=1e-6)
    assert tuned["reward_accuracy"] == 1.0 and tuned["reward_margin"] > 0 and tuned["loss"] < base["loss"]
    step = json.loads((outcome.run.path / "metrics.jsonl").read_text().splitlines()[-2])
    assert {"reward_margin", "chosen_logp", "rejected_logp"} <= set(step)
    scored = json.loads((outcome.run.path / "run.json").read_text())["reference"]["samples"]
    assert scored == sum(json.loads((outcome.run.path / "data.json").read_text())["samples"].values())
    worst = [json.loads(x) for x in (outcome.run.path / "samples_test.jsonl").read_text().splitlines()]
    assert worst and "chosen" in worst[0] and worst[0]["reward_margin"] == min(w["reward_margin"] for w in worst)
    from tunelab.recipes.report import write_report

    page = write_report(outcome.run.path)
    assert (page.parent / "objective.png").read_bytes().startswith(b"\x89PNG")  # chosen vs rejected curves
    assert "statistics per step" in page.read_text()


@pytest.mark.parametrize("objective", [{"name": "orpo"}, {"name": "simpo"}, {"name": "dpo", "loss": "ipo"}])
def test_reference_free_and_ipo_objectives_train(pairs_config, objective) -> None:
    outcome = train(load_config(pairs_config(objective["name"], objective=objective, train={"max_steps": 6})))
    got = train_losses(outcome.run.path)
    assert got[-1] < got[0]
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert results["validation"]["preference_accuracy"] >= results["base"]["validation"]["preference_accuracy"]


def test_full_fine_tuning_resumes_with_its_reference(pairs_config) -> None:
    """The reference is the starting model: a resumed full fine-tune scores it before loading its
    checkpoint, so the loss curve and weights match an uninterrupted run's to float32 noise."""
    body = {"method": {"name": "full"}, "train": {"max_steps": 6, "checkpoint_every": 2, "learning_rate": 1e-3}}
    whole, resumed = whole_and_resumed(pairs_config, "full", body)
    # Known gap: not yet bit-exact (last-ulp differences appear a few steps after the resume, as for
    # every causal-LM resume, SFT's too: docs/journal.md), so this holds curve and weights to float32 noise.
    assert train_losses(resumed) == pytest.approx(train_losses(whole), rel=1e-6)
    a = load_file(whole / "model" / "model.safetensors")
    b = load_file(resumed / "model" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


def test_lora_dpo_resumes_after_a_kill_mid_epoch(pairs_config) -> None:
    """The reference is scored again from the starting model (adapter off) on resume, before the
    checkpoint loads: the loss curve is exactly an uninterrupted run's. Known gap, as for full
    fine-tuning above: the final adapter differs in the last bits (4e-8 here; causal-LM SFT too)."""
    body = {"train": {"max_steps": 6, "checkpoint_every": 2}}
    whole, resumed = whole_and_resumed(pairs_config, "lora", body)
    assert train_losses(resumed) == train_losses(whole)
    a = load_file(whole / "adapter" / "adapter_model.safetensors")
    b = load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)


@pytest.mark.slow
def test_two_processes_match_one_for_dpo(pairs_config) -> None:
    path = pairs_config("dist-dpo", train={"max_steps": 4, "batch_size": 3})
    single = train(load_config(path, ["output.name=single"]))
    result = launch_two(path, "double")
    assert result.returncode == 0, result.stderr[-3000:]
    double = next(p for p in single.run.path.parent.iterdir() if p.name.startswith("double"))
    assert losses(double) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)


def test_preference_tuning_starts_from_a_finished_sft_run(pairs_config, tmp_path: Path) -> None:
    """SFT, then DPO on its model: model.source names the run folder, the child's lineage its parent."""
    chats = [{"messages": [*r["prompt"], {"role": "assistant", "content": r["chosen"]}]} for r in pair_rows(32, 3)]
    sft = train(load_config(pairs_config("sft", data={"train": str(write_jsonl(tmp_path / "sft.jsonl", chats))},
                                         objective={"name": "sft"}, train={"max_steps": 2})))
    dpo = train(load_config(pairs_config("after-sft", model={"source": str(sft.run.path)}, train={"max_steps": 2})))
    model = json.loads((dpo.run.path / "run.json").read_text())["model"]
    assert model["kind"] == "run" and model["parent_run"] == sft.run.path.name
    assert model["path"] == str(sft.run.path / "model")
    parent = json.loads((sft.run.path / "run.json").read_text())["model"]
    assert model["fingerprint"] != parent["fingerprint"]  # the SFT-tuned weights, not the base's
    (sft.run.path / "run.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(ModelError, match="is a tunelab run that did not finish"):
        train(load_config(pairs_config("again", model={"source": str(sft.run.path)})))


def test_data_preview_shows_both_answers_of_a_pair(pairs_config) -> None:
    from tunelab.recipes.preview import preview

    samples, info = preview(load_config(pairs_config()), n=2)
    assert [s.where.rsplit(" · ", 1)[1] for s in samples] == ["chosen", "rejected", "chosen", "rejected"]
    trained = ["".join(p for p, keep in s.pieces if keep) for s in samples[:2]]
    assert trained[0].startswith(" Item") and trained[1].startswith(" I do not know")
    prompt = ["".join(p for p, keep in s.pieces if not keep) for s in samples[:2]]
    assert prompt[0] == prompt[1] and "What color is item" in prompt[0]
    assert info["stats"]["train"]["samples"] > 0


def test_eval_command_scores_new_pairs_against_the_rebuilt_reference(pairs_config, tmp_path: Path) -> None:
    """`tunelab eval` on a DPO run rebuilds the starting model for the reference, so scoring the run's
    own test pairs again gives the test metrics training reported."""
    from tunelab.recipes.evaluate import evaluate_run

    rows = pair_rows(80, seed=4)
    files = {split: str(write_jsonl(tmp_path / "split" / f"{split}.jsonl", part))
             for split, part in (("train", rows[:56]), ("validation", rows[56:68]), ("test", rows[68:]))}
    outcome = train(load_config(pairs_config(data=files, train={"max_steps": 4})))
    metrics, written = evaluate_run(outcome.run.path, files["test"])
    assert written.is_file() and metrics["pairs"] == 12
    tested = json.loads((outcome.run.path / "eval.json").read_text())["test"]
    assert tested["reward_margin"] != 0  # the tuned model moved off its reference
    for key in ("loss", "reward_margin", "reward_accuracy", "preference_accuracy"):
        assert metrics[key] == pytest.approx(tested[key], rel=1e-5, abs=1e-7), key
