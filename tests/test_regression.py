"""Regression: metrics against a hand computation, the target errors (file:line), standardization
saved with the model and undone by predict, the training-mean baseline, huber against mse, and a run
end to end with a golden curve."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FILLER, WORDS, train_losses, write_config, write_jsonl
from tunelab.config import load_config
from tunelab.errors import DataError
from tunelab.metrics.regression import regression_metrics
from tunelab.recipes.evaluate import evaluate_run
from tunelab.recipes.predict import load_predictor
from tunelab.recipes.train import train

GOLDEN = [1.24988853931427, 0.9139755964279175, 0.7532903552055359, 0.921865701675415, 1.3284648656845093,
          0.929772138595581]  # the first 6 of 36 steps


def scored_rows(n: int, seed: int) -> list[dict]:
    """A risk score that grows with the sport words of a text (10 per word, from 50), and the count of
    tech words as a second target."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sport, tech = rng.randint(0, 4), rng.randint(0, 4)
        words = rng.choices(WORDS["sport"], k=sport) + rng.choices(WORDS["tech"], k=tech) + rng.choices(FILLER, k=3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "score": 50.0 + 10.0 * sport, "tech": float(tech)})
    return rows


@pytest.fixture
def reg_data(tmp_path: Path) -> dict[str, Path]:
    return {split: write_jsonl(tmp_path / "reg" / f"{split}.jsonl", scored_rows(n, seed))
            for split, n, seed in [("train", 96, 1), ("validation", 32, 2), ("test", 32, 3)]}


def reg_config(tmp_path: Path, files: dict[str, Path], name: str = "reg", **sections) -> Path:
    body = {
        "task": "regression",
        "model": {"source": "tiny-random-bert"},
        "data": {**{k: str(v) for k, v in files.items()}, "label_column": "score"},
        "train": {"epochs": 6, "batch_size": 16, "learning_rate": 3e-3, "max_length": 64, "seed": 0, "log_every": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    return write_config(tmp_path / f"{name}.yaml", body, sections)


def test_metrics_match_a_hand_computation():
    truth = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    predicted = np.array([[1.5], [2.0], [2.0], [4.5], [6.0]])
    got = regression_metrics(truth, predicted, ["y"])
    errors = [0.5, 0.0, -1.0, 0.5, 1.0]
    assert got["rmse"] == pytest.approx(math.sqrt(sum(e * e for e in errors) / 5))  # sqrt(2.5 / 5)
    assert got["mae"] == pytest.approx(3.0 / 5)
    assert got["r2"] == pytest.approx(1 - 2.5 / 10.0)  # residual 2.5 over total sum of squares 10
    # Pearson by hand: truth centred [-2,-1,0,1,2], predictions centred [-1.7,-1.2,-1.2,1.3,2.8]
    assert got["pearson"] == pytest.approx(11.5 / math.sqrt(10 * 15.3))
    # Spearman: ranks of y are [1, 2.5, 2.5, 4, 5] (a tie), against 1..5
    assert got["spearman"] == pytest.approx(9.5 / math.sqrt(10 * 9.5))
    assert "per_target" not in got


def test_several_targets_are_averaged_and_kept_apart_and_constant_predictions_correlate_zero():
    truth = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])
    got = regression_metrics(truth, np.array([[1.0, 20.0], [2.0, 20.0], [3.0, 20.0]]), ["a", "b"])
    assert got["per_target"]["a"]["rmse"] == 0.0 and got["per_target"]["b"]["pearson"] == 0.0
    assert got["rmse"] == pytest.approx((0.0 + math.sqrt(200 / 3)) / 2)


@pytest.mark.parametrize(("value", "said"), [(None, "no value"), (float("nan"), "nan, not a finite number"),
                                             (float("inf"), "inf, not a finite number")])
def test_a_target_that_is_not_a_number_names_its_line(tmp_path, reg_data, value, said):
    rows = scored_rows(96, 1)
    rows[6]["score"] = value
    reg_data["train"] = write_jsonl(tmp_path / "reg" / "train.jsonl", rows)
    with pytest.raises(DataError) as caught:
        train(load_config(reg_config(tmp_path, reg_data)))
    assert f"train.jsonl line 7: target column 'score' has {said}" in str(caught.value)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


def test_a_csv_with_a_stray_word_and_a_constant_target_are_refused(tmp_path, reg_data):
    lines = ["text,score"] + [f"goal {i},{i}" for i in range(40)]
    lines[12] = "goal x,high"
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"r.csv line 13: target column 'score' has 'high'"):
        train(load_config(reg_config(tmp_path, {"train": tmp_path / "r.csv"})))
    rows = [{**r, "score": 3.0} for r in scored_rows(96, 1)]
    reg_data["train"] = write_jsonl(tmp_path / "reg" / "train.jsonl", rows)
    with pytest.raises(DataError, match="target 'score' is 3 in every training row"):
        train(load_config(reg_config(tmp_path, reg_data)))


def test_continuous_targets_pass_the_data_check_that_class_labels_would_fail(tmp_path, reg_data):
    rows = scored_rows(32, 2)
    rows[0]["score"] = 73.25  # a value training never shows: normal for a number, an error for a class
    reg_data["validation"] = write_jsonl(tmp_path / "reg" / "validation.jsonl", rows)
    run = train(load_config(reg_config(tmp_path, reg_data, train={"max_steps": 1}))).run
    report = json.loads((run.path / "data_check.json").read_text())
    assert report["passed"] and report["splits"]["train"]["labels"] is None


def test_run_learns_the_score_saves_its_scale_and_predicts_in_target_units(tmp_path, reg_data):
    outcome = train(load_config(reg_config(tmp_path, reg_data)))
    run, results = outcome.run, outcome.results
    assert train_losses(run)[:6] == pytest.approx(GOLDEN, abs=2e-5), train_losses(run)
    train_scores = np.array([r["score"] for r in scored_rows(96, 1)])
    # the baseline predicts the training mean: its test RMSE by hand
    test_scores = np.array([r["score"] for r in scored_rows(32, 3)])
    assert results["base"]["kind"] == "training-mean"
    assert results["base"]["test"]["rmse"] == pytest.approx(np.sqrt(((test_scores - train_scores.mean()) ** 2).mean()))
    assert results["test"]["rmse"] < results["base"]["test"]["rmse"] and results["test"]["spearman"] > 0.5
    scale = json.loads((run.path / "targets.json").read_text())
    assert scale["mean"] == pytest.approx([train_scores.mean()]) and scale["std"] == pytest.approx([train_scores.std()])
    assert json.loads((run.model_dir / "config.json").read_text())["target_scale"] == scale
    predictor = load_predictor(run.path)
    text = "goal match team"
    value = predictor.predict([text])[0]["values"]["score"]
    with torch.inference_mode():
        raw = predictor.model(**predictor.tokenizer([text], return_tensors="pt")).logits[0, 0].item()
    assert value == pytest.approx(raw * scale["std"][0] + scale["mean"][0], rel=1e-5)
    again, _ = evaluate_run(run.path, reg_data["test"])
    for metric in ("rmse", "mae", "r2", "pearson", "spearman"):
        assert again[metric] == pytest.approx(results["test"][metric], abs=1e-5), metric


def test_without_standardizing_the_head_learns_raw_values(tmp_path, reg_data):
    run = train(load_config(reg_config(tmp_path, reg_data, regression={"standardize": False},
                                       train={"epochs": 1}))).run
    assert json.loads((run.path / "targets.json").read_text())["mean"] == [0.0]
    assert train_losses(run)[0] > 1000  # (about 70 - 0)^2: the raw scale, which standardizing avoids


def test_huber_with_a_wide_delta_is_half_the_mse_and_several_targets_train(tmp_path, reg_data):
    one_step = {"max_steps": 1, "epochs": 1}
    mse = train_losses(train(load_config(reg_config(tmp_path, reg_data, name="mse", train=one_step))).run)
    huber = train_losses(train(load_config(reg_config(tmp_path, reg_data, name="huber", train=one_step,
                                                objective={"name": "huber", "delta": 100.0}))).run)
    assert huber[0] == pytest.approx(mse[0] / 2, rel=1e-6)  # 0.5 x^2 below delta
    two = train(load_config(reg_config(tmp_path, reg_data, name="two", train={"epochs": 1},
                                       data={"label_columns": ["score", "tech"]})))
    assert set(two.results["test"]["per_target"]) == {"score", "tech"}
    assert json.loads((two.run.path / "targets.json").read_text())["names"] == ["score", "tech"]
