"""`tunelab report`: one self-contained HTML page per run, and the overfitting check behind its warnings."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tunelab.metrics.overfitting import divergence_warning

SECTIONS = ("summary", "warnings", "diagnosis", "curves", "base-vs-tuned", "retention", "gates", "confusion", "per-class",
            "lengths", "samples", "config")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def train_tiny(root: Path, name: str = "tiny", **train: object) -> Path:
    """Train a tiny-random-bert classifier on synthetic topics (2 epochs, a few seconds); its run folder."""
    from tests.conftest import synthetic_rows, write_jsonl
    from tunelab.config import load_config
    from tunelab.recipes.train import train as run_train

    data = {split: write_jsonl(root / "data" / f"{split}.jsonl", synthetic_rows(n, seed=i))
            for i, (split, n) in enumerate([("train", 96), ("validation", 24), ("test", 24)], 1)}
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump({
        "task": "text-classification", "model": {"source": "tiny-random-bert"},
        "data": {k: str(v) for k, v in data.items()},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "max_length": 64, "seed": 0,
                  "log_every": 1, "num_threads": 1, **train},
        "eval": {"metric": "macro_f1"},
        "output": {"dir": str(root / "runs"), "name": name},
    }))
    return run_train(load_config(config)).run.path


def tunelab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tunelab", *args], check=False, capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "COLUMNS": "200"}, timeout=300)


def section(page: str, section_id: str) -> str:
    found = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.DOTALL)
    assert found, f"section {section_id} missing"
    return found.group(1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("report"))


def copy_run(run: Path, where: Path) -> Path:
    """A copy of the run folder's files (not its weights) to change freely."""
    return Path(shutil.copytree(run, where / run.name, ignore=shutil.ignore_patterns("model", "checkpoints", "report")))


# ---- the report of a real run ---------------------------------------------------------------------

def test_report_has_every_section_and_valid_pngs(trained_run: Path) -> None:
    from PIL import Image

    from tunelab.recipes.report import write_report

    page_path = write_report(trained_run)
    assert page_path == trained_run / "report" / "report.html"
    page = page_path.read_text()
    for section_id in SECTIONS:
        assert f'<section id="{section_id}">' in page
    for name in ("loss.png", "lr.png", "metrics.png", "confusion.png", "per_class_f1.png", "lengths.png"):
        png = page_path.parent / name
        assert png.read_bytes().startswith(PNG_MAGIC), name
        with Image.open(png) as image:
            image.verify()
    summary = section(page, "summary")
    assert trained_run.name in summary and "tiny-random-bert" in summary and "full" in summary
    assert "trainable parameters" in summary and "(100.00%)" in summary
    assert "learning_rate: 0.001" in section(page, "config")
    labels = json.loads((trained_run / "data.json").read_text())["labels"]
    assert all(label in section(page, "per-class") for label in labels)
    assert not list(page_path.parent.glob(".*")), "temp files left behind"
    assert not (page_path.parent / "objective.png").exists()  # cross-entropy logs no statistics of its own


def test_html_is_self_contained(trained_run: Path, tmp_path: Path) -> None:
    from tunelab.recipes.report import write_report

    page_path = write_report(trained_run, tmp_path / "out")
    page = page_path.read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(list((tmp_path / "out").glob("*.png"))) >= 5
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    assert embedded == {p.read_bytes() for p in (tmp_path / "out").glob("*.png")}
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page


def test_new_eval_keys_land_in_their_sections(trained_run: Path, tmp_path: Path) -> None:
    from tunelab.recipes.report import write_report

    run = copy_run(trained_run, tmp_path)
    ev = json.loads((run / "eval.json").read_text())
    ev["base"] = {"kind": "majority-class", "note": "always predicts 'sport'",
                  "validation": {"accuracy": 0.3333, "macro_f1": 0.1667}, "test": {"accuracy": 0.3333}}
    ev["gain"] = {"validation": {"accuracy": 0.5432, "macro_f1": 0.4321}}
    ev["retention"] = {"old-news": {"metric": "macro_f1", "greater_is_better": True, "before": {"macro_f1": 0.8765},
                                    "after": {"macro_f1": 0.7683}, "forgetting": 0.1234, "limit": 0.1,
                                    "passed": False}}
    ev["gates"] = {"passed": False, "checks": [
        {"name": "forgetting:old-news", "passed": False, "value": 0.1234, "limit": 0.1,
         "message": "old-news lost 12.34% of macro_f1 (limit 10%)"},
        {"name": "min_gain", "passed": True, "value": 0.4321, "limit": 0.05, "message": "gain ok"}]}
    ev["warnings"] = ["possible overfitting: validation loss rose to 1.2345 at step 24"]
    (run / "eval.json").write_text(json.dumps(ev))
    data = json.loads((run / "data.json").read_text())
    data["lengths"] = {"train": {"edges": [0, 16, 32, 48, 64], "counts": [50, 30, 10, 6], "max_length": 64,
                                 "truncated": 6, "rows": 96},
                       "test": {"edges": [0, 16, 32, 48, 64], "counts": [12, 8, 3, 1], "max_length": 64,
                                "truncated": 1, "rows": 24}}
    (run / "data.json").write_text(json.dumps(data))
    (run / "samples_test.jsonl").write_text(
        json.dumps({"input": "<b>bold</b> claim", "label": "tech", "predicted": "sport", "loss": 3.21, "score": 0.04})
        + "\n" + json.dumps({"input": "fine", "label": "sport", "predicted": "sport", "loss": 0.5, "score": 0.6})
        + "\n")

    page = write_report(run).read_text()
    base = section(page, "base-vs-tuned")
    assert "majority-class" in base and "always predicts &#39;sport&#39;" in base
    assert "0.3333" in base and "+0.5432" in base and "+0.4321" in base
    retention = section(page, "retention")
    assert "old-news" in retention and "0.8765" in retention and "0.7683" in retention
    assert "12.34%" in retention and "10.00%" in retention and "FAIL" in retention
    gates = section(page, "gates")
    assert "forgetting:old-news" in gates and "lost 12.34% of macro_f1" in gates and "min_gain" in gates
    warnings = section(page, "warnings")
    assert "possible overfitting" in warnings and "gate forgetting:old-news failed" in warnings
    assert "FAILED" in section(page, "summary")
    lengths = section(page, "lengths")
    assert "data:image/png" in lengths and "6.2%" in lengths and "4.2%" in lengths
    assert (run / "report" / "lengths.png").read_bytes().startswith(PNG_MAGIC)
    samples = section(page, "samples")
    assert "&lt;b&gt;bold&lt;/b&gt; claim" in samples and "<b>bold</b>" not in page
    assert samples.index("claim") < samples.index("fine")  # worst first, as written
    for column in ("input", "label", "predicted", "loss", "score"):
        assert f"<th>{column}</th>" in samples


def test_failed_run_without_eval_json_still_renders(trained_run: Path, tmp_path: Path) -> None:
    from tunelab.recipes.report import write_report

    run = copy_run(trained_run, tmp_path)
    (run / "eval.json").unlink()
    (run / "samples_test.jsonl").unlink(missing_ok=True)
    record = json.loads((run / "run.json").read_text())
    record.update(status="failed", error="CUDA out of memory <oops>")
    (run / "run.json").write_text(json.dumps(record))
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 99, "loss": 0.')  # a line cut mid-write

    page = write_report(run).read_text()
    for section_id in ("base-vs-tuned", "retention", "gates", "confusion", "per-class", "samples"):
        assert "not available" in section(page, section_id), section_id
    assert "the run failed: CUDA out of memory &lt;oops&gt;" in section(page, "warnings")
    assert "unreadable line" in section(page, "warnings")
    assert "data:image/png" in section(page, "curves")


def test_failure_leaves_no_half_report(trained_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tunelab.recipes import report as recipe

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(recipe.html, "render", broken)
    with pytest.raises(RuntimeError):
        recipe.write_report(trained_run, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_prints_the_page_and_one_line_errors(trained_run: Path, tmp_path: Path) -> None:
    done = tunelab("report", str(trained_run), "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "r" / "report.html")
    bad = tunelab("report", str(tmp_path))
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 1 and len(lines) == 1 and lines[0].startswith("error:")
    assert "not a tunelab run folder" in lines[0]


# ---- overfitting -----------------------------------------------------------------------------------

def records(train: list[float], validation: list[float], every: int = 10) -> list[dict]:
    """metrics.jsonl lines: one train line per step, an evaluation every `every` steps."""
    lines: list[dict] = []
    for step, loss in enumerate(train, 1):
        lines.append({"step": step, "epoch": step / len(train), "loss": loss, "lr": 1e-3})
        if step % every == 0 and step // every <= len(validation):
            lines.append({"step": step, "split": "validation", "loss": validation[step // every - 1],
                          "accuracy": 0.5})
    return lines


FALLING = [1.0 - 0.02 * i for i in range(40)]


def test_divergence_warns_when_validation_rises_while_training_falls() -> None:
    message = divergence_warning(records(FALLING, [1.0, 0.8, 0.9, 1.0]))
    assert message is not None
    assert "1.0000 at step 40" in message and "0.8000 at step 20" in message and "+25.0%" in message
    for fix in ("eval.early_stopping_patience", "epochs", "model.dropout", "train.weight_decay",
                "objective.label_smoothing"):
        assert fix in message
    # the best was the evaluation just before the last: one clear rise is enough
    assert divergence_warning(records(FALLING, [1.0, 0.9, 0.8, 0.9])) is not None


@pytest.mark.parametrize("validation, train", [
    ([1.0, 0.8, 0.7, 0.65], FALLING),  # both falling: healthy
    ([1.0, 0.8, 0.9, 0.95], [0.5 + 0.01 * i for i in range(40)]),  # training loss rising too: not overfitting
    ([1.0, 0.8, 0.82, 0.83], FALLING),  # a rise under 5%: noise
    ([1.0, 0.8, 0.9, 0.82], FALLING),  # back down at the last evaluation
    ([1.0, 1.2], FALLING),  # fewer than 3 evaluations
])
def test_divergence_is_quiet_otherwise(validation: list[float], train: list[float]) -> None:
    assert divergence_warning(records(train, validation)) is None


def test_divergence_on_resumed_logs_keeps_the_last_line_per_step() -> None:
    lines = records(FALLING, [1.0, 0.8, 0.9, 0.95])
    lines.append({"step": 40, "split": "validation", "loss": 0.79})  # re-evaluated after a resume: recovered
    assert divergence_warning(lines) is None
    assert divergence_warning([]) is None


def test_train_loss_trend_is_a_debiased_moving_average():
    from tunelab.report.plots import smoothed

    assert smoothed([2.0] * 6) == pytest.approx([2.0] * 6)  # no pull toward zero at the start
    noisy = [3.0, 1.0] * 10
    trend = smoothed(noisy)
    assert max(trend[4:]) - min(trend[4:]) < 1.0 < max(noisy) - min(noisy)
    assert smoothed([5.0, 1.0], weight=0.0) == [5.0, 1.0]
