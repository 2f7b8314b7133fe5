"""The command line as a user runs it: exit codes, one-line errors, predict and eval."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def tunelab(*args: str, cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunelab", *args], capture_output=True, text=True, cwd=cwd,
                          input=stdin, env={**os.environ, "COLUMNS": "200"}, timeout=300)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One CLI training run shared by the predict/eval tests."""
    from tests.conftest import synthetic_rows, write_jsonl
    import yaml

    root = tmp_path_factory.mktemp("cli")
    data = {s: write_jsonl(root / f"{s}.jsonl", synthetic_rows(n, seed=i)) for i, (s, n) in
            enumerate([("train", 96), ("validation", 24), ("test", 24)], 1)}
    config = root / "job.yaml"
    config.write_text(yaml.safe_dump({
        "task": "text-classification", "model": {"source": "tiny-random-bert"},
        "data": {k: str(v) for k, v in data.items()},
        "train": {"epochs": 4, "batch_size": 8, "learning_rate": 3e-3, "max_length": 64},
        "output": {"dir": str(root / "runs")},
    }))
    result = tunelab("--quiet", "train", str(config), "train.epochs=25")
    assert result.returncode == 0, result.stderr
    runs = list((root / "runs").iterdir())
    assert len(runs) == 1
    return runs[0], data


def test_train_override_lands_in_resolved_config(trained_run):
    run, _ = trained_run
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 25


def test_predict_returns_labels_with_scores(trained_run):
    run, data = trained_run
    rows = [json.loads(line) for line in data["test"].read_text().splitlines()]
    stdin = "".join(r["text"] + "\n" for r in rows)
    result = tunelab("predict", str(run), "-", "--top-k", "2", "--json", stdin=stdin)
    assert result.returncode == 0, result.stderr
    items = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [i["text"] for i in items] == [r["text"] for r in rows]
    # predict agrees with the run's own test accuracy (one wrong guess allowed for ties at the margin)
    correct = sum(i["labels"][0]["label"] == r["label"] for i, r in zip(items, rows))
    expected = json.loads((run / "eval.json").read_text())["test"]["accuracy"] * len(rows)
    assert abs(correct - expected) <= 1
    assert all(len(i["labels"]) == 2 and i["labels"][0]["score"] >= i["labels"][1]["score"] for i in items)


def test_eval_on_new_data_writes_json(trained_run):
    run, data = trained_run
    result = tunelab("eval", str(run), "--data", str(data["test"]), "--json")
    assert result.returncode == 0, result.stderr
    written = json.loads((run / "evals" / "test.json").read_text())
    assert written["accuracy"] == pytest.approx(json.loads((run / "eval.json").read_text())["test"]["accuracy"])


def test_bad_config_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: text-classification\nmodel: {source: tiny-random-bert}\ndata: {train: x.jsonl}\n"
                   "train: {learnin_rate: 1}\n")
    result = tunelab("train", str(bad))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "train.learning_rate" in lines[0]
    assert "Traceback" not in result.stderr


def test_debug_shows_traceback(tmp_path):
    result = tunelab("--debug", "train", str(tmp_path / "missing.yaml"))
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_models_list_and_config_commands(tmp_path):
    listing = tunelab("models", "list")
    assert listing.returncode == 0 and "minilm-l6" in listing.stdout and "tiny-random-bert" in listing.stdout
    schema = tunelab("config", "schema")
    assert json.loads(schema.stdout)["title"] == "Config"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: text-classification\nmodel: {source: minilm-l6}\ndata: {train: t.jsonl}\n")
    shown = tunelab("config", "show", str(cfg), "method.name=lora")
    assert shown.returncode == 0 and "alpha: 32" in shown.stdout and "learning_rate: 5.0e-05" in shown.stdout


def test_data_example_help_names_every_packaged_corpus() -> None:
    from tunelab.data.corpora import CORPORA

    shown = " ".join(tunelab("data", "example", "--help").stdout.split())
    missing = [name for name in CORPORA.names() if name not in shown]
    assert not missing, f"tunelab data example --help does not list {missing}"
