"""Server jobs are confined to the workspace: every path a submitted config names, symlinks that leave
it, code-running options, the admin's extra read roots, and the re-check inside the job's process."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from conftest import synthetic_rows, write_jsonl
from fastapi.testclient import TestClient

from tunelab.config import load_config_text
from tunelab.errors import ConfigError
from tunelab.server.app import create_app
from tunelab.workspace import Workspace
from tunelab.workspace import audit as audit_mod
from tunelab.workspace import jobs as queue
from tunelab.workspace.confine import CodeNotAllowed, ConfinementError, JobPolicy, check_job_config
from tunelab.workspace.datasets import add_version
from tunelab.workspace.tokens import create_token


@pytest.fixture
def database_url():
    """SQLite only: the policy is not a database feature (the store runs on both in test_workspace.py)."""
    return


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder beside the workspace, with data and a model folder an engineer must not reach."""
    root = tmp_path_factory.mktemp("outside")
    write_jsonl(root / "train.jsonl", synthetic_rows(12, seed=5))
    (root / "model").mkdir()
    (root / "model" / "config.json").write_text("{}")
    (root / "chat.jinja").write_text("{{ messages }}")
    return root


def _config(workspace: Workspace, **sections) -> str:
    body = {"task": "text-classification", "model": {"source": "tiny-random-bert"},
            "data": {"train": "data/train.jsonl"}, "train": {"epochs": 1, "batch_size": 8, "max_length": 32}}
    for section, values in sections.items():
        body[section] = {**body.get(section, {}), **values}
    return yaml.safe_dump(body)


def _check(workspace: Workspace, policy: JobPolicy | None = None, **sections) -> None:
    config = load_config_text(_config(workspace, **sections))
    check_job_config(config, policy or JobPolicy(workspace.root))


@pytest.fixture
def data(workspace: Workspace) -> Path:
    return write_jsonl(workspace.root / "data" / "train.jsonl", synthetic_rows(24, seed=1))


def test_allowed_forms(workspace: Workspace, data: Path) -> None:
    add_version(workspace, "topics", data)
    (workspace.root / "models" / "mine").mkdir(parents=True)
    (workspace.root / "chat.jinja").write_text("{{ messages }}")
    _check(workspace)  # a workspace-relative path and a catalog model
    _check(workspace, data={"train": str(data), "validation": "topics@v1", "replay": {"source": "general-text"}})
    _check(workspace, model={"source": "HuggingFaceTB/SmolLM2-135M"})  # a hub id: read from the local cache
    _check(workspace, model={"source": "models/mine"}, lm={"template": "chat.jinja"},
           eval={"retention": [{"source": "general-text"}, {"source": "topics@v1", "head": "models/mine"}]})


@pytest.mark.parametrize("sections, key", [
    ({"data": {"train": "OUT/train.jsonl"}}, "data.train"),
    ({"data": {"test": "../OUTNAME/train.jsonl"}}, "data.test"),
    ({"data": {"validation": "~/train.jsonl"}}, "data.validation"),
    ({"data": {"replay": {"source": "OUT/train.jsonl"}}}, "data.replay.source"),
    ({"eval": {"retention": [{"source": "OUT/train.jsonl"}]}}, "eval.retention[0].source"),
    ({"eval": {"retention": [{"source": "general-text", "head": "OUT/model"}]}}, "eval.retention[0].head"),
    ({"model": {"source": "OUT/model"}}, "model.source"),
    ({"model": {"source": "OUT/model.gguf"}}, "model.source"),
    ({"lm": {"template": "OUT/chat.jinja"}}, "lm.template"),
    ({"output": {"dir": "OUT/runs"}}, "output.dir"),
])
def test_each_path_outside_the_workspace_is_refused(workspace: Workspace, outside: Path, sections, key) -> None:
    text = json.dumps(sections).replace("OUTNAME", outside.name).replace("OUT", str(outside))
    with pytest.raises(ConfinementError) as err:
        _check(workspace, **json.loads(text))
    assert err.value.message.startswith(f"{key}: ") and "server jobs read only" in err.value.message or \
        key == "output.dir" and "write only inside it" in err.value.message


def test_symlinks_out_of_the_workspace_are_refused(workspace: Workspace, outside: Path, data: Path) -> None:
    link = workspace.root / "data" / "linked.jsonl"
    link.symlink_to(outside / "train.jsonl")
    with pytest.raises(ConfinementError, match=r"data.train: 'data/linked.jsonl' is outside the workspace"):
        _check(workspace, data={"train": "data/linked.jsonl"})
    (workspace.root / "data" / "sub").symlink_to(outside)  # a folder that holds a link out
    with pytest.raises(ConfinementError, match=r"data.train: 'data' holds (linked.jsonl|sub), a link"):
        _check(workspace, data={"train": "data"})
    (workspace.root / "hf").symlink_to(outside / "model")
    with pytest.raises(ConfinementError, match="model.source"):
        _check(workspace, model={"source": "hf"})


def test_code_running_options_need_the_flag_and_an_admin(workspace: Workspace, data: Path) -> None:
    from tunelab.workspace.confine import job_policy

    remote = {"model": {"trust_remote_code": True}}
    with pytest.raises(CodeNotAllowed, match="model.trust_remote_code: this server was not started with --allow-code"):
        _check(workspace, job_policy(workspace, server_allows_code=False, admin=True), **remote)
    with pytest.raises(CodeNotAllowed, match="model.trust_remote_code: .* needs an admin's token"):
        _check(workspace, job_policy(workspace, server_allows_code=True, admin=False), **remote)
    _check(workspace, job_policy(workspace, server_allows_code=True, admin=True), **remote)


def test_output_name_is_a_plain_name_on_the_cli_too(tmp_path: Path) -> None:
    for name in ("../../../../tmp/x", "a/b", ".hidden", "x..y"):
        with pytest.raises(ConfigError, match=r"output.name: .* is not a plain name"):
            load_config_text(yaml.safe_dump({"task": "text-classification", "model": {"source": "m"},
                                             "data": {"train": "t.jsonl"}, "output": {"name": name}}))


# ---- over the API ---------------------------------------------------------------------------------
def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(workspace: Workspace) -> dict[str, str]:
    return {role: create_token(workspace, f"{role}-token", role) for role in ("viewer", "engineer", "admin")}


def test_submission_refusals_and_read_roots_over_the_api(workspace: Workspace, tokens, outside: Path,
                                                         data: Path) -> None:
    engineer, admin = _auth(tokens["engineer"]), _auth(tokens["admin"])
    escape = _config(workspace, data={"train": str(outside / "train.jsonl")})
    with TestClient(create_app(workspace.root, run_jobs=False)) as client:
        refused = client.post("/v1/jobs", json={"config": escape}, headers=engineer)
        assert refused.status_code == 422 and refused.json()["detail"].startswith("data.train: ")
        assert "tunelab data add" in refused.json()["fix"]
        remote = _config(workspace, model={"trust_remote_code": True})
        for who in (engineer, admin):  # no --allow-code: nobody may
            answer = client.post("/v1/jobs", json={"config": remote}, headers=who)
            assert answer.status_code == 403 and "--allow-code" in answer.json()["detail"]
        named = client.post("/v1/jobs", json={"config": _config(workspace, output={"name": "../../x"})},
                            headers=engineer)
        assert named.status_code == 422 and "output.name" in named.json()["detail"]
        assert "tunelab-submit" not in named.text and "/tmp" not in named.json()["detail"]

        # the admin widens what jobs may read; engineers may not, and the change is audited
        body = {"read_roots": [str(outside)]}
        assert client.put("/v1/server/settings", json=body, headers=engineer).status_code == 403
        assert client.put("/v1/server/settings", json={"read_roots": ["relative/path"]}, headers=admin
                          ).status_code == 422
        assert client.put("/v1/server/settings", json=body, headers=admin).json()["read_roots"] == [
            str(outside.resolve())]
        accepted = client.post("/v1/jobs", json={"config": escape}, headers=engineer)
        assert accepted.status_code == 201
        assert queue.get(workspace, accepted.json()["id"]).policy["read_roots"] == [str(outside.resolve())]
        # read roots are for reading: output.dir still may not go there
        write_out = _config(workspace, output={"dir": str(outside / "runs")})
        assert client.post("/v1/jobs", json={"config": write_out}, headers=engineer).status_code == 422
    with workspace.read() as session:
        changes = audit_mod.query(session, action="server.read_roots")
        assert [(e.actor, json.loads(e.details)["after"]) for e in changes] == [
            ("token:admin-token", [str(outside.resolve())])]

    with TestClient(create_app(workspace.root, run_jobs=False, allow_code=True)) as client:
        assert client.post("/v1/jobs", json={"config": remote}, headers=engineer).status_code == 403
        granted = client.post("/v1/jobs", json={"config": remote}, headers=admin)
        assert granted.status_code == 201 and queue.get(workspace, granted.json()["id"]).policy["allow_code"]


@pytest.mark.slow
def test_a_link_planted_after_submission_stops_the_job(workspace: Workspace, tokens, outside: Path,
                                                       data: Path) -> None:
    """The job's own process checks the policy again before reading: a file swapped for a link to
    outside the workspace while the job waited in the queue fails the job, and nothing is trained."""
    app = create_app(workspace.root, run_jobs=False)
    with TestClient(app) as client:
        job = client.post("/v1/jobs", json={"config": _config(workspace)}, headers=_auth(tokens["engineer"]))
        assert job.status_code == 201
    data.unlink()
    os.symlink(outside / "train.jsonl", data)
    app = create_app(workspace.root, run_jobs=True)
    app.state.runner.poll_seconds = 0.2
    with TestClient(app):
        deadline = time.monotonic() + 120
        while (state := queue.get(workspace, job.json()["id"])).status not in queue.TERMINAL:
            assert time.monotonic() < deadline
            time.sleep(0.3)
    assert state.status == "failed" and state.error.startswith("data.train: 'data/train.jsonl' is outside")
    assert state.run_id is None  # refused before any run folder existed


def test_a_grpo_reward_function_is_code_and_its_file_is_confined(workspace: Workspace, outside: Path) -> None:
    """A `function` reward runs a Python file: it needs the code permission, and the file (like a JSON
    schema file) must be inside the workspace."""
    def grpo(path: str, schema: str = "schema.json") -> dict:
        return {"name": "grpo", "allow_code": True, "rewards": [{"name": "function", "path": f"{path}:score"},
                                                                {"name": "json_schema", "schema": schema}]}

    sections = {"task": "causal-lm"}
    body = yaml.safe_load(_config(workspace)) | sections | {"model": {"source": "tiny-random-llama"}}
    body["objective"] = grpo("rewards.py")
    with pytest.raises(CodeNotAllowed, match="objective.allow_code: server jobs may not run code"):
        check_job_config(load_config_text(yaml.safe_dump(body)), JobPolicy(workspace.root))
    body["objective"] = grpo(str(outside / "rewards.py"), str(outside / "schema.json"))
    with pytest.raises(ConfinementError, match=r"objective.rewards\[0\].path: .* is outside the workspace.*"
                                               r"objective.rewards\[1\].schema: .* is outside the workspace"):
        check_job_config(load_config_text(yaml.safe_dump(body)), JobPolicy(workspace.root, allow_code=True))
    body["objective"] = grpo("rewards.py")
    check_job_config(load_config_text(yaml.safe_dump(body)), JobPolicy(workspace.root, allow_code=True))
