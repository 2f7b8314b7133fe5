"""Bad input ends with one clear line naming the file and line, and leaves no run folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.config import load_config
from tunelab.errors import TunelabError
from tunelab.recipes.train import train
from tests.conftest import synthetic_rows, write_jsonl


def fails(make_config, tmp_path: Path, pattern: str, **sections) -> str:
    config = load_config(make_config(**sections))
    with pytest.raises(TunelabError, match=pattern) as info:
        train(config)
    message = str(info.value)
    assert "\n" not in message
    runs = Path(config.output.dir)
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was left behind"
    return message


def with_train(path: Path) -> dict:
    return {"data": {"train": str(path)}}


def test_missing_file(make_config, tmp_path):
    fails(make_config, tmp_path, r"nope\.jsonl", **with_train(tmp_path / "nope.jsonl"))


def test_missing_column_suggests(make_config, tmp_path):
    message = fails(make_config, tmp_path, r"'txt'", data={"text_column": "txt"})
    assert "text" in message


def test_empty_text_names_line(make_config, tmp_path):
    rows = synthetic_rows(30, seed=5)
    rows[6]["text"] = "   "
    path = write_jsonl(tmp_path / "blank.jsonl", rows)
    fails(make_config, tmp_path, r"blank\.jsonl line 7.*empty.*data\.empty_text", **with_train(path))


def test_empty_text_can_be_dropped(make_config, tmp_path):
    rows = synthetic_rows(30, seed=5)
    rows[6]["text"] = ""
    path = write_jsonl(tmp_path / "blank.jsonl", rows)
    outcome = train(load_config(make_config(data={"train": str(path), "empty_text": "drop"},
                                            train={"max_steps": 1})))
    assert json.loads((outcome.run.path / "data.json").read_text())["rows"]["train"] == 29


def test_malformed_json_line(make_config, tmp_path):
    path = write_jsonl(tmp_path / "broken.jsonl", synthetic_rows(30, seed=5))
    lines = path.read_text().splitlines()
    lines[11] = '{"text": "goal match", "label": '
    path.write_text("\n".join(lines) + "\n")
    fails(make_config, tmp_path, r"broken\.jsonl line 12", **with_train(path))


def test_undecodable_bytes(make_config, tmp_path):
    path = write_jsonl(tmp_path / "latin.jsonl", synthetic_rows(30, seed=5))
    data = path.read_bytes().split(b"\n")
    data[3] = b'{"text": "caf\xe9 goal", "label": "sport"}'
    path.write_bytes(b"\n".join(data))
    fails(make_config, tmp_path, r"latin\.jsonl line 4.*UTF-8", **with_train(path))


def test_single_class(make_config, tmp_path):
    rows = [dict(r, label="sport") for r in synthetic_rows(30, seed=5)]
    path = write_jsonl(tmp_path / "one.jsonl", rows)
    fails(make_config, tmp_path, r"one\.jsonl.*single class", **with_train(path))


def test_unknown_model_source(make_config, tmp_path):
    fails(make_config, tmp_path, r"tiny-random-brt", model={"source": "tiny-random-brt"})


def test_unknown_metric(make_config, tmp_path):
    fails(make_config, tmp_path, r"eval\.metric 'f1'", eval={"metric": "f1"})


def test_data_check_errors_stop_training_by_default(make_config, tmp_path, text_data):
    rows = synthetic_rows(24, seed=2)
    rows[0]["label"] = "weather"
    path = write_jsonl(tmp_path / "val.jsonl", rows)
    message = fails(make_config, tmp_path, r"data check found errors: validation: label\(s\) 'weather' never "
                    r"occur in train.*val\.jsonl line 1.*on_data_check_errors: warn",
                    data={"validation": str(path)}, train={"max_steps": 1})
    assert "more" not in message  # one error, no "and N more"


def test_unseen_validation_labels_are_reported(make_config, tmp_path, text_data):
    rows = synthetic_rows(24, seed=2)
    rows[0]["label"] = "weather"
    path = write_jsonl(tmp_path / "val.jsonl", rows)
    outcome = train(load_config(make_config(data={"validation": str(path)}, train={"max_steps": 1},
                                            governance={"on_data_check_errors": "warn"})))
    info = json.loads((outcome.run.path / "data.json").read_text())
    assert info["unseen_labels"] == {"validation": 1}
    assert info["rows"]["validation"] == 23
    results = json.loads((outcome.run.path / "eval.json").read_text())
    assert "validation: 1 row(s) have labels never seen in train and are left out of its metrics" in results["warnings"]
    check = json.loads((outcome.run.path / "data_check.json").read_text())
    assert not check["passed"] and any("weather" in e for e in check["errors"])
