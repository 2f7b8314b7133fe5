"""API tokens: stored hashed, verified, revoked and audited; the server's auth dependencies and roles."""

# No `from __future__ import annotations`: FastAPI must evaluate the endpoints' annotations, and
# `whoami_endpoint` builds one whose Depends(...) names a local variable, which string annotations lose.
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select, text
from starlette.concurrency import run_in_threadpool
from typer.testing import CliRunner

from tunelab.server.auth import acting_as, require
from tunelab.workspace import Workspace
from tunelab.workspace import audit as audit_mod
from tunelab.workspace import tokens as tokens_mod
from tunelab.workspace.orm import ApiToken, AuditEntry
from tunelab.workspace.tokens import (
    Principal,
    TokenError,
    create_token,
    list_tokens,
    revoke_token,
    role_allows,
    token_sha256,
    verify_token,
)


@pytest.fixture(autouse=True)
def _no_inherited_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests expect the OS user outside requests; a TUNELAB_ACTOR (set for a job's process) would replace it."""
    monkeypatch.delenv("TUNELAB_ACTOR", raising=False)


def audit_entries(ws: Workspace, prefix: str) -> list[AuditEntry]:
    with ws.read() as session:
        return audit_mod.query(session, action=f"{prefix}*")


def test_roles_are_ordered_by_power() -> None:
    assert role_allows("admin", "viewer") and role_allows("engineer", "engineer")
    assert not role_allows("viewer", "engineer") and not role_allows("engineer", "admin")
    assert not role_allows("root", "viewer")
    with pytest.raises(ValueError):
        role_allows("admin", "root")


def test_only_the_hash_and_prefix_are_stored(workspace: Workspace) -> None:
    token = create_token(workspace, "ci", "engineer")
    _, prefix, secret = token.split("_", 2)
    assert token.startswith("tl_") and re.fullmatch("[0-9a-f]{8}", prefix) and len(secret) >= 43
    with workspace.engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM api_tokens")).mappings().one()
        dump = "\n".join(str(r) for r in conn.execute(text("SELECT * FROM api_tokens")).all())
        dump += "\n".join(str(r) for r in conn.execute(text("SELECT * FROM audit_log")).all())
    assert row["prefix"] == prefix and row["secret_sha256"] == token_sha256(token)
    assert secret not in dump and token not in dump
    assert row["created_by"].startswith("os:") and row["last_used_at"] is None and row["revoked_at"] is None


def test_verify_accepts_the_token_and_refuses_tampered_ones(workspace: Workspace) -> None:
    token = create_token(workspace, "alice", "viewer")
    create_token(workspace, "bob", "admin")
    assert verify_token(workspace, token) == Principal("alice", "viewer")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    other_prefix = token.replace(token[3:11], "0" * 8 if token[3:11] != "0" * 8 else "1" * 8)
    for bad in (tampered, other_prefix, token + "x", token[:-5], "", "Bearer " + token, "tl_zz_" + token[12:],
                token.replace("tl_", "tk_", 1)):
        assert verify_token(workspace, bad) is None, bad


def test_last_used_is_written_at_most_once_a_minute(workspace: Workspace, monkeypatch) -> None:
    token = create_token(workspace, "ci", "viewer")
    start = tokens_mod._now()

    def last_used() -> str | None:
        with workspace.read() as session:
            return session.execute(select(ApiToken.last_used_at)).scalar_one()

    writes: list[str] = []
    event.listen(workspace.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *rest: writes.append(statement) if statement.startswith("UPDATE")
                 else None)
    for offset, expected in ((0, 0), (30, 0), (61, 61)):
        monkeypatch.setattr(tokens_mod, "_now", lambda offset=offset: start + timedelta(seconds=offset))
        assert verify_token(workspace, token) is not None
        assert last_used() == tokens_mod._iso(start + timedelta(seconds=expected))
    assert len(writes) == 2  # the call at +30 s wrote nothing


def test_duplicate_and_invalid_names_are_refused(workspace: Workspace) -> None:
    create_token(workspace, "ci", "engineer")
    with pytest.raises(TokenError, match="already exists"):
        create_token(workspace, "ci", "viewer")
    revoke_token(workspace, "ci")
    with pytest.raises(TokenError, match=r"already exists \(revoked\)"):  # names are never reused
        create_token(workspace, "ci", "viewer")
    for name in ("", "has space", "-flag", "semi;colon", "x" * 101, "anonymous"):
        with pytest.raises(TokenError):
            create_token(workspace, name, "viewer")
    with pytest.raises(TokenError, match="role"):
        create_token(workspace, "new", "root")
    assert [t["name"] for t in list_tokens(workspace)] == ["ci"]


def test_revoke_list_and_audit(workspace: Workspace) -> None:
    token = create_token(workspace, "ci.bot-1", "engineer")
    assert verify_token(workspace, token) is not None
    revoke_token(workspace, "ci.bot-1")
    assert verify_token(workspace, token) is None
    with pytest.raises(TokenError, match="already revoked"):
        revoke_token(workspace, "ci.bot-1")
    with pytest.raises(TokenError, match="no token"):
        revoke_token(workspace, "nobody")
    (listed,) = list_tokens(workspace)
    assert set(listed) == {"name", "role", "prefix", "created_at", "created_by", "last_used_at", "revoked_at"}
    assert listed["revoked_at"] and listed["last_used_at"] and token[3:11] == listed["prefix"]
    assert token.split("_", 2)[2] not in json.dumps(listed)
    entries = audit_entries(workspace, "token.")
    assert [(e.action, e.object_id) for e in entries] == [("token.create", "ci.bot-1"), ("token.revoke", "ci.bot-1")]
    for entry in entries:
        assert json.loads(entry.details)["role"] == "engineer" and token.split("_", 2)[2] not in entry.details
    with workspace.read() as session:
        assert audit_mod.verify(session).ok


def test_cli_create_prints_only_the_token_on_stdout(workspace: Workspace) -> None:
    from tunelab.cli import tokens_cmd  # noqa: F401  (registers `tokens` until main.py imports it)
    from tunelab.cli.main import app

    runner = CliRunner()
    created = runner.invoke(app, ["tokens", "create", "ci", "--role", "engineer"])
    assert created.exit_code == 0, created.output
    lines = created.stdout.splitlines()
    assert len(lines) == 1 and created.stdout == lines[0] + "\n"
    assert verify_token(workspace, lines[0]) == Principal("ci", "engineer")
    assert "not be shown again" in created.stderr and lines[0] not in created.stderr
    listed = runner.invoke(app, ["tokens", "list"])
    assert listed.exit_code == 0 and "ci" in listed.stdout and "engineer" in listed.stdout
    assert lines[0].split("_", 2)[2] not in listed.stdout
    bad = runner.invoke(app, ["tokens", "create", "x", "--role", "root"])
    assert bad.exit_code != 0 and bad.stdout == ""
    assert runner.invoke(app, ["tokens", "revoke", "ci"]).exit_code == 0
    assert verify_token(workspace, lines[0]) is None


# ---- the server's auth dependencies -----------------------------------------------------------
def whoami_endpoint(role: str) -> Callable[..., dict]:
    def whoami(p: Annotated[Principal, Depends(require(role))]) -> dict:
        return {"name": p.name, "role": p.role}

    return whoami


def make_app(ws: Workspace, *, allow_anonymous: bool = False) -> FastAPI:
    """A tiny app: one endpoint per role, and sync and async endpoints that write an audit entry."""
    app = FastAPI()
    app.state.workspace = ws
    app.state.allow_anonymous = allow_anonymous
    for role in ("viewer", "engineer", "admin"):
        app.add_api_route(f"/{role}", whoami_endpoint(role))

    def write_entry(tag: str) -> str:
        with ws.write() as txn:
            return txn.audit("test.write", "test", tag).actor

    @app.post("/sync-write")
    def sync_write(p: Annotated[Principal, Depends(require("engineer"))]) -> dict:
        return {"actor": write_entry("sync"), "seen": audit_mod.current_actor()}

    @app.post("/async-write")
    async def async_write(p: Annotated[Principal, Depends(require("engineer"))]) -> dict:
        return {"actor": await run_in_threadpool(write_entry, "async"), "seen": audit_mod.current_actor()}

    @app.get("/whoami-open")
    def open_endpoint() -> dict:
        return {"seen": audit_mod.current_actor()}

    return app


@pytest.fixture
def tokens(workspace: Workspace) -> dict[str, str]:
    return {role: create_token(workspace, f"{role}-bot", role) for role in ("viewer", "engineer", "admin")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_role_matrix(workspace: Workspace, tokens: dict[str, str]) -> None:
    client = TestClient(make_app(workspace))
    for path in ("/viewer", "/engineer", "/admin"):
        for headers in ({}, bearer("tl_00000000_" + "x" * 43), bearer("nonsense"), {"Authorization": "Basic Zm9vOmJhcg=="},
                        {"Authorization": "Bearer"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == "Bearer" and response.json()["detail"]
    allowed = {"viewer": {"/viewer"}, "engineer": {"/viewer", "/engineer"}, "admin": {"/viewer", "/engineer", "/admin"}}
    for role, token in tokens.items():
        for path in ("/viewer", "/engineer", "/admin"):
            response = client.get(path, headers=bearer(token))
            if path in allowed[role]:
                assert response.status_code == 200 and response.json() == {"name": f"{role}-bot", "role": role}
            else:
                assert response.status_code == 403, (role, path)
                assert f"needs the {path[1:]} role" in response.json()["detail"]
    revoke_token(workspace, "admin-bot")
    assert client.get("/viewer", headers=bearer(tokens["admin"])).status_code == 401


def test_anonymous_mode_is_local_only(workspace: Workspace, tokens: dict[str, str]) -> None:
    closed = TestClient(make_app(workspace, allow_anonymous=False))
    assert closed.get("/admin").status_code == 401
    local = TestClient(make_app(workspace, allow_anonymous=True))
    assert local.get("/admin").json() == {"name": "anonymous", "role": "admin"}
    assert local.post("/sync-write").json()["actor"] == "local:anonymous"
    # a presented token is still checked: a bad one is refused, a good one keeps its own identity and role
    assert local.get("/admin", headers=bearer("tl_00000000_" + "x" * 43)).status_code == 401
    assert local.get("/admin", headers=bearer(tokens["viewer"])).status_code == 403
    for host in ("127.0.0.1", "::1"):
        assert TestClient(make_app(workspace, allow_anonymous=True), client=(host, 5000)).get("/admin").status_code \
            == 200
    for host in ("10.1.2.3", "192.168.0.7", "2001:db8::1", "example.org"):
        remote = TestClient(make_app(workspace, allow_anonymous=True), client=(host, 5000))
        assert remote.get("/admin").status_code == 401, host


@pytest.mark.parametrize("path", ["/sync-write", "/async-write"])
def test_writes_during_a_request_are_audited_as_the_token(workspace: Workspace, tokens: dict[str, str],
                                                          path: str) -> None:
    client = TestClient(make_app(workspace))
    for _ in range(2):  # the identity holds on every request, not only the first of a worker thread
        response = client.post(path, headers=bearer(tokens["engineer"]))
        assert response.status_code == 200
        assert response.json() == {"actor": "token:engineer-bot", "seen": "token:engineer-bot"}
    # ... and never leaks into a later request without a token, nor into the caller's context
    assert client.get("/whoami-open").json()["seen"].startswith("os:")
    assert audit_mod.ACTOR.get() is None
    logged = [e.actor for e in audit_entries(workspace, "test.write")]
    assert logged == ["token:engineer-bot"] * 2


def test_acting_as_sets_and_restores_the_actor() -> None:
    with acting_as(Principal("ci", "engineer")):
        assert audit_mod.current_actor() == "token:ci"
    assert audit_mod.ACTOR.get() is None


def test_require_rejects_unknown_roles_and_is_one_dependency_per_role() -> None:
    with pytest.raises(ValueError):
        require("root")
    assert require("admin") is require("admin")
