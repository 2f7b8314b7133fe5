"""Multi-label classification: metrics against scikit-learn and a hand computation, threshold tuning,
the three label layouts giving one training run, the data errors, and a run end to end (golden
curve, tuned thresholds used for test, saved with the model and by predict and eval)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import average_precision_score, f1_score

from conftest import FILLER, WORDS, train_losses, write_config, write_jsonl
from tunelab.config import load_config
from tunelab.errors import ConfigError, DataError
from tunelab.metrics.multi_label import multi_label_metrics, tune_thresholds
from tunelab.recipes.evaluate import evaluate_run
from tunelab.recipes.predict import load_predictor
from tunelab.recipes.train import train

NAMES = list(WORDS)  # politics, sport, tech in sorted order below
GOLDEN = [0.6936905384063721, 0.6908241907755533, 0.6889272530873617, 0.6849490801493326, 0.6727923552195231,
          0.7180298169453939]  # the first 6 of 48 steps


def labelled_rows(n: int, seed: int) -> list[dict]:
    """Texts mixing the words of one to three topics; the labels are the topics used."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = sorted(rng.sample(NAMES, rng.choice([1, 1, 2, 3])))
        words = [w for label in labels for w in rng.choices(WORDS[label], k=rng.randint(2, 4))]
        words += rng.choices(FILLER, k=3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "codes": labels})
    return rows


@pytest.fixture
def ml_data(tmp_path: Path) -> dict[str, Path]:
    return {split: write_jsonl(tmp_path / "ml" / f"{split}.jsonl", labelled_rows(n, seed))
            for split, n, seed in [("train", 96, 1), ("validation", 32, 2), ("test", 32, 3)]}


def ml_config(tmp_path: Path, files: dict[str, Path], name: str = "ml", **sections) -> Path:
    body = {
        "task": "multi-label-classification",
        "model": {"source": "tiny-random-bert"},
        "data": {**{k: str(v) for k, v in files.items()}, "label_column": "codes"},
        "train": {"epochs": 2, "batch_size": 16, "learning_rate": 5e-3, "max_length": 64, "seed": 0, "log_every": 1},
        "output": {"dir": str(tmp_path / "runs")},
    }
    return write_config(tmp_path / f"{name}.yaml", body, sections)


# ---- metrics --------------------------------------------------------------------------------
LABELS = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
PROBS = np.array([[0.9, 0.2, 0.6], [0.3, 0.7, 0.4], [0.55, 0.4, 0.1], [0.2, 0.1, 0.5]])


def test_metrics_match_scikit_learn_and_a_hand_count():
    thresholds = np.array([0.5, 0.5, 0.5])
    got = multi_label_metrics(LABELS, PROBS, thresholds, ["a", "b", "c"])
    predicted = (PROBS >= 0.5).astype(int)  # [[1,0,1],[0,1,0],[1,0,0],[0,0,1]]
    # by hand: true positives 4 (a twice, b once, c once), false positives 1 (c in row 4), false negatives 1
    assert got["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))
    assert got["micro_f1"] == pytest.approx(f1_score(LABELS, predicted, average="micro"))
    assert got["macro_f1"] == pytest.approx(f1_score(LABELS, predicted, average="macro", zero_division=0))
    assert got["samples_f1"] == pytest.approx(f1_score(LABELS, predicted, average="samples", zero_division=0))
    assert got["subset_accuracy"] == pytest.approx(2 / 4)  # rows 1 and 2 exactly right
    assert got["map"] == pytest.approx(average_precision_score(LABELS, PROBS, average="macro"))
    assert got["per_label"]["b"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2,
                                     "threshold": 0.5}


def test_a_label_predicted_at_exactly_its_threshold_and_absent_labels_leave_map():
    labels = np.array([[1, 0], [0, 0]])
    got = multi_label_metrics(labels, np.array([[0.7, 0.2], [0.1, 0.9]]), np.array([0.7, 0.95]), ["a", "b"])
    assert got["per_label"]["a"]["recall"] == 1.0  # 0.7 >= 0.7
    assert got["per_label"]["b"]["precision"] == 0.0 and got["map"] == 1.0  # b has no positive: left out of mAP


def test_per_label_thresholds_maximise_each_labels_f1_and_global_one_micro_f1():
    tuned = tune_thresholds(LABELS, PROBS, "per_label", 0.5)
    # a: positives score 0.9 and 0.55, negatives 0.3 and 0.2 -> cut at 0.55 separates them
    # b: positives 0.7 and 0.4, negatives 0.2 and 0.1 -> 0.4; c: positive 0.6, negatives 0.4, 0.1, 0.5 -> 0.6
    assert tuned.tolist() == [0.55, 0.4, 0.6]
    assert multi_label_metrics(LABELS, PROBS, tuned, ["a", "b", "c"])["micro_f1"] == 1.0
    best = tune_thresholds(LABELS, PROBS, "global", 0.5)
    assert len(set(best.tolist())) == 1
    # one cut in (0.5, 0.55] misses only b's 0.4 (micro F1 8/9); lower ones also take c's 0.5, higher lose a's 0.55
    assert 0.5 < best[0] <= 0.55
    assert multi_label_metrics(LABELS, PROBS, best, ["a", "b", "c"])["micro_f1"] == pytest.approx(8 / 9)
    assert tune_thresholds(np.zeros((3, 1)), np.full((3, 1), 0.2), "per_label", 0.5).tolist() == [0.5]


# ---- layouts and errors ---------------------------------------------------------------------
def _layouts(tmp_path: Path, rows_by_split: dict[str, list[dict]]) -> dict[str, tuple[dict[str, Path], dict]]:
    """The same labels written as lists, as delimited strings, and as one 0/1 column per label."""
    out = {}
    for layout in ("list", "string", "indicators"):
        files = {}
        for split, rows in rows_by_split.items():
            if layout == "string":
                written = [{"text": r["text"], "codes": "|".join(r["codes"])} for r in rows]
            elif layout == "indicators":
                written = [{"text": r["text"], **{n: int(n in r["codes"]) for n in NAMES}} for r in rows]
            else:
                written = rows
            files[split] = write_jsonl(tmp_path / layout / f"{split}.jsonl", written)
        extra = {"list": {}, "string": {"multi_label": {"delimiter": "|"}},
                 "indicators": {"data": {"label_columns": sorted(NAMES)}}}[layout]
        out[layout] = (files, extra)
    return out


def test_lists_strings_and_indicator_columns_train_the_same_run(tmp_path):
    rows = {split: labelled_rows(n, seed) for split, n, seed in [("train", 48, 1), ("validation", 16, 2),
                                                                  ("test", 16, 3)]}
    curves = {}
    for layout, (files, extra) in _layouts(tmp_path, rows).items():
        config = load_config(ml_config(tmp_path, files, name=layout, train={"epochs": 1}, **extra))
        curves[layout] = train_losses(train(config).run)
    assert len(curves["list"]) == 3
    assert curves["string"] == curves["list"] and curves["indicators"] == curves["list"]


def test_the_data_check_counts_delimited_labels_one_by_one(tmp_path, ml_data):
    rows = [{"text": r["text"], "codes": "|".join(r["codes"])} for r in labelled_rows(96, 1)]
    ml_data["train"] = write_jsonl(tmp_path / "ml" / "train.jsonl", rows)
    held = [{"text": r["text"], "codes": "|".join(r["codes"])} for r in labelled_rows(32, 2)]
    ml_data["validation"] = write_jsonl(tmp_path / "ml" / "validation.jsonl", held)
    ml_data.pop("test")
    run = train(load_config(ml_config(tmp_path, ml_data, name="delimited", train={"max_steps": 1},
                                      multi_label={"delimiter": "|"}))).run
    report = json.loads((run.path / "data_check.json").read_text())
    counts = report["splits"]["train"]["labels"]
    assert sorted(counts) == sorted(NAMES)  # combinations such as "politics|sport" are not labels of their own
    assert counts == {n: sum(n in r["codes"] for r in labelled_rows(96, 1)) for n in NAMES}
    assert report["passed"]


def _train_expecting(tmp_path: Path, files: dict[str, Path], error: type, **sections) -> str:
    with pytest.raises(error) as caught:
        train(load_config(ml_config(tmp_path, files, **sections)))
    assert not list((tmp_path / "runs").glob("*")), "nothing is left behind by refused data"
    return str(caught.value)


def test_a_held_out_label_never_seen_in_training_names_its_line(tmp_path, ml_data):
    rows = labelled_rows(32, 3)
    rows[4]["codes"] = ["sport", "weather"]
    ml_data["test"] = write_jsonl(tmp_path / "ml" / "test.jsonl", rows)
    message = _train_expecting(tmp_path, ml_data, DataError)
    assert "test.jsonl line 5" in message and "'weather' never occurs in the training data" in message


def test_an_empty_label_list_is_refused_only_when_asked(tmp_path, ml_data):
    rows = labelled_rows(96, 1)
    rows[9]["codes"] = []
    ml_data["train"] = write_jsonl(tmp_path / "ml" / "train.jsonl", rows)
    message = _train_expecting(tmp_path, ml_data, DataError, multi_label={"allow_empty": False})
    assert "train.jsonl line 10: the row has no label" in message
    assert "multi_label.allow_empty: true" in message


def test_bad_label_values_name_file_line_and_fix(tmp_path, ml_data):
    rows = [{"text": r["text"], **{n: int(n in r["codes"]) for n in NAMES}} for r in labelled_rows(96, 1)]
    rows[2]["tech"] = 2
    ml_data["train"] = write_jsonl(tmp_path / "ml" / "train.jsonl", rows)
    message = _train_expecting(tmp_path, ml_data, DataError, data={"label_columns": NAMES})
    assert "train.jsonl line 3: label column 'tech' holds 2, not 0 or 1" in message
    rows = labelled_rows(96, 1)
    for row in rows:
        row["codes"] = {"primary": row["codes"][0]}
    ml_data["train"] = write_jsonl(tmp_path / "ml" / "train.jsonl", rows)
    message = _train_expecting(tmp_path, ml_data, DataError)
    assert "train.jsonl line 1: column 'codes' holds" in message and "not a list of labels" in message


def test_pos_weight_must_name_labels_and_settings_of_another_task_are_refused(tmp_path, ml_data):
    message = _train_expecting(tmp_path, ml_data, ConfigError,
                               objective={"name": "binary-cross-entropy", "pos_weight": {"weather": 3.0}})
    assert "objective.pos_weight names 'weather'" in message
    body = yaml.safe_load(ml_config(tmp_path, ml_data).read_text())
    body.update(task="text-classification", multi_label={"threshold": 0.3})
    (tmp_path / "tc.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match="multi_label.threshold is a multi-label-classification setting"):
        train(load_config(tmp_path / "tc.yaml"))


def test_balanced_positive_weights_are_negatives_over_positives(tmp_path, ml_data):
    from tunelab.models import load_tokenizer, resolve_model
    from tunelab.objectives import build_objective
    from tunelab.tasks import TASKS

    config = load_config(ml_config(tmp_path, ml_data, objective={"name": "binary-cross-entropy",
                                                                  "pos_weight": "balanced"}))
    task = TASKS.get(config.task)()
    task.validate_config(config)
    resolved = resolve_model(config.model)
    data = task.prepare(config, load_tokenizer(resolved, config.model), resolved)
    matrix = np.array(data.train["labels"])
    expected = (len(matrix) - matrix.sum(0)) / matrix.sum(0)
    weights = build_objective(config, task).positive_weights()
    assert weights.tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    batch = task.collate(data.train[:8])
    logits, targets = torch.randn(8, 3), batch["labels"]
    p = torch.sigmoid(logits)
    reference = -(weights * targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).sum()
    objective = build_objective(config, task)
    objective.task.loss_logits = lambda model, b: (logits, b["labels"])
    assert float(objective.loss_sum(None, batch)) == pytest.approx(float(reference), rel=1e-5)


# ---- end to end -----------------------------------------------------------------------------
def test_run_tunes_thresholds_on_validation_uses_them_for_test_and_serves_with_them(tmp_path, ml_data):
    outcome = train(load_config(ml_config(tmp_path, ml_data, train={"epochs": 8})))
    run, results = outcome.run, outcome.results
    assert train_losses(run)[:6] == pytest.approx(GOLDEN, abs=2e-5), train_losses(run)
    assert results["test"]["map"] > results["base"]["test"]["map"] + 0.1  # it learned the topics' words
    fitted = results["calibration"]
    assert fitted["mode"] == "per_label" and sorted(fitted["thresholds"]) == sorted(NAMES)
    assert fitted["validation_micro_f1"]["after"] >= fitted["validation_micro_f1"]["before"]
    assert results["validation"]["micro_f1"] == fitted["validation_micro_f1"]["after"]
    saved = json.loads((run.path / "thresholds.json").read_text())
    assert saved == fitted["thresholds"]
    assert json.loads((run.model_dir / "config.json").read_text())["label_thresholds"] == saved
    per_label = results["test"]["per_label"]
    assert {n: per_label[n]["threshold"] for n in NAMES} == saved
    assert results["base"]["kind"] == "label-prior" and "micro_f1" in results["base"]["test"]
    # `tunelab eval` on the test file scores as the run did, with the saved thresholds
    again, _ = evaluate_run(run.path, ml_data["test"])
    for metric in ("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "map"):
        assert again[metric] == pytest.approx(results["test"][metric], abs=1e-6), metric
    # predict returns each label whose probability reaches its saved threshold
    predictor = load_predictor(run.path)
    text = "goal match team chip software vote"
    got = predictor.predict([text])[0]["labels"]
    enc = predictor.tokenizer([text], return_tensors="pt")
    with torch.inference_mode():
        probs = predictor.model(**enc).logits.sigmoid()[0].tolist()
    names = [predictor.model.config.id2label[i] for i in range(3)]
    expected = sorted((n for n, p in zip(names, probs) if p >= saved[n]), key=lambda n: -probs[names.index(n)])
    assert [g["label"] for g in got] == expected


def test_lora_adapter_run_without_merge_predicts_as_the_merged_model(tmp_path, ml_data):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    merged = train(load_config(ml_config(tmp_path, ml_data, name="merged",
                                         method={"name": "lora", "r": 4, "merge": True}))).run
    adapter = train(load_config(ml_config(tmp_path, ml_data, name="adapter",
                                          method={"name": "lora", "r": 4, "merge": False}))).run
    texts = ["goal match vote", "chip cloud", "the a new"]
    assert load_predictor(merged.path).predict(texts) == load_predictor(adapter.path).predict(texts)
    base = AutoModelForSequenceClassification.from_pretrained(
        json.loads((adapter.path / "run.json").read_text())["model"]["path"], num_labels=3,
        problem_type="multi_label_classification")
    assert isinstance(PeftModel.from_pretrained(base, adapter.path / "adapter"), PeftModel)


def test_forgetting_of_an_earlier_topic_classifier_is_measured(tmp_path, ml_data, make_config, text_data):
    earlier = train(load_config(make_config("topics", train={"epochs": 12, "learning_rate": 3e-3}))).run
    retention = {"retention": [{"source": str(text_data["test"]), "name": "topics", "max_forgetting": 0.99}]}
    results = train(load_config(ml_config(tmp_path, ml_data, model={"source": str(earlier.model_dir)},
                                          eval=retention))).results
    kept = results["retention"]["topics"]
    assert kept["metric"] == "macro_f1"
    before = json.loads((earlier.path / "eval.json").read_text())["test"]["macro_f1"]
    assert kept["before"]["macro_f1"] == pytest.approx(before, abs=1e-6)  # the earlier model, scored as it was
    assert kept["after"]["macro_f1"] != kept["before"]["macro_f1"]
