"""The workspace server: job queue and runner, the API with token roles, events, restart after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port, start_server, stop_server
from fastapi.testclient import TestClient

from tunelab.server.app import create_app
from tunelab.workspace import Workspace
from tunelab.workspace import audit as audit_mod
from tunelab.workspace import jobs as queue
from tunelab.workspace.lineage import get_run
from tunelab.workspace.tokens import create_token


@pytest.fixture
def database_url():
    """The server tests run on SQLite (the store is tested on both backends in test_workspace.py)."""
    return


def _tiny_config(make_config, **sections) -> str:
    return Path(make_config(train={"epochs": 1}, **sections)).read_text()


@pytest.fixture
def tokens(workspace: Workspace) -> dict[str, str]:
    return {role: create_token(workspace, f"{role}-token", role) for role in ("viewer", "engineer", "admin")}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_roles_and_job_queue_without_runner(workspace: Workspace, tokens, make_config) -> None:
    app = create_app(workspace.root, run_jobs=False)
    with TestClient(app) as client:
        config = _tiny_config(make_config)
        assert client.get("/v1/jobs").status_code == 401
        assert client.get("/v1/jobs", headers=_auth("tl_00000000_forged")).status_code == 401
        assert client.post("/v1/jobs", json={"config": config}, headers=_auth(tokens["viewer"])).status_code == 403
        bad = client.post("/v1/jobs", json={"config": "task: text-classification\n"},
                          headers=_auth(tokens["engineer"]))
        assert bad.status_code == 422 and "model" in json.dumps(bad.json())
        made = client.post("/v1/jobs", json={"config": config, "overrides": ["train.seed=3"]},
                           headers=_auth(tokens["engineer"]))
        assert made.status_code == 201 and made.json()["status"] == "queued"
        job_id = made.json()["id"]
        listed = client.get("/v1/jobs", headers=_auth(tokens["viewer"])).json()
        assert [j["id"] for j in listed] == [job_id] and listed[0]["submitted_by"] == "token:engineer-token"
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=_auth(tokens["engineer"]))
        assert cancelled.json()["status"] == "cancelled"
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=_auth(tokens["engineer"])).status_code == 422
        assert client.get("/v1/jobs/999", headers=_auth(tokens["viewer"])).status_code == 404
        assert client.get("/v1/audit", headers=_auth(tokens["engineer"])).status_code == 403
        log = client.get("/v1/audit", params={"action": "job.*"}, headers=_auth(tokens["admin"])).json()
        assert [(e["action"], e["actor"]) for e in log] == [("job.submit", "token:engineer-token"),
                                                             ("job.cancel", "token:engineer-token")]
        assert client.get("/openapi.json").status_code == 200


def test_a_job_runs_in_its_own_process_and_streams_events(workspace: Workspace, tokens, make_config) -> None:
    app = create_app(workspace.root, run_jobs=True)
    app.state.runner.poll_seconds = 0.2
    with TestClient(app) as client:
        job_id = client.post("/v1/jobs", json={"config": _tiny_config(make_config)},
                             headers=_auth(tokens["engineer"])).json()["id"]
        kinds, metrics = [], []
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=_auth(tokens["viewer"])) as stream:
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                    kinds.append(kind)
                elif line.startswith("data: ") and kind == "metrics":
                    metrics.append(json.loads(line[len("data: "):]))
        assert kinds[0] == "status" and kinds[-1] == "end" and "metrics" in kinds
        job = client.get(f"/v1/jobs/{job_id}", headers=_auth(tokens["viewer"])).json()
        assert job["status"] == "succeeded", client.get(f"/v1/jobs/{job_id}/log", headers=_auth(tokens["viewer"])).text
        run = client.get(f"/v1/runs/{job['run_id']}", headers=_auth(tokens["viewer"])).json()
        assert run["status"] == "succeeded" and run["created_by"] == "token:engineer-token"
        curve = client.get(f"/v1/runs/{job['run_id']}/metrics", headers=_auth(tokens["viewer"])).json()
        assert [m for m in metrics if "loss" in m] == [m for m in curve if "loss" in m]  # the stream had them all
        assert "accuracy" in client.get(f"/v1/runs/{job['run_id']}/eval", headers=_auth(tokens["viewer"])).json()[
            "test"]
        page = client.get(f"/v1/runs/{job['run_id']}/report", headers=_auth(tokens["viewer"]))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert job["run_id"] in page.text and "<script" not in page.text


def test_a_failing_job_fails_alone_with_its_error(workspace: Workspace, tokens, make_config, tmp_path) -> None:
    app = create_app(workspace.root, run_jobs=True)
    app.state.runner.poll_seconds = 0.2
    with TestClient(app) as client:
        missing = _tiny_config(make_config, data={"train": str(tmp_path / "gone.jsonl")})
        bad = client.post("/v1/jobs", json={"config": missing}, headers=_auth(tokens["engineer"])).json()["id"]
        good = client.post("/v1/jobs", json={"config": _tiny_config(make_config)},
                           headers=_auth(tokens["engineer"])).json()["id"]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            states = {j["id"]: j for j in client.get("/v1/jobs", headers=_auth(tokens["viewer"])).json()}
            if all(states[i]["status"] in queue.TERMINAL for i in (bad, good)):
                break
            time.sleep(0.5)
    assert states[bad]["status"] == "failed" and "gone.jsonl does not exist" in states[bad]["error"]
    assert states[good]["status"] == "succeeded"


# ---- SIGKILL and restart --------------------------------------------------------------------------
@pytest.mark.slow
def test_no_job_is_lost_when_the_server_is_killed(workspace: Workspace, tokens, make_config) -> None:
    """SIGKILL the server while a job trains: after a restart the orphan is failed with the reason (its
    training process ended), the queued jobs run, and every job ends exactly once."""
    config = yaml.safe_load(_tiny_config(make_config))
    config["train"]["epochs"] = 30  # long enough to be killed mid-run
    slow = yaml.safe_dump(config)
    port = free_port()
    server = start_server(workspace.root, port)
    headers = _auth(tokens["engineer"])
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        first = client.post("/v1/jobs", json={"config": slow}, headers=headers).json()["id"]
        rest = [client.post("/v1/jobs", json={"config": _tiny_config(make_config)}, headers=headers).json()["id"]
                for _ in range(2)]
        deadline = time.monotonic() + 120
        while not list((workspace.folder / "jobs" / str(first) / "runs").glob("*/metrics.jsonl")):  # training
            assert time.monotonic() < deadline
            time.sleep(0.3)
        training_pid = queue.get(workspace, first).pid
        stop_server(server, signal.SIGKILL)
        assert queue.get(workspace, first).status == "running"  # the database still says so
        server = start_server(workspace.root, port)
        try:
            deadline = time.monotonic() + 300
            while True:
                jobs = {j["id"]: j for j in client.get("/v1/jobs", headers=headers).json()}
                if all(jobs[i]["status"] in queue.TERMINAL for i in [first, *rest]) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            stop_server(server)
    assert jobs[first]["status"] == "failed" and jobs[first]["error"].startswith("orphaned")
    with workspace.read() as session:  # its run, killed mid-training, is failed too
        assert get_run(session, jobs[first]["run_id"]).status == "failed"
    assert [jobs[i]["status"] for i in rest] == ["succeeded", "succeeded"]
    with pytest.raises(ProcessLookupError):
        os.kill(training_pid, 0)  # the orphan's training process was ended, not left to write half a run
    with workspace.read() as session:
        ends = [e.object_id for e in audit_mod.query(session, action="job.end")]
        starts = [e.object_id for e in audit_mod.query(session, action="job.start")]
        assert audit_mod.verify(session).ok
    assert sorted(ends) == sorted(str(i) for i in [first, *rest]) and sorted(starts) == sorted(ends)


def test_registry_and_datasets_over_the_api(workspace: Workspace, tokens, make_config, text_data) -> None:
    from tunelab.config import load_config
    from tunelab.recipes.train import train
    from tunelab.workspace.datasets import add_version

    add_version(workspace, "topics-train", text_data["train"])
    outcome = train(load_config(make_config(data={"train": "topics-train@v1"}, train={"epochs": 1},
                                            governance={"promotion": {"min_metrics": {"test.accuracy": 0.0}}})))
    app = create_app(workspace.root, run_jobs=False)
    with TestClient(app) as client:
        viewer, engineer, admin = (_auth(tokens[r]) for r in ("viewer", "engineer", "admin"))
        assert client.get("/v1/datasets", headers=viewer).json()[0]["ref"] == "topics-train@v1"
        assert client.get("/v1/datasets/topics-train@v1", headers=viewer).json()["runs"] == [outcome.run.id]
        assert client.post("/v1/registry", json={"run": outcome.run.id, "name": "bot"}, headers=viewer
                           ).status_code == 403
        made = client.post("/v1/registry", json={"run": outcome.run.id, "name": "bot"}, headers=engineer)
        assert made.status_code == 201
        staged = client.post("/v1/registry/bot@v1/promote", json={"to": "staging"}, headers=engineer)
        assert staged.status_code == 200 and staged.json()["passed"]
        assert client.post("/v1/registry/bot@v1/promote", json={"to": "production"}, headers=engineer
                           ).status_code == 403
        live = client.post("/v1/registry/bot@v1/promote", json={"to": "production", "reason": "ok"}, headers=admin)
        assert live.status_code == 200 and {c["name"] for c in live.json()["checks"]} >= {"min_metric:test.accuracy"}
        assert client.get("/v1/registry/bot@production", headers=viewer).status_code == 200
    # the policy decides who may promote: here engineers may take a model to production
    second = train(load_config(make_config(data={"train": "topics-train@v1"}, train={"epochs": 1}, governance={
        "promotion": {"require_data_check": False, "require_pii_clean": False, "production_role": "engineer"}})))
    with TestClient(app) as client:
        client.post("/v1/registry", json={"run": second.run.id, "name": "bot"}, headers=engineer)
        assert client.post("/v1/registry/bot@v2/promote", json={"to": "production"}, headers=engineer
                           ).status_code == 200
        log = client.get("/v1/audit", params={"action": "registry.promote"}, headers=admin).json()
        assert [e["actor"] for e in log] == ["token:engineer-token", "token:admin-token", "token:engineer-token",
                                             "token:engineer-token"]  # v1 -> archived when v2 went live
        assert client.get("/v1/audit/verify", headers=admin).json()["ok"]


def test_cancel_ends_a_running_job_and_its_run_is_interrupted(workspace: Workspace, tokens, make_config) -> None:
    config = yaml.safe_load(_tiny_config(make_config))
    config["train"]["epochs"] = 50
    app = create_app(workspace.root, run_jobs=True)
    app.state.runner.poll_seconds = 0.2
    with TestClient(app) as client:
        headers = _auth(tokens["engineer"])
        job_id = client.post("/v1/jobs", json={"config": yaml.safe_dump(config)}, headers=headers).json()["id"]
        deadline = time.monotonic() + 120
        while not list((workspace.folder / "jobs" / str(job_id) / "runs").glob("*/metrics.jsonl")):
            assert time.monotonic() < deadline, client.get(f"/v1/jobs/{job_id}/log", headers=headers).text
            time.sleep(0.2)
        pid = queue.get(workspace, job_id).pid
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()["cancel_requested"]
        while client.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        run = client.get(f"/v1/runs/{job['run_id']}", headers=headers).json()
    assert job["status"] == "cancelled"
    assert run["status"] == "interrupted"  # SIGTERM ends a run as Ctrl-C does, and the workspace records it
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


def _wait_finished(client: TestClient, job_id: int, token: str, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=_auth(token)).json()
        if job["status"] in queue.TERMINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


@pytest.mark.slow
def test_a_job_asking_for_two_processes_equals_the_one_process_job(workspace: Workspace, tokens, make_config) -> None:
    """`processes: 2` runs the job under `accelerate launch`; its run records 2 processes and its loss
    curve is the 1-process job's (the batch is global, the loss normalised over both processes)."""
    app = create_app(workspace.root, run_jobs=True)
    app.state.runner.poll_seconds = 0.2
    config = _tiny_config(make_config, model={"dropout": 0.0})
    with TestClient(app) as client:
        one = client.post("/v1/jobs", json={"config": config}, headers=_auth(tokens["engineer"])).json()
        two = client.post("/v1/jobs", json={"config": config, "processes": 2}, headers=_auth(tokens["engineer"]))
        assert two.status_code == 201 and two.json()["processes"] == 2
        refused = client.post("/v1/jobs", json={"config": config, "processes": 2,
                                                "overrides": ["distributed.strategy=deepspeed", "train.l2_sp=0.1"]},
                              headers=_auth(tokens["engineer"]))
        assert refused.status_code == 422 and "l2_sp" in json.dumps(refused.json())
        results = {}
        for job in (one, two.json()):
            done = _wait_finished(client, job["id"], tokens["viewer"])
            log = client.get(f"/v1/jobs/{job['id']}/log", headers=_auth(tokens["viewer"])).text
            assert done["status"] == "succeeded", log[-3000:]
            folder = queue.job_folder(workspace, job["id"]) / "runs" / done["run_id"]
            run = json.loads((folder / "run.json").read_text())
            curve = client.get(f"/v1/runs/{done['run_id']}/metrics", headers=_auth(tokens["viewer"])).json()
            results[job["id"]] = (run, [m["loss"] for m in curve if "loss" in m and "split" not in m])
    (run_one, curve_one), (run_two, curve_two) = results.values()
    assert run_two["processes"] == 2 and run_one["processes"] == 1
    assert curve_two == pytest.approx(curve_one, rel=1e-5, abs=1e-6) and len(curve_one) > 3
