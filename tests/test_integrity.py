"""Integrity under tampering: dataset version names are never re-issued, bytes are verified where they
are read and before a model is registered or promoted, and `tunelab verify` reports what differs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import synthetic_rows, write_jsonl
from tunelab.cli.main import app
from tunelab.config import load_config
from tunelab.errors import GATE_FAILED, DataError
from tunelab.workspace import Workspace
from tunelab.workspace import audit as audit_mod
from tunelab.workspace.datasets import add_version, delete_version, get_version, list_versions
from tunelab.workspace.orm import AuditEntry, Run

runner = CliRunner()


def _edit(path: Path, text: str) -> None:
    """What an owner can always do to a read-only file: make it writable and change it."""
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    path.write_text(text)


def test_a_deleted_version_is_a_tombstone_and_its_number_is_never_reissued(workspace: Workspace,
                                                                           tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", synthetic_rows(6, seed=1))
    b = write_jsonl(tmp_path / "b.jsonl", synthetic_rows(6, seed=2))
    first = add_version(workspace, "seq", a).version
    delete_version(workspace, "seq@v1")
    assert not (workspace.artifacts / "datasets" / first.sha256).exists()  # the bytes are gone
    assert add_version(workspace, "seq", b).version.version == 2  # not v1 again
    assert add_version(workspace, "seq", a).version.version == 3  # the old bytes come back as a new number
    with workspace.read() as session:
        with pytest.raises(DataError, match=r"seq@v1 was deleted .*its bytes are gone"):
            get_version(session, "seq@v1")
        assert get_version(session, "seq@latest").version == 3
    listed = {v["ref"]: v for v in list_versions(workspace, "seq")}
    assert listed["seq@v1"]["deleted_at"] and listed["seq@v1"]["sha256"] == first.sha256
    assert listed["seq@v2"]["deleted_at"] is None
    with workspace.read() as session:
        actions = [e.action for e in session.execute(select(AuditEntry)).scalars()]
        assert actions.count("data.delete") == 1 and audit_mod.verify(session).ok


@pytest.fixture
def trained(workspace: Workspace, make_config, text_data):
    """A tiny run in the workspace, trained on three copied dataset versions (SQLite)."""
    from tunelab.recipes.train import train

    for split, path in text_data.items():
        add_version(workspace, f"topics-{split}", path)
    config = make_config(data={split: f"topics-{split}@v1" for split in text_data}, train={"max_steps": 2})
    return train(load_config(config)).run


@pytest.fixture
def database_url():
    return  # SQLite: these tests train; the version store runs on both backends in test_workspace.py


def test_an_edited_stored_copy_is_refused_when_a_run_reads_it(workspace: Workspace, make_config,
                                                             text_data) -> None:
    from tunelab.recipes.train import train

    version = add_version(workspace, "topics-train", text_data["train"]).version
    stored = workspace.root / version.location
    _edit(stored, stored.read_text().replace("goal", "gaol", 1))
    config = load_config(make_config(data={"train": "topics-train@v1", "validation": str(text_data["validation"]),
                                           "test": str(text_data["test"])}))
    with pytest.raises(DataError, match=r"topics-train@v1: its stored copy .* changed since it was registered: "
                                        r"sha256 [0-9a-f]{16}… now, [0-9a-f]{16}… registered"):
        train(config)
    assert not (Path(config.output.dir)).exists() or not list(Path(config.output.dir).iterdir())


def test_a_running_run_holds_its_data_versions(workspace: Workspace, trained) -> None:
    with workspace.write() as txn:
        txn.session.get(Run, trained.id).status = "running"
    with pytest.raises(DataError, match=rf"cannot delete topics-train@v1: run\(s\) {trained.id} are reading it"):
        delete_version(workspace, "topics-train@v1")


def test_registry_refuses_a_run_whose_data_was_deleted_or_artifacts_edited(workspace: Workspace, trained,
                                                                            make_config, text_data) -> None:
    from tunelab.recipes.train import train
    from tunelab.workspace.registry import RegistryError, register

    delete_version(workspace, "topics-test@v1")
    with pytest.raises(RegistryError, match=r"does not match its lineage: input data.test \(topics-test@v1\): deleted"):
        register(workspace, trained.id, "topics")
    with workspace.read() as session:  # lineage still names the deleted version
        run = session.get(Run, trained.id)
        assert [i.dataset_version.ref for i in run.inputs] == ["topics-train@v1", "topics-validation@v1",
                                                               "topics-test@v1"]

    other = train(load_config(make_config(data={k: str(v) for k, v in text_data.items()},
                                          train={"max_steps": 1}))).run
    _edit(other.path / "eval.json", "{}")
    with pytest.raises(RegistryError, match=r"artifact eval.json: changed"):
        register(workspace, other.id, "topics")


def test_weights_edited_after_registration_are_not_promoted(workspace: Workspace, trained) -> None:
    from tunelab.workspace.registry import promote, register

    version = register(workspace, trained.id, "topics")
    weights = trained.path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor
    os.chmod(weights, stat.S_IRUSR | stat.S_IWUSR)
    weights.write_bytes(bytes(data))
    result = promote(workspace, version.ref, "staging")
    assert not result.passed
    failed = {c["name"]: c for c in result.failed}
    assert "integrity" in failed and "artifact model/model.safetensors: changed" in failed["integrity"]["message"]
    with workspace.read() as session:
        refused = session.execute(select(AuditEntry).where(AuditEntry.action == "registry.promote.refused")).scalars()
        assert any("integrity" in str(e.details) for e in refused)

    result = runner.invoke(app, ["verify", trained.id])
    assert result.exit_code == GATE_FAILED and "model/model.safetensors" in result.output
    result = runner.invoke(app, ["verify", "topics@v1"])
    assert result.exit_code == GATE_FAILED
    result = runner.invoke(app, ["verify", "--all"])
    assert result.exit_code == GATE_FAILED and f"run {trained.id}" in result.output


def test_verify_reports_an_intact_workspace(workspace: Workspace, trained) -> None:
    result = runner.invoke(app, ["verify", "--all"])
    assert result.exit_code == 0, result.output
    assert "intact: 4 checked" in result.output  # three dataset versions and the run
    assert runner.invoke(app, ["verify", "topics-train@v1"]).exit_code == 0


# ---- crash consistency --------------------------------------------------------------------------
def test_a_run_killed_during_its_final_save_is_never_served(make_config, monkeypatch, tmp_path: Path) -> None:
    from tunelab.errors import RunError
    from tunelab.recipes.predict import load_predictor
    from tunelab.recipes.train import train
    from tunelab.runs import RunFolder
    from tunelab.tasks.text_classification import TextClassification

    def crash(self, folder):  # the process dies after the weights, before the tokenizer's last file
        raise OSError("disk vanished")

    monkeypatch.setattr(TextClassification, "finalize_saved", crash)
    config = load_config(make_config(train={"max_steps": 2}))
    with pytest.raises(OSError):
        train(config)
    run = next(Path(config.output.dir).iterdir())
    assert not (run / "model").exists()  # nothing half-written where a loader looks
    assert (run / ".saving" / "model" / "model.safetensors").is_file()
    with pytest.raises(RunError, match=rf"run {run.name} is unfinished \(status failed\).*"):
        load_predictor(run)
    monkeypatch.undo()
    resumed = train(RunFolder.open(run).config(), resume=RunFolder.open(run))
    assert (run / "model" / "model.safetensors").is_file() and not (run / ".saving").exists()
    assert load_predictor(resumed.run.path) is not None


def _interrupted(make_config, name: str, keep: int):
    from tests.test_train import StopAt
    from tunelab.recipes.train import train

    body = {"max_steps": 6, "checkpoint_every": 2, "keep_checkpoints": keep}
    config = load_config(make_config(name, train=body))
    with pytest.raises(KeyboardInterrupt):
        train(config, reporter=StopAt(5))
    return next(p for p in Path(config.output.dir).iterdir() if p.name.startswith(name)), body


def test_resume_skips_a_damaged_checkpoint_for_the_newest_intact_one(make_config, caplog) -> None:
    from safetensors.torch import load_file

    from tunelab.recipes.train import train
    from tunelab.runs import RunFolder

    whole = train(load_config(make_config("whole", train={"max_steps": 6, "checkpoint_every": 2}))).run
    run, _ = _interrupted(make_config, "broken", keep=2)
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-0000002", "step-0000004"]
    damaged = run / "checkpoints" / "step-0000004" / "optimizer.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])  # truncated on disk
    resumed = train(RunFolder.open(run).config(), resume=RunFolder.open(run))
    assert f"{damaged} is damaged" in caplog.text and "resuming from step-0000002" in caplog.text
    a = load_file(whole.path / "model" / "model.safetensors")
    b = load_file(resumed.run.path / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # still bit-exact, two steps further back


def test_resume_with_every_checkpoint_damaged_names_the_file_and_keeps_the_run(make_config) -> None:
    from tunelab.errors import RunError
    from tunelab.recipes.train import train
    from tunelab.runs import RunFolder

    run, _ = _interrupted(make_config, "lost", keep=1)
    (run / "checkpoints" / "step-0000004" / "trainable.safetensors").unlink()
    with pytest.raises(RunError, match=r"no intact checkpoint to resume from: .*trainable.safetensors is missing"):
        train(RunFolder.open(run).config(), resume=RunFolder.open(run))
    assert RunFolder.open(run).read_json("run.json")["status"] == "interrupted"  # not marked failed


def test_the_data_check_inside_train_measures_token_lengths_with_the_runs_tokenizer(make_config) -> None:
    import json

    from tunelab.recipes.train import train

    run = train(load_config(make_config(train={"max_steps": 1, "max_length": 8}))).run
    report = json.loads((run.path / "data_check.json").read_text())
    tokens = report["splits"]["train"]["lengths"]["tokens"]
    assert tokens["max_length"] == 8 and tokens["truncated"] > 0 and tokens["max"] > 8
    assert any("longer than max_length (8 tokens)" in w for w in report["warnings"])
