"""Runs inside a workspace: dataset references, lineage, reproduce, the PII gate, safe deletes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunelab.cli.main import app
from tunelab.config import load_config
from tunelab.errors import DataError
from tunelab.recipes.train import train
from tunelab.workspace import Workspace
from tunelab.workspace import audit as audit_mod
from tunelab.workspace.datasets import add_version, delete_version
from tunelab.workspace.lineage import get_run, run_dict

runner = CliRunner()


@pytest.fixture
def database_url():
    """Training tests run on SQLite; the store itself is tested on both backends in test_workspace.py,
    and one lineage + reproduce test below runs on PostgreSQL."""
    return


def _registered_config(workspace: Workspace, make_config, text_data: dict[str, Path], **sections) -> Path:
    for split, path in text_data.items():
        add_version(workspace, f"topics-{split}", path)
    data = {split: f"topics-{split}@v1" for split in text_data}
    return make_config(data=data, **sections)


def test_run_records_lineage_and_reproduces_bit_exactly(workspace: Workspace, make_config, text_data, tmp_path) -> None:
    config_path = _registered_config(workspace, make_config, text_data)
    outcome = train(load_config(config_path))
    assert yaml.safe_load((outcome.run.path / "config.yaml").read_text())["data"]["train"] == "topics-train@v1"
    with workspace.read() as session:
        record = run_dict(get_run(session, outcome.run.id))
    assert record["status"] == "succeeded"
    assert [(i["split"], i["dataset"]) for i in record["inputs"]] == [
        ("train", "topics-train@v1"), ("validation", "topics-validation@v1"), ("test", "topics-test@v1")]
    assert record["environment"]["packages"]["torch"]
    assert record["data_check"]["passed"] and record["data_check"]["pii"] == 0
    assert record["metrics"]["test"]["accuracy"] == json.loads((outcome.run.path / "eval.json").read_text())[
        "test"]["accuracy"]
    paths = {a["path"] for a in record["artifacts"]}
    assert "model/model.safetensors" in paths and "eval.json" in paths and "data_check.json" in paths
    assert not any(p.startswith("checkpoints/") for p in paths)

    result = runner.invoke(app, ["reproduce", outcome.run.id])
    assert result.exit_code == 0, result.output
    assert "reproduced exactly" in result.output
    assert "differs" not in result.output
    with workspace.read() as session:
        copy = [r for r in session.execute(__import__("sqlalchemy").select(
            __import__("tunelab.workspace.orm", fromlist=["Run"]).Run)).scalars() if r.reproduces]
        assert len(copy) == 1 and copy[0].reproduces == outcome.run.id
        assert copy[0].config_sha256 == record["config_sha256"]
        actions = [e.action for e in audit_mod.query(session)]
        assert audit_mod.verify(session).ok
    assert actions.count("run.start") == 2 and actions.count("run.end") == 2 and "run.reproduce" in actions
    assert actions.index("data.check") > actions.index("run.start")


def test_lineage_and_reproduce_on_postgresql(postgres_url, make_config, text_data, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_DATABASE_URL", postgres_url)
    workspace = Workspace.init(tmp_path, database_url=postgres_url)
    outcome = train(load_config(_registered_config(workspace, make_config, text_data, train={"epochs": 1})))
    from tunelab.recipes.reproduce import reproduce

    result = reproduce(outcome.run.id)
    assert result.matches and len(result.metrics) > 4
    with workspace.read() as session:
        assert get_run(session, result.new_run.name).reproduces == outcome.run.id
        assert audit_mod.verify(session).ok
    workspace.close()


def test_reproduce_notices_a_different_result(workspace: Workspace, make_config, text_data, monkeypatch) -> None:
    from tunelab.recipes import reproduce as rep

    outcome = train(load_config(_registered_config(workspace, make_config, text_data, train={"epochs": 1})))
    real_train = train

    def other_seed(config, **kwargs):
        return real_train(config.model_copy(update={"train": config.train.model_copy(update={"seed": 7})}), **kwargs)

    monkeypatch.setattr(rep, "train", other_seed)
    result = rep.reproduce(outcome.run.id)
    assert not result.matches
    assert any(not m["match"] and m["name"].startswith("test.") for m in result.metrics)


def test_reproduce_refuses_changed_input_files(workspace: Workspace, make_config, text_data) -> None:
    outcome = train(load_config(make_config(train={"epochs": 1})))  # plain paths, hashed as lineage
    text_data["train"].write_text(text_data["train"].read_text() + '{"text": "late row", "label": "tech"}\n')
    result = runner.invoke(app, ["reproduce", outcome.run.id])
    assert isinstance(result.exception, DataError)
    assert "data.train" in str(result.exception) and "changed since the run" in str(result.exception)


def test_runs_cli_lists_and_shows(workspace: Workspace, make_config, text_data) -> None:
    outcome = train(load_config(_registered_config(workspace, make_config, text_data, train={"epochs": 1})))
    listed = runner.invoke(app, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    record = json.loads(listed.output.splitlines()[0])
    assert record["id"] == outcome.run.id and record["status"] == "succeeded"
    assert record["data"] == "topics-train@v1, topics-validation@v1, topics-test@v1"
    shown = runner.invoke(app, ["runs", "show", outcome.run.id[:-3]])
    assert shown.exit_code == 0, shown.output
    assert "topics-test@v1" in shown.output and "sha256" in shown.output and "model/model.safetensors" in shown.output


def _with_pii(text_data: dict[str, Path]) -> None:
    rows = [json.loads(line) for line in text_data["train"].read_text().splitlines()]
    rows[3]["text"] += " mail me at jane.doe@example.com"
    rows[10]["text"] += " card 4111 1111 1111 1111"
    text_data["train"].write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pii_block_refuses_before_the_run_exists(workspace: Workspace, make_config, text_data, tmp_path) -> None:
    _with_pii(text_data)
    config = load_config(make_config(governance={"pii": "block"}))
    with pytest.raises(DataError) as err:
        train(config)
    message = str(err.value)
    assert "train.jsonl line 4" in message and "train.jsonl line 11" in message
    assert "jane.doe@example.com" not in message and "4111 1111 1111 1111" not in message
    assert not (tmp_path / "runs").exists()


def test_pii_redact_trains_on_a_new_redacted_version(workspace: Workspace, make_config, text_data) -> None:
    _with_pii(text_data)
    add_version(workspace, "topics-train", text_data["train"])
    config = load_config(make_config(data={"train": "topics-train@v1", "validation": str(text_data["validation"]),
                                           "test": str(text_data["test"])},
                                     governance={"pii": "redact"}, train={"epochs": 1}))
    outcome = train(config)
    recorded = yaml.safe_load((outcome.run.path / "config.yaml").read_text())
    assert recorded["data"]["train"] == "topics-train@v2"
    with workspace.read() as session:
        record = run_dict(get_run(session, outcome.run.id))
        from tunelab.workspace.datasets import get_version

        redacted = get_version(session, "topics-train@v2")
        assert redacted.parent_id is not None and "redacted" in redacted.note
    assert record["inputs"][0]["dataset"] == "topics-train@v2"
    assert record["data_check"]["pii"] == 0 and record["data_check"]["passed"]
    kept = json.loads((outcome.run.path / "data_check.json").read_text())
    assert kept["redacted"] == [{"split": "train", "from": "topics-train@v1", "to": "topics-train@v2",
                                 "replacements": 2}]
    text = (workspace.root / redacted.location).read_text()
    assert "jane.doe@example.com" not in text and "[EMAIL]" in text and "[CREDIT_CARD]" in text


def test_dataset_used_by_a_registered_model_cannot_be_deleted(workspace: Workspace, make_config, text_data) -> None:
    from tunelab.workspace.registry import register

    outcome = train(load_config(_registered_config(workspace, make_config, text_data, train={"epochs": 1})))
    add_version(workspace, "unused", text_data["test"])
    register(workspace, outcome.run.id, "topics-bot")
    with pytest.raises(DataError, match="topics-bot@v1 were trained on it"):
        delete_version(workspace, "topics-train@v1")
    delete_version(workspace, "unused@v1")  # nothing depends on it
    result = runner.invoke(app, ["data", "delete", "topics-test@v1"])
    assert isinstance(result.exception, DataError) and "registered model" in str(result.exception)
    with workspace.read() as session:
        assert audit_mod.verify(session).ok


def test_refs_without_a_workspace_are_a_one_line_error(make_config, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(make_config(data={"train": "topics@v1"}))
    with pytest.raises(Exception, match="names a dataset version, but there is no workspace here"):
        train(config)


def test_replay_and_retention_sources_can_be_dataset_versions(workspace: Workspace, make_config, text_data) -> None:
    from tunelab.recipes.governance import resolve_data

    add_version(workspace, "general", text_data["validation"])
    folder = text_data["train"].parent
    add_version(workspace, "splits", folder)
    config = load_config(make_config(
        data={"train": "splits@v1/train.jsonl", "replay": {"source": "general@v1", "fraction": 0.1}},
        eval={"retention": [{"source": "general@latest"}]}))
    resolved, inputs, _ = resolve_data(config, workspace)
    stored = workspace.root / ".tunelab" / "artifacts" / "datasets"
    assert Path(resolved.data.train).is_relative_to(stored) and Path(resolved.data.replay.source).is_relative_to(stored)
    assert resolved.eval.retention[0].name == "general@latest"  # reports keep naming the reference
    by_role = {(i.split, i.version.ref if i.version else None) for i in inputs}
    assert by_role == {("train", "splits@v1"), ("validation", None), ("test", None),  # plain paths: hashed only
                       ("replay", "general@v1"), ("retention", "general@v1")}
    train_input = next(i for i in inputs if i.split == "train")
    assert train_input.sha256 == __import__("hashlib").sha256(text_data["train"].read_bytes()).hexdigest()


def test_data_check_cli_on_a_config_records_and_gates(workspace: Workspace, make_config, text_data, tmp_path) -> None:
    _with_pii(text_data)
    warn = runner.invoke(app, ["data", "check", str(make_config()), "--out", str(tmp_path / "c1")])
    assert warn.exit_code == 0, warn.output  # PII under the default governance.pii: warn is reported, not refused
    report = json.loads((tmp_path / "c1" / "data_check.json").read_text())
    assert report["pii"]["by_entity"] == {"credit_card": 1, "email": 1}
    assert "jane.doe@example.com" not in (tmp_path / "c1" / "data_check.html").read_text()
    block = runner.invoke(app, ["data", "check", str(make_config(governance={"pii": "block"})), "--no-tokenizer",
                                "--out", str(tmp_path / "c2")])
    assert block.exit_code == 3
    with workspace.read() as session:
        checks = [e for e in audit_mod.query(session, action="data.check")]
    assert len(checks) == 2 and all(json.loads(e.details)["pii"] == 2 for e in checks)
