"""KTO on the tiny random Llama: the unpaired record layouts and their errors, the mismatched twins of
the KL estimate, the loss and gradients against a plain-torch reference written here, a golden curve,
reward separation after training, and 2 processes = 1."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from tests.conftest import write_jsonl
from tests.test_distributed import launch_two, losses
from tests.test_preference import _normalize, _reference_logps, job_writer, prepared, train_losses
from tunelab.config import load_config
from tunelab.config.schema import KtoObjective
from tunelab.errors import DataError
from tunelab.objectives import OBJECTIVES
from tunelab.objectives.base import IGNORE
from tunelab.objectives.kto import TWIN, with_twins
from tunelab.recipes.train import train

COLORS = ["red", "blue", "green", "cyan", "pink", "gray", "gold", "teal"]
# Golden per-step KTO losses (tiny llama, lora r=4, lr 1e-2, beta 0.1, 8 steps, fp32, seed 0).
GOLDEN_KTO = [0.5, 0.4974328875541687, 0.4938167631626129, 0.48393014073371887, 0.4933125972747803,
              0.46114063262939453, 0.4768662750720978, 0.4633130133152008]


def feedback_rows(n: int, seed: int, chat: bool = True) -> list[dict]:
    """Answers to "what color is item i": a color is desirable, a refusal is not (alternating)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        question = f"What color is item {i}?"
        prompt = [{"role": "user", "content": question}] if chat else f"Q: {question}\nA:"
        good = i % 2 == 0
        answer = f" Item {i} is {rng.choice(COLORS)}." if good else f" I do not know about item {i}."
        rows.append({"prompt": prompt, "completion": answer, "label": good})
    return rows


@pytest.fixture
def kto_config(tmp_path: Path):
    data = write_jsonl(tmp_path / "data" / "feedback.jsonl", feedback_rows(64, seed=1))
    return job_writer(tmp_path, data, {"name": "kto", "beta": 0.1})


# ---- record layouts ----------------------------------------------------------------------------
def test_unpaired_layouts_are_detected_and_labels_read(tmp_path: Path) -> None:
    plain, info = _normalize(tmp_path, feedback_rows(2, 0, chat=False))
    assert info["records"] == "unpaired-preference" and info["kind"] == "unpaired"
    assert [r["label"] for r in plain] == [True, False]
    chat, info = _normalize(tmp_path, [{"prompt": [{"role": "user", "content": "Hi?"}],
                                        "completion": [{"role": "assistant", "content": "Hello."}], "label": 1}])
    assert info["records"] == "chat-unpaired-preference" and info["kind"] == "chat-unpaired"
    assert chat == [{"messages": [{"role": "user", "content": "Hi?"}], "completion": "Hello.", "label": True,
                     "row": 0}]


@pytest.mark.parametrize(("rows", "reason"), [
    ([{"prompt": "Q", "completion": "A", "label": "yes"}], "line 1: 'label' is 'yes', not true/false"),
    ([{"prompt": "Q", "completion": "A", "label": 1}, {"prompt": "Q", "completion": "A", "label": 2}],
     "line 2: 'label' is 2, not true/false"),
    ([{"prompt": "Q", "completion": "A", "label": True}, {"prompt": "Q", "completion": " ", "label": False}],
     "line 2: 'completion' is empty"),
])
def test_bad_feedback_rows_name_file_line_and_reason(tmp_path: Path, rows: list[dict], reason: str) -> None:
    with pytest.raises(DataError, match=rf"rows\.jsonl {reason}"):
        _normalize(tmp_path, rows)


def test_kto_refuses_pairs_and_sft_refuses_labelled_answers(kto_config, tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}] * 20)
    with pytest.raises(DataError, match=r"objective kto trains on answers labelled desirable or not, but the rows "
                                        r"are preference records \(preference pairs\)") as err:
        train(load_config(kto_config(data={"train": str(pairs)})))
    assert "set objective.name: dpo | orpo | simpo" in err.value.fix
    with pytest.raises(DataError, match="objective sft trains on single answers") as err:
        train(load_config(kto_config(objective={"name": "sft"})))
    assert err.value.fix.endswith("set objective.name: kto")


# ---- the KL estimate's twins -------------------------------------------------------------------
def test_each_sample_gets_another_samples_answer_after_its_own_prompt(kto_config) -> None:
    config, task, _, data = prepared(kto_config())
    ds = data.train
    twins = with_twins(ds, seed=0, max_length=config.train.max_length)
    assert twins[TWIN[0]] == with_twins(ds, seed=0, max_length=128)[TWIN[0]]  # seeded: the same twins
    answers = set()
    for row in ds:
        start = next(i for i, t in enumerate(row["labels"]) if t != IGNORE)
        answers.add(tuple(row["input_ids"][start:]))
    assert len(answers) == len(ds)  # every answer names its item, so none repeats
    used = []
    for row, ids, labels in zip(ds, twins[TWIN[0]], twins[TWIN[1]], strict=True):
        start = next(i for i, t in enumerate(row["labels"]) if t != IGNORE)
        twin_start = next(i for i, t in enumerate(labels) if t != IGNORE)
        assert twin_start == start and ids[:start] == row["input_ids"][:start]  # its own prompt
        answer = tuple(ids[start:])
        assert answer in answers and answer != tuple(row["input_ids"][start:])  # another sample's answer
        assert labels[start:] == list(answer)
        used.append(answer)
    assert set(used) == answers  # a cycle: every answer is borrowed exactly once


# ---- the loss against a reference written here ---------------------------------------------------
def _reference_kto(settings: KtoObjective, pol: torch.Tensor, ref: torch.Tensor, desirable: torch.Tensor):
    """TRL's KTO loss, summed: z from the twins (second half), no gradient, clamped at 0."""
    n = len(desirable)
    z = (pol[n:] - ref[n:]).mean().detach().clamp(min=0)
    r = pol[:n] - ref[:n]
    chosen = settings.desirable_weight * (1 - torch.sigmoid(settings.beta * (r - z)))
    rejected = settings.undesirable_weight * (1 - torch.sigmoid(settings.beta * (z - r)))
    return torch.where(desirable, chosen, rejected).sum()


@pytest.mark.parametrize(("settings", "twin_offset"), [(KtoObjective(), 0.0),
                                                       (KtoObjective(beta=0.5, desirable_weight=1.3), 1.0)],
                         ids=["z-clamped-at-0", "weighted-z-positive"])
def test_loss_and_gradients_match_a_plain_torch_reference(kto_config, settings, twin_offset) -> None:
    """The perturbed policy scores the twins below the reference (z clamps to 0); lowering the
    reference's twin scores by `twin_offset` makes z positive, so both branches are compared."""
    from transformers import AutoModelForCausalLM

    config, task, resolved, data = prepared(kto_config())
    torch.manual_seed(0)
    net = task.build_model(config, resolved, data)
    reference_net = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch.float32)
    with torch.no_grad():  # move off the starting model so the reward and z are not all 0
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    objective = OBJECTIVES.get("kto")(task, settings)
    rows = with_twins(data.train, 0, config.train.max_length)[:6]
    batch = objective.collate(rows)
    with torch.no_grad():
        ref = _reference_logps(reference_net, batch)[0]
    ref[6:] -= twin_offset
    batch["ref_logps"] = ref.double()
    loss = objective.loss_sum(net, batch)
    loss.backward()
    ours = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad()
    expected = _reference_kto(settings, _reference_logps(net, batch)[0], ref, batch["desirable"])
    expected.backward()
    assert objective.count_items(batch) == 6 and batch["desirable"].tolist() == rows["desirable"]
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    stats = objective.pop_step_stats()
    with torch.no_grad():
        drift = float((_reference_logps(net, batch)[0][6:] - ref[6:]).mean())
    assert (drift > 0) == (twin_offset > 0)
    assert stats["kl"][0] == pytest.approx(max(drift, 0.0), rel=1e-4, abs=1e-7)
    for name, p in net.named_parameters():
        scale = float(p.grad.abs().max())
        torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-4 * scale,
                                   msg=lambda m, name=name: f"{name}: {m}")


# ---- training ------------------------------------------------------------------------------------
def test_golden_kto_curve_and_reward_separation(kto_config) -> None:
    outcome = train(load_config(kto_config()))
    got = train_losses(outcome.run.path)
    assert got == pytest.approx(GOLDEN_KTO, rel=1e-5), got
    assert got[0] == 0.5  # 1 - sigmoid(0): the policy starts as the reference, and z = 0
    results = json.loads((outcome.run.path / "eval.json").read_text())
    base, tuned = results["base"]["test"], results["test"]
    assert base["loss"] == 0.5 and base["reward_auc"] == 0.5 and base["reward_margin"] == 0.0
    assert tuned["reward_auc"] > 0.9 and tuned["reward_margin"] > 0 and tuned["loss"] < base["loss"]
    step = json.loads((outcome.run.path / "metrics.jsonl").read_text().splitlines()[-2])
    assert {"kl", "desirable_reward", "undesirable_reward", "desirable_logp", "undesirable_logp"} <= set(step)
    assert step["desirable_reward"] > step["undesirable_reward"]
    worst = [json.loads(x) for x in (outcome.run.path / "samples_test.jsonl").read_text().splitlines()]
    signed = [w["reward"] if w["desirable"] else -w["reward"] for w in worst]
    assert worst and signed == sorted(signed) and "<|assistant|>" in worst[0]["text"]


@pytest.mark.slow
def test_two_processes_match_one_for_kto(kto_config, tmp_path: Path) -> None:
    """z is averaged over both processes' shares of a batch, so the curve is the single process's."""
    rows = feedback_rows(48, seed=2)
    for i, row in enumerate(rows):  # mostly desirable: the policy lifts answers like them, twins too (z > 0)
        row["label"] = i % 4 != 0
    data = write_jsonl(tmp_path / "data" / "mostly-good.jsonl", rows)
    path = kto_config("dist-kto", data={"train": str(data)}, train={"max_steps": 4, "batch_size": 3})
    single = train(load_config(path, ["output.name=single"]))
    steps = [json.loads(x) for x in (single.run.path / "metrics.jsonl").read_text().splitlines()]
    assert max(s.get("kl", 0.0) for s in steps) > 0.1  # the shared z matters in this run
    result = launch_two(path, "double")
    assert result.returncode == 0, result.stderr[-3000:]
    double = next(p for p in single.run.path.parent.iterdir() if p.name.startswith("double"))
    assert losses(double) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)


def test_data_preview_labels_each_answer(kto_config) -> None:
    from tunelab.recipes.preview import preview

    samples, _ = preview(load_config(kto_config()), n=4)
    labels = [s.where.rsplit(" · ", 1)[1] for s in samples]
    assert len(samples) == 4 and set(labels) == {"desirable", "undesirable"}
    for sample, label in zip(samples, labels, strict=True):
        trained = "".join(p for p, keep in sample.pieces if keep)
        assert trained.startswith(" Item" if label == "desirable" else " I do not know")
