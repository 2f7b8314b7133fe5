"""The workspace store on SQLite and PostgreSQL: schema, dataset versions, audit chain, safety."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from tunelab.cli.main import app
from tunelab.errors import GATE_FAILED, DataError
from tunelab.workspace import Workspace
from tunelab.workspace import audit as audit_mod
from tunelab.workspace.datasets import add_version, delete_version, get_version, parse_ref, resolve
from tunelab.workspace.diff import diff_versions
from tunelab.workspace.orm import AuditEntry, Base, DatasetVersion


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [{"id": i, "text": f"row number {i} about topic {i % 3}", "label": f"t{i % 3}"} for i in range(10)]


def test_init_migrates_to_head_and_matches_the_models(workspace: Workspace) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tunelab.workspace.db import schema_revision

    current, head = schema_revision(workspace.engine)
    assert current == head == "0006"
    with workspace.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    # init again is an idempotent upgrade, and the workspace is found from a sub-folder
    Workspace.init(workspace.root)
    sub = workspace.root / "a" / "b"
    sub.mkdir(parents=True)
    assert Workspace.find(sub).root == workspace.root
    assert (workspace.folder / "artifacts" / "datasets").is_dir()


def test_init_upgrades_an_older_workspace_and_keeps_its_data(tmp_path: Path, monkeypatch) -> None:
    from alembic import command

    from tunelab.workspace.db import _alembic_config, schema_revision

    ws = Workspace(tmp_path.resolve(), __import__("tunelab.workspace", fromlist=["x"]).WorkspaceSettings())
    (ws.artifacts / "datasets").mkdir(parents=True)
    cfg = _alembic_config()
    with ws.engine.begin() as connection:  # a workspace made by the first release (schema 0001)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0001")
    (ws.folder / "workspace.yaml").write_text("database_url: sqlite:///workspace.db\ndatasets: copy\n")
    # A version written by that release, with its columns (today's code writes columns it lacked).
    with ws.engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO datasets (id, name, created_at, created_by) "
                                   "VALUES (1, 'old', '2026-01-01', 'bob')")
        connection.exec_driver_sql(
            "INSERT INTO dataset_versions (id, dataset_id, version, sha256, storage, location, source, kind, "
            "files, bytes, created_at, created_by) VALUES (1, 1, 1, 'ab12', 'reference', '/x', '/x', 'file', "
            "'[]', 3, '2026-01-01', 'bob')")
    monkeypatch.chdir(tmp_path)
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(cfg).get_current_head()
    with pytest.raises(Exception, match=f"schema 0001, this tunelab needs {head}.*tunelab init"):
        Workspace.require().check_schema()
    upgraded = Workspace.init(tmp_path)
    assert schema_revision(upgraded.engine) == (head, head)
    with upgraded.read() as session:
        old = get_version(session, "old@v1")
        assert old.sha256 == "ab12" and old.live  # kept, and not a tombstone
        assert audit_mod.verify(session).ok


def test_password_is_not_written_to_the_settings_file(tmp_path: Path) -> None:
    ws = Workspace.init(tmp_path, database_url="sqlite:///x.db")
    assert "x.db" in (tmp_path / ".tunelab" / "workspace.yaml").read_text()
    from tunelab.workspace.workspace import _without_password

    assert "secret" not in _without_password("postgresql+psycopg://bob:secret@db:5432/tl")
    ws.close()


def test_dataset_versions_are_content_addressed_and_immutable(workspace: Workspace, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "src" / "train.jsonl", ROWS)
    first = add_version(workspace, "topics", src, rows=10)
    assert first.created and first.version.version == 1
    assert first.version.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()  # what sha256sum prints
    again = add_version(workspace, "topics", src)
    assert not again.created and again.version.version == 1

    write_rows(src, ROWS[:8] + [{"id": 8, "text": "edited row", "label": "t2"}, {"id": 10, "text": "new", "label": "t1"}])
    second = add_version(workspace, "topics", src)
    assert second.created and second.version.version == 2

    path_v1, version = resolve(workspace, "topics@v1")
    assert version.sha256 == first.version.sha256
    assert hashlib.sha256(path_v1.read_bytes()).hexdigest() == first.version.sha256  # v1 kept its bytes
    assert not os.access(path_v1, os.W_OK) or os.geteuid() == 0  # stored read-only (root ignores modes)
    assert resolve(workspace, "topics@latest")[1].version == 2
    assert parse_ref("topics@v2/train.jsonl").subpath == "train.jsonl"
    assert parse_ref("data/train.jsonl") is None

    diff = diff_versions(workspace, "topics@v1", "topics@v2")
    rows = diff["rows"]["train.jsonl"]
    assert (rows["key"], rows["added"], rows["removed"], rows["changed"], rows["unchanged"]) == ("id", 1, 1, 1, 8)

    with pytest.raises(DataError, match="has no version v7.*versions: v1, v2"):
        resolve(workspace, "topics@v7")
    with pytest.raises(DataError, match="no dataset named 'nope'.*known: topics"):
        resolve(workspace, "nope@v1")


def test_diff_without_a_key_pairs_edits_in_place(workspace: Workspace, tmp_path: Path) -> None:
    rows = [{"text": f"sentence {i}", "label": "a"} for i in range(6)]
    a = add_version(workspace, "plain", write_rows(tmp_path / "a.jsonl", rows)).version
    edited = rows[:2] + [{"text": "sentence two, edited", "label": "a"}] + rows[3:5] + [{"text": "extra", "label": "b"},
                                                                                       {"text": "more", "label": "b"}]
    b = add_version(workspace, "plain", write_rows(tmp_path / "a.jsonl", edited)).version
    result = diff_versions(workspace, a.ref, b.ref)["rows"]["a.jsonl"]
    # row 3 edited in place; row 6 ("sentence 5") replaced by "extra" at the same position counts as changed;
    # "more" is added
    assert (result["changed"], result["added"], result["removed"]) == (2, 1, 0)


def test_referenced_version_refuses_changed_bytes(workspace: Workspace, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "ref.jsonl", ROWS)
    added = add_version(workspace, "refd", src, storage="reference").version
    assert added.location == str(src.resolve())
    resolve(workspace, "refd@v1")
    write_rows(src, ROWS[:3])
    with pytest.raises(DataError, match="the file it refers to .* changed since it was registered"):
        resolve(workspace, "refd@v1")


def test_folder_versions_and_subpaths(workspace: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "news"
    write_rows(folder / "train.jsonl", ROWS)
    write_rows(folder / "test.jsonl", ROWS[:3])
    version = add_version(workspace, "news", folder).version
    assert version.kind == "folder" and {f["path"] for f in version.files} == {"train.jsonl", "test.jsonl"}
    path, _ = resolve(workspace, "news@v1/test.jsonl")
    assert path.read_text().count("\n") == 3
    with pytest.raises(DataError, match="no 'dev.jsonl' in news@v1"):
        resolve(workspace, "news@v1/dev.jsonl")


def test_failed_write_leaves_nothing_behind(workspace: Workspace, tmp_path: Path, monkeypatch) -> None:
    src = write_rows(tmp_path / "x.jsonl", ROWS)

    def boom(*args, **kwargs):
        raise RuntimeError("crash between the insert and the audit entry")

    monkeypatch.setattr(audit_mod, "append", boom)
    with pytest.raises(RuntimeError):
        add_version(workspace, "crashy", src)
    monkeypatch.undo()
    with workspace.read() as session:
        assert session.execute(select(func.count()).select_from(DatasetVersion)).scalar() == 0
        assert audit_mod.verify(session).ok
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert not (workspace.artifacts / "datasets" / sha).exists()  # the copied bytes were removed too
    assert not list((workspace.artifacts / "datasets").glob(".incoming-*"))


def test_delete_removes_unused_versions(workspace: Workspace, tmp_path: Path) -> None:
    src = write_rows(tmp_path / "d.jsonl", ROWS)
    version = add_version(workspace, "gone", src).version
    stored = workspace.artifacts / "datasets" / version.sha256
    assert stored.is_dir()
    delete_version(workspace, "gone@v1")
    assert not stored.exists()
    with workspace.read() as session, pytest.raises(DataError):
        get_version(session, "gone@v1")


# ---- audit chain ----------------------------------------------------------------------------
def _audited(workspace: Workspace, tmp_path: Path) -> None:
    for i in range(3):
        add_version(workspace, "audited", write_rows(tmp_path / f"a{i}.jsonl", ROWS[: i + 2]))


def test_audit_chain_verifies_and_filters(workspace: Workspace, tmp_path: Path) -> None:
    _audited(workspace, tmp_path)
    with workspace.read() as session:
        result = audit_mod.verify(session)
        assert result.ok and result.entries == 3
        entries = audit_mod.query(session, action="data.*")
        assert [e.object_id for e in entries] == ["audited@v1", "audited@v2", "audited@v3"]
        assert all(e.actor.startswith("os:") for e in entries)
        assert [e.seq for e in audit_mod.query(session, limit=2)] == [2, 3]
        assert audit_mod.verify(session, expect_head=result.head).ok
        assert not audit_mod.verify(session, expect_head="f" * 64).ok


@pytest.mark.parametrize("tamper, expected", [
    ("UPDATE audit_log SET details = '{\"sha256\":\"forged\"}' WHERE seq = 2", "entry 2 (data.add audited@v2) was edited"),
    ("UPDATE audit_log SET actor = 'os:mallory' WHERE seq = 1", "entry 1 (data.add audited@v1) was edited"),
    ("DELETE FROM audit_log WHERE seq = 2", "entry 2 is missing"),
    ("DELETE FROM audit_log WHERE seq = 3", "entries were deleted from the end"),
    ("UPDATE audit_log SET ts = '2020-01-01T00:00:00+00:00' WHERE seq = 3", "entry 3 (data.add audited@v3) was edited"),
])
def test_audit_verify_detects_tampering(workspace: Workspace, tmp_path: Path, tamper: str, expected: str) -> None:
    _audited(workspace, tmp_path)
    with workspace.engine.begin() as conn:
        conn.execute(text(tamper))
    with workspace.read() as session:
        result = audit_mod.verify(session)
    assert not result.ok
    assert any(expected in problem for problem in result.problems), result.problems


def test_audit_detects_a_rewritten_entry_with_a_recomputed_hash(workspace: Workspace, tmp_path: Path) -> None:
    """Forging one entry's hash breaks the next entry's link."""
    _audited(workspace, tmp_path)
    with workspace.read() as session:
        entry = session.get(AuditEntry, 2)
        forged = audit_mod.entry_hash(entry.seq, entry.ts, "os:mallory", entry.action, entry.object_type,
                                      entry.object_id, entry.details, entry.prev_hash)
    with workspace.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET actor = 'os:mallory', hash = :h WHERE seq = 2"), {"h": forged})
    with workspace.read() as session:
        problems = audit_mod.verify(session).problems
    assert problems == ["entry 3 does not link to the entry before it"]


def _rewrite_chain(workspace: Workspace, actor: str) -> None:
    """What someone with write access to the database can do: rewrite every entry and re-hash the whole
    chain and its head consistently, so the chain alone verifies."""
    with workspace.engine.begin() as conn:
        rows = conn.execute(text("SELECT seq, ts, action, object_type, object_id, details FROM audit_log "
                                 "ORDER BY seq")).all()
        prev = audit_mod.GENESIS
        for seq, ts, action, object_type, object_id, details in rows:
            digest = audit_mod.entry_hash(seq, ts, actor, action, object_type, object_id, details, prev)
            conn.execute(text("UPDATE audit_log SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s"),
                         {"a": actor, "p": prev, "h": digest, "s": seq})
            prev = digest
        conn.execute(text("UPDATE audit_head SET hash = :h"), {"h": prev})


def test_a_consistently_rewritten_chain_is_caught_by_the_anchor_file(workspace: Workspace, tmp_path: Path) -> None:
    _audited(workspace, tmp_path)
    lines = workspace.anchor_path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]  # one head per committed write
    _rewrite_chain(workspace, "os:mallory")
    with workspace.read() as session:
        assert audit_mod.verify(session).ok  # the chain alone cannot tell
        result = audit_mod.verify(session, anchor_path=workspace.anchor_path)
    assert not result.ok
    assert "entry 1 differs from its anchored hash" in result.problems[0]
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == GATE_FAILED and "the chain was rewritten" in result.output


def test_a_signed_anchor_file_cannot_be_rewritten_to_match(workspace: Workspace, tmp_path: Path,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("TUNELAB_AUDIT_KEY", "kept-in-a-secret-store")
    _audited(workspace, tmp_path)
    with workspace.read() as session:
        assert audit_mod.verify(session, anchor_path=workspace.anchor_path).ok
    _rewrite_chain(workspace, "os:mallory")
    with workspace.read() as session:  # the attacker rewrites the anchor file too, without the key
        forged = [json.dumps({"seq": e.seq, "hash": e.hash, "ts": e.ts})
                  for e in session.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars()]
    workspace.anchor_path.write_text("\n".join(forged) + "\n")
    with workspace.read() as session:
        result = audit_mod.verify(session, anchor_path=workspace.anchor_path)
    assert not result.ok and "has no valid signature" in result.problems[0]
    assert "kept-in-a-secret-store" not in workspace.anchor_path.read_text()


def test_an_unanchored_tail_is_reported_not_failed(workspace: Workspace, tmp_path: Path) -> None:
    """A crash between a commit and its anchor line leaves the newest entries unanchored: not tampering."""
    _audited(workspace, tmp_path)
    lines = workspace.anchor_path.read_text().splitlines()
    workspace.anchor_path.write_text("\n".join(lines[:1]) + "\n")
    with workspace.read() as session:
        result = audit_mod.verify(session, anchor_path=workspace.anchor_path)
    assert result.ok and result.unanchored == 2


# ---- concurrency ----------------------------------------------------------------------------
ADD_SCRIPT = """
import sys
from pathlib import Path
from tunelab.workspace import Workspace
from tunelab.workspace.datasets import add_version
ws = Workspace.require()
for i in range(int(sys.argv[2])):
    path = Path(sys.argv[1]) / f"{i}.jsonl"
    add_version(ws, "shared", path)
"""


def test_parallel_processes_do_not_corrupt_the_workspace(workspace: Workspace, tmp_path: Path) -> None:
    """Four processes add 3 versions each to one dataset at once: 12 distinct versions, an intact chain."""
    procs, per = 4, 3
    folders = []
    for p in range(procs):
        folder = tmp_path / f"proc{p}"
        for i in range(per):
            write_rows(folder / f"{i}.jsonl", [{"text": f"process {p} file {i}", "label": "x"}])
        folders.append(folder)
    env = {**os.environ, "TUNELAB_WORKSPACE": str(workspace.root)}
    running = [subprocess.Popen([sys.executable, "-c", ADD_SCRIPT, str(f), str(per)], env=env,
                                stderr=subprocess.PIPE, text=True) for f in folders]
    for proc in running:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    with workspace.read() as session:
        versions = session.execute(select(DatasetVersion.version).order_by(DatasetVersion.version)).scalars().all()
        assert versions == list(range(1, procs * per + 1))
        result = audit_mod.verify(session)
        assert result.ok and result.entries == procs * per


def test_cli_init_add_list_and_verify(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from tunelab.cli.main import app

    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init"]).exit_code == 0
    src = write_rows(tmp_path / "rows.jsonl", ROWS)
    added = runner.invoke(app, ["data", "add", "topics", str(src), "--note", "first cut"])
    assert added.exit_code == 0 and "topics@v1" in added.output and "10 rows" in added.output
    again = runner.invoke(app, ["data", "add", "topics", str(src)])
    assert "unchanged: these bytes are already topics@v1" in again.output
    shown = runner.invoke(app, ["data", "show", "topics", "--json"])
    assert json.loads(shown.output)["note"] == "first cut"
    logged = runner.invoke(app, ["audit", "log", "--action", "data.add", "--json"])
    entries = [json.loads(line) for line in logged.output.splitlines()]
    assert [e["object_id"] for e in entries] == ["topics@v1"] and entries[0]["details"]["note"] == "first cut"
    assert runner.invoke(app, ["audit", "verify"]).exit_code == 0
    ws = Workspace.require()
    with ws.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET object_id = 'topics@v9' WHERE action = 'data.add'"))
    ws.close()
    tampered = runner.invoke(app, ["audit", "verify"])
    assert tampered.exit_code == 3 and "tampered:" in tampered.output and "was edited" in tampered.output
