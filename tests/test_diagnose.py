"""`tunelab diagnose`: real tiny runs that show each condition get the finding and a proposal that
trains; a healthy run gets none."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import synthetic_rows, write_jsonl
from tunelab.config import load_config
from tunelab.config.load import apply_overrides, validate
from tunelab.diagnose import diagnose
from tunelab.recipes.train import train

FLIPPED = range(0, 96, 13)  # rows of every class: 0 sport, 13 politics, 26 tech, ...
OTHER = {"sport": "tech", "tech": "politics", "politics": "sport"}


def topics_run(root: Path, name: str, rows: list[dict] | None = None, **sections) -> Path:
    """A tiny-random-bert topic classifier (12 epochs at 3e-3 learns the synthetic topics); its run folder."""
    data = root / "data"
    body = {
        "task": "text-classification", "model": {"source": "tiny-random-bert"},
        "data": {"train": str(write_jsonl(data / f"{name}.jsonl", rows or synthetic_rows(96, seed=1))),
                 "validation": str(write_jsonl(data / "validation.jsonl", synthetic_rows(24, seed=2))),
                 "test": str(write_jsonl(data / "test.jsonl", synthetic_rows(24, seed=3)))},
        "method": {"name": "full"},
        "train": {"epochs": 12, "batch_size": 8, "learning_rate": 3e-3, "max_length": 64, "seed": 0, "log_every": 1},
        "eval": {"metric": "macro_f1"},
        "output": {"dir": str(root / "runs"), "name": name},
    }
    for section, values in sections.items():
        body[section] = {**body.get(section, {}), **values}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return train(load_config(path)).run.path


def found(run: Path) -> dict[str, dict]:
    return {f["id"]: f for f in diagnose(run)["findings"]}


def overrides(finding: dict) -> list[str]:
    return finding["proposal"]["overrides"]


def trains(run: Path, proposal: list[str]):
    """The proposal applied to the run's own config, as `tunelab train runs/<id>/config.yaml ...` would."""
    return load_config(run / "config.yaml", proposal)


def test_a_healthy_run_has_no_findings_and_training_wrote_the_diagnosis(tmp_path):
    run = topics_run(tmp_path, "healthy")
    written = json.loads((run / "diagnosis.json").read_text())
    assert json.loads((run / "eval.json").read_text())["validation"]["macro_f1"] > 0.9
    assert written["findings"] == [] and written["healthy"] is True and written["next"] is None
    assert written == diagnose(run)
    sample = json.loads((run / "eval.json").read_text())["train_sample"]
    assert sample["rows"] == sample["of"] == 96 and sample["accuracy"] > 0.9


def test_a_huge_learning_rate_is_divergence_and_the_proposal_calms_it(tmp_path):
    run = topics_run(tmp_path, "huge", train={"learning_rate": 2.0, "epochs": 3})
    finding = found(run)["divergence"]
    assert finding["severity"] == "error"
    assert "train.learning_rate=0.2" in overrides(finding) and "train.warmup_ratio=0.1" in overrides(finding)
    assert any("first step's loss" in e["what"] and e["value"] > 3 for e in finding["evidence"])
    config = trains(run, overrides(finding))
    assert config.train.learning_rate == pytest.approx(0.2) and config.train.warmup_ratio == 0.1
    assert diagnose(run)["next"]["finding"] == "divergence"


def test_twenty_samples_trained_long_is_overfitting_and_the_proposal_freezes_half(tmp_path):
    run = topics_run(tmp_path, "small", rows=synthetic_rows(96, seed=1)[:20], train={"epochs": 40})
    finding = found(run)["overfitting"]
    assert finding["severity"] == "warning"
    best, last = finding["evidence"][0]["value"], finding["evidence"][1]["value"]
    assert last > best * 1.05
    assert any(e["what"] == "training rows" and e["value"] == 20 for e in finding["evidence"])
    # tiny-random-bert has 2 blocks: freeze the lower one, and stop at the best evaluation
    assert overrides(finding) == ["method.name=freeze", "method.layers=1", "eval.early_stopping_patience=2"]
    config = trains(run, overrides(finding))
    assert config.method.name == "freeze" and config.method.layers == 1


def test_barely_trained_is_underfitting_and_the_proposal_trains_harder(tmp_path):
    run = topics_run(tmp_path, "under", train={"epochs": 2, "learning_rate": 1e-3})
    finding = found(run)["underfitting"]
    assert overrides(finding) == ["train.learning_rate=0.003", "train.epochs=4"]
    assert {e["file"] for e in finding["evidence"]} <= {"metrics.jsonl", "eval.json"}


def test_flipped_labels_are_found_through_their_probability_over_training(tmp_path):
    rows = synthetic_rows(96, seed=1)
    for i in FLIPPED:
        rows[i] = {**rows[i], "label": OTHER[rows[i]["label"]]}
    run = topics_run(tmp_path, "noisy", rows=rows, train={"learning_rate": 5e-3})
    finding = found(run)["label-noise"]
    suspects = [json.loads(line) for line in (run / "suspects_train.jsonl").read_text().splitlines()]
    flagged = [r["row"] for r in suspects if r["confidence"] <= 0.2]
    precision = np.mean([row in FLIPPED for row in flagged])
    assert len(flagged) >= 3 and precision >= 0.75, (flagged, precision)
    assert suspects[0]["scorings"] == 13  # 12 evaluations and the final weights
    assert overrides(finding) == ["objective.label_smoothing=0.1"]
    assert trains(run, overrides(finding)).objective.label_smoothing == 0.1


def test_imbalanced_classes_propose_balanced_class_weights_which_train(tmp_path):
    common = [r for r in synthetic_rows(300, seed=5) if r["label"] != "politics"][:150]
    rare = [r for r in synthetic_rows(30, seed=6) if r["label"] == "politics"][:6]
    run = topics_run(tmp_path, "imbalanced", rows=common + rare, train={"epochs": 10})
    findings = found(run)
    finding = findings["class-imbalance"]
    assert finding["evidence"][0]["value"] == pytest.approx(75 / 6, abs=0.1)
    assert overrides(finding) == ["objective.class_weights=balanced"]
    assert "politics" in findings["weak-classes"]["summary"]
    rerun = train(trains(run, overrides(finding) + ["train.epochs=1"]))
    assert rerun.run.path != run and rerun.results["validation"]["support"] == 24


def test_balanced_weights_are_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight

    from tunelab.objectives.cross_entropy import balanced_weights

    labels = ["a", "b", "c"]
    counts = {"a": 70, "b": 20, "c": 10}
    y = np.repeat(np.arange(3), [70, 20, 10])
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert balanced_weights({"labels": labels, "label_counts": {"train": counts}}).numpy() == pytest.approx(expected)


def test_truncation_proposes_a_max_length_that_holds_the_rows(tmp_path):
    run = topics_run(tmp_path, "cut", train={"max_length": 8, "epochs": 1})
    finding = found(run)["truncation"]
    p95 = json.loads((run / "data_check.json").read_text())["splits"]["train"]["lengths"]["tokens"]["p95"]
    target = int(overrides(finding)[0].split("=")[1])
    assert target >= p95 and target % 32 == 0 and target - p95 < 32


def test_leakage_is_an_error(tmp_path):
    rows = synthetic_rows(96, seed=1) + synthetic_rows(24, seed=2)[:6]
    run = topics_run(tmp_path, "leaky", rows=rows, train={"epochs": 1},
                     governance={"on_data_check_errors": "warn"})
    finding = found(run)["leakage"]
    assert finding["severity"] == "error"
    assert {"what": "rows of train also in validation", "value": 6, "file": "data_check.json"} in finding["evidence"]


def lm_run(root: Path, limit: float) -> Path:
    """Full fine-tuning of the tiny Llama on one repeated pattern, scored on general-text (it forgets)."""
    data = write_jsonl(root / "shifted.jsonl", [{"text": "zq " * 60} for _ in range(48)])
    path = root / "lm.yaml"
    path.write_text(yaml.safe_dump({
        "task": "causal-lm", "model": {"source": "tiny-random-llama"}, "data": {"train": str(data)},
        "method": {"name": "full"},
        "train": {"max_steps": 20, "batch_size": 8, "learning_rate": 3e-2, "max_length": 64, "seed": 0},
        "eval": {"retention": [{"source": "general-text", "max_rows": 16}], "max_forgetting": limit,
                 "generate_samples": 0},
        "output": {"dir": str(root / "runs")},
    }))
    return train(load_config(path)).run.path


def test_forgetting_over_and_near_its_gate(tmp_path):
    run = lm_run(tmp_path, 0.05)
    finding = found(run)["forgetting-over-gate"]
    assert finding["severity"] == "error" and "general-text" in finding["summary"]
    # the issue's own example: forgetting after a full fine-tune -> a rank-8 LoRA at 1e-4
    assert overrides(finding) == ["method.name=lora", "method.r=8", "train.learning_rate=0.0001"]
    config = trains(run, overrides(finding))
    assert config.method.name == "lora" and config.method.r == 8
    # the same run against a gate it just passes: close to it is a warning
    near = tmp_path / "near"
    shutil.copytree(run, near)
    results = json.loads((near / "eval.json").read_text())
    entry = results["retention"]["general-text"]
    entry["limit"], entry["passed"] = entry["forgetting"] * 1.1, True
    (near / "eval.json").write_text(json.dumps(results))
    assert found(near)["forgetting-near-gate"]["severity"] == "warning"
    assert "forgetting-over-gate" not in found(near)


def test_a_proposal_that_does_not_validate_is_never_offered(tmp_path):
    run = topics_run(tmp_path, "under", train={"epochs": 2, "learning_rate": 1e-3})
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["train"]["epochs"] = 0  # the proposal doubles epochs: 0 is out of range either way
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    finding = found(run)["underfitting"]
    assert finding["proposal"] is None and "train.epochs" in finding["proposal_error"]


def test_choosing_a_kind_starts_its_section_over_whatever_the_order():
    raw = {"task": "text-classification", "model": {"source": "tiny-random-bert"}, "data": {"train": "x.jsonl"},
           "method": {"name": "freeze", "layers": 2, "embeddings": True}, "objective": None}
    apply_overrides(raw, ["method.r=8", "method.name=lora", "objective.class_weights=balanced",
                          "objective.name=cross-entropy"])
    config = validate(raw)
    assert config.method.name == "lora" and config.method.r == 8
    assert config.objective.class_weights == "balanced"


def test_cli_prints_the_findings_and_the_command_to_try(tmp_path):
    run = topics_run(tmp_path, "under", train={"epochs": 2, "learning_rate": 1e-3})
    text = subprocess.run([sys.executable, "-m", "tunelab", "diagnose", str(run)], capture_output=True, text=True,
                          check=True).stdout
    assert "warning underfitting" in text
    assert f"try: tunelab train {run / 'config.yaml'} train.learning_rate=0.003 train.epochs=4" in text
    as_json = subprocess.run([sys.executable, "-m", "tunelab", "diagnose", str(run), "--json"], capture_output=True,
                             text=True, check=True).stdout
    assert json.loads(as_json) == json.loads((run / "diagnosis.json").read_text())
    report = subprocess.run([sys.executable, "-m", "tunelab", "report", str(run)], capture_output=True, text=True,
                            check=True).stdout.strip()
    page = Path(report).read_text()
    assert 'id="diagnosis"' in page and "underfitting" in page and "train.learning_rate=0.003" in page
