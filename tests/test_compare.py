"""`tunelab compare`: a table of runs, overlaid curves, the config keys that differ."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.test_report import PNG_MAGIC, train_tiny, tunelab
from tunelab.errors import TunelabError


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny runs that differ only in learning rate."""
    root = tmp_path_factory.mktemp("compare")
    return [train_tiny(root, "slow", learning_rate=1e-3), train_tiny(root, "fast", learning_rate=3e-3)]


def test_rows_diff_and_curves(two_runs: list[Path], tmp_path: Path) -> None:
    from tunelab.recipes.compare import compare_runs

    result = compare_runs(two_runs, tmp_path / "cmp")
    assert result.metric == "macro_f1"
    assert [row["run"] for row in result.rows] == [run.name for run in two_runs]
    for row, run in zip(result.rows, two_runs, strict=True):
        ev = json.loads((run / "eval.json").read_text())
        assert row["validation"] == pytest.approx(ev["validation"]["macro_f1"])
        assert row["test"] == pytest.approx(ev["test"]["macro_f1"])
        assert row["test_loss"] == pytest.approx(ev["test"]["loss"])
        assert row["task"] == "text-classification" and row["model"] == "tiny-random-bert"
        assert row["method"] == "full" and row["status"] == "succeeded"
        assert row["trainable_params"] == row["total_params"] > 0

    diff = (tmp_path / "cmp" / "config_diff.txt").read_text().splitlines()
    keys = [line.split(":", 1)[0] for line in diff if not line.startswith("#")]
    assert "train.learning_rate: 0.001 | 0.003" in diff
    assert not any(key.startswith("output.") for key in keys)
    assert "train.epochs" not in keys  # equal in both runs
    assert (tmp_path / "cmp" / "curves.png").read_bytes().startswith(PNG_MAGIC)
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["metric"] == "macro_f1" and summary["runs"] == result.rows


def test_metric_option_and_runs_of_another_task(two_runs: list[Path], tmp_path: Path) -> None:
    from tunelab.recipes.compare import compare_runs

    result = compare_runs(two_runs, tmp_path / "acc", metric="accuracy")
    assert [row["metric"] for row in result.rows] == ["accuracy", "accuracy"]

    # a causal-lm run has no macro_f1: its row falls back to its own selection metric
    lm = Path(shutil.copytree(two_runs[1], tmp_path / "lm-run", ignore=shutil.ignore_patterns("model", "checkpoints")))
    config = yaml.safe_load((lm / "config.yaml").read_text())
    config["task"], config["eval"]["metric"] = "causal-lm", "loss"
    (lm / "config.yaml").write_text(yaml.safe_dump(config))
    (lm / "eval.json").write_text(json.dumps({"validation": {"loss": 1.5, "perplexity": 4.48},
                                              "test": {"loss": 1.75, "perplexity": 5.75}}))
    mixed = compare_runs([two_runs[0], lm], tmp_path / "mixed")
    assert mixed.metric == "macro_f1"
    assert mixed.rows[1]["metric"] == "loss" and mixed.rows[1]["validation"] == 1.5
    assert mixed.rows[1]["test_loss"] == 1.75
    assert "task: text-classification | causal-lm" in (tmp_path / "mixed" / "config_diff.txt").read_text()


def test_needs_two_runs(two_runs: list[Path]) -> None:
    from tunelab.recipes.compare import compare_runs

    with pytest.raises(TunelabError, match="at least two"):
        compare_runs(two_runs[:1])


def test_cli_table_default_folder_and_one_line_errors(two_runs: list[Path], tmp_path: Path) -> None:
    done = tunelab("compare", *map(str, two_runs), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert all(run.name in done.stdout for run in two_runs)
    assert "macro_f1" in done.stdout and "succeeded" in done.stdout
    written = list((tmp_path / "comparisons").glob("compare-*/summary.json"))
    assert len(written) == 1 and (written[0].parent / "curves.png").is_file()

    for args in ([str(two_runs[0])], [str(two_runs[0]), str(tmp_path)]):
        bad = tunelab("compare", *args, cwd=tmp_path)
        lines = [line for line in bad.stderr.splitlines() if line.strip()]
        assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:"), bad.stderr
