"""`tunelab autopilot`: a plan that waits for approval, steps from diagnosis and search kept to the
knobs, lineage naming each step's parent and reason, the best run registered (never promoted), and a
kill -9 in the middle resumed without re-running what finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import synthetic_rows, write_jsonl
from tunelab.autopilot.goal import load_goal
from tunelab.autopilot.planner import merge, within_knobs
from tunelab.errors import ConfigError

KNOBS = {"train.learning_rate": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
         "train.epochs": {"type": "int", "low": 1, "high": 12},
         "method.name": ["full", "freeze", "lora"]}


@pytest.fixture
def database_url():
    """SQLite: the store is tested on both backends in test_workspace.py."""
    return


def goal_file(root: Path, **goal) -> Path:
    """A tiny-random-bert topic classifier that starts underfit (2 epochs at 1e-3) and a goal for it."""
    data = {split: str(write_jsonl(root / "data" / f"{split}.jsonl", synthetic_rows(n, seed=i)))
            for i, (split, n) in enumerate([("train", 96), ("validation", 24), ("test", 24)], 1)}
    (root / "base.yaml").write_text(yaml.safe_dump({
        "task": "text-classification", "model": {"source": "tiny-random-bert"}, "data": data,
        "method": {"name": "full"}, "eval": {"metric": "macro_f1"}, "output": {"dir": str(root / "runs")},
        "train": {"epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "max_length": 64, "seed": 0, "log_every": 1},
    }))
    body = {"base": "base.yaml", "target": {"metric": "macro_f1", "at_least": 0.85}, "budget": {"runs": 5},
            "knobs": KNOBS, "register_as": "topics", **goal}
    path = root / "goal.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def autopilot(root: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"TUNELAB_WORKSPACE": str(root)} if (root / ".tunelab").is_dir() else {})}
    return subprocess.run([sys.executable, "-m", "tunelab", "autopilot", *args], cwd=root, capture_output=True,
                          text=True, env=env, **kwargs)


def folder_of(root: Path) -> Path:
    (found,) = (root / "autopilots").iterdir()
    return found


def test_reaches_the_target_from_the_diagnosis_and_registers_a_candidate(workspace, tmp_path):
    goal = goal_file(tmp_path)
    waiting = autopilot(tmp_path, str(goal))  # stdin is no terminal: the plan waits for approval
    assert waiting.returncode == 1 and "waits for approval" in waiting.stderr
    folder = folder_of(tmp_path)
    assert json.loads((folder / "state.json").read_text())["status"] == "planned"
    assert "1. (the base config) — baseline" in (folder / "plan.md").read_text()
    assert not (folder / "runs").exists()  # nothing trained before approval

    done = autopilot(tmp_path, "--resume", str(folder), "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    steps = summary["steps"]
    # the baseline underfits; its diagnosis proposes 3x the learning rate and twice the epochs, the next
    # one's (still improving) twice the epochs again, which reaches the target
    assert [s["source"] for s in steps] == ["plan", "diagnosis", "diagnosis"]
    assert steps[1]["overrides"] == ["train.learning_rate=0.003", "train.epochs=4"]
    assert steps[1]["reason"].startswith("underfitting in step 1")
    assert steps[2]["overrides"] == ["train.learning_rate=0.003", "train.epochs=8"]
    assert steps[2]["reached"] and summary["stopped"].startswith("target reached by step 3")
    assert summary["best"]["step"] == 3 and summary["best"]["registered"] == "topics@v1"
    assert "reached the target" in summary["best"]["why"]
    # each child's run names its parent and why it was started, in run.json and in the lineage
    with workspace.read() as session:
        from tunelab.workspace.lineage import get_run, run_dict

        record = run_dict(get_run(session, steps[2]["run_id"]))
    assert record["origin"] == {"autopilot": folder.name, "step": 3, "source": "diagnosis",
                                "parent": steps[1]["run_id"], "reason": steps[2]["reason"]}
    assert json.loads((Path(steps[2]["run_path"]) / "run.json").read_text())["origin"] == record["origin"]
    from tunelab.workspace import registry

    assert registry.show(workspace, "topics@v1")["stage"] == "candidate"  # never promoted
    table = (folder / "summary.md").read_text()
    assert f"| 3 | diagnosis | {steps[2]['value']:.4f} ✔ |" in table and "**Best: step 3" in table


def test_a_kill_in_the_middle_resumes_without_rerunning_finished_steps(tmp_path):
    goal = goal_file(tmp_path, target={"metric": "macro_f1", "at_least": 0.99}, budget={"runs": 3})
    process = subprocess.Popen([sys.executable, "-m", "tunelab", "autopilot", str(goal), "--yes"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:  # kill -9 once step 1 has finished and step 2 is training
            assert process.poll() is None and time.monotonic() < deadline
            states = list((tmp_path / "autopilots").glob("*/state.json"))
            steps = json.loads(states[0].read_text())["steps"] if states else []
            if len(steps) >= 2 and steps[0]["status"] == "succeeded" and steps[1]["status"] == "running":
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    folder = folder_of(tmp_path)
    first = json.loads((folder / "state.json").read_text())["steps"][0]
    done = autopilot(tmp_path, "--resume", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    steps = json.loads((folder / "summary.json").read_text())["steps"]
    assert steps[0]["run_id"] == first["run_id"] and steps[0]["seconds"] == first["seconds"]
    assert len(list((folder / "runs").glob("step-01-*"))) == 1  # step 1 never trained again
    assert len(steps) == 3 and all(s["status"] == "succeeded" for s in steps)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stopped"] == "budget spent: 3 of 3 runs" and summary["best"]["registered"] is None


def test_proposals_are_kept_to_the_knobs(tmp_path):
    loaded = load_goal(goal_file(tmp_path))
    # clamped into the range; a setting that is no knob is left out and said so
    assert within_knobs(loaded, ["train.learning_rate=0.5", "train.warmup_ratio=0.1"]) == (
        ["train.learning_rate=0.01"], ["train.warmup_ratio=0.1"])
    # a kind the knobs offer, without the settings it needs (freeze without layers), is refused whole
    assert within_knobs(loaded, ["method.name=freeze", "method.layers=1"]) is None
    assert within_knobs(loaded, ["method.name=dora"]) is None  # not a choice
    assert within_knobs(loaded, ["eval.early_stopping_patience=2"]) is None  # nothing left
    # a new kind drops the parent's settings of the old one
    assert merge(["method.name=lora", "method.r=8", "train.epochs=4"], ["method.name=full"]) == [
        "train.epochs=4", "method.name=full"]


def test_a_bad_goal_is_one_line_and_leaves_nothing(tmp_path):
    goal = goal_file(tmp_path, target={"metric": "rouge", "at_least": 0.5})
    with pytest.raises(ConfigError, match="target.metric: 'rouge' is not a validation metric"):
        load_goal(goal)
    goal = goal_file(tmp_path, target={"metric": "macro_f1", "at_most": 0.5})
    with pytest.raises(ConfigError, match="higher macro_f1 is better, so the bound is at_least"):
        load_goal(goal)
    goal = goal_file(tmp_path, knobs={"train.epochs": {"type": "int", "low": 0, "high": 3}})
    with pytest.raises(ConfigError, match="train.epochs"):
        load_goal(goal)
    failed = autopilot(tmp_path, str(goal))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr and "train.epochs" in failed.stderr
    assert not (tmp_path / "autopilots").exists()


def test_the_server_plans_waits_for_approval_and_runs_the_plan_as_one_job(workspace, tmp_path):
    import httpx

    from conftest import free_port, start_server, stop_server
    from tunelab.workspace.tokens import create_token

    tokens = {role: create_token(workspace, f"{role}-token", role) for role in ("viewer", "engineer")}
    auth = {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}
    goal_file(tmp_path)
    config = (tmp_path / "base.yaml").read_text()
    goal = yaml.safe_dump({"target": {"metric": "macro_f1", "at_least": 0.99}, "budget": {"runs": 2},
                           "knobs": KNOBS})
    port = free_port()
    server = start_server(workspace.root, port)
    url = f"http://127.0.0.1:{port}/v1/autopilots"
    try:
        # a knob whose choice leads out of the workspace is refused like a job naming that model
        outside = yaml.safe_dump({"target": {"metric": "macro_f1", "at_least": 0.9},
                                  "knobs": {"model.source": ["tiny-random-bert", "/etc"]}})
        refused = httpx.post(url, json={"goal": outside, "config": config}, headers=auth["engineer"], timeout=60)
        assert refused.status_code == 422 and "/etc" in refused.json()["detail"]
        assert not list((workspace.folder / "autopilots" / "inputs").glob("*"))  # nothing left of it
        assert httpx.post(url, json={"goal": goal, "config": config}, headers=auth["viewer"]).status_code == 403
        planned = httpx.post(url, json={"goal": goal, "config": config}, headers=auth["engineer"], timeout=120)
        assert planned.status_code == 201, planned.text
        body = planned.json()
        assert body["status"] == "planned" and body["plan"]["first_steps"][0]["step"] == 1
        assert httpx.post(f"{url}/{body['id']}/approve", headers=auth["viewer"]).status_code == 403
        approved = httpx.post(f"{url}/{body['id']}/approve", headers=auth["engineer"]).json()
        assert approved["status"] == "approved" and approved["approved_by"] == "token:engineer-token"
        assert approved["job"]["kind"] == "autopilot" and approved["job"]["autopilot"] == body["id"]
        deadline = time.monotonic() + 300
        while (state := httpx.get(f"{url}/{body['id']}", headers=auth["viewer"]).json())["status"] != "finished":
            assert time.monotonic() < deadline, state
            time.sleep(1)
        assert [s["status"] for s in state["steps"]] == ["succeeded", "succeeded"]
        assert state["stopped"] == "budget spent: 2 of 2 runs" and state["best"]["run"]
        job = httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{approved['job']['id']}", headers=auth["viewer"]).json()
        deadline = time.monotonic() + 60
        while job["status"] == "running" and time.monotonic() < deadline:
            time.sleep(0.5)
            job = httpx.get(f"http://127.0.0.1:{port}/v1/jobs/{job['id']}", headers=auth["viewer"]).json()
        assert job["status"] == "succeeded"
    finally:
        stop_server(server)
    with workspace.read() as session:
        from tunelab.workspace import audit

        actions = [(e.actor, e.action) for e in audit.query(session, action="autopilot.*")]
    assert ("token:engineer-token", "autopilot.approve") in actions


# ---- planner: openai ----------------------------------------------------------------------------
def llm_goal(root: Path, base_url: str, **openai) -> Path:
    return goal_file(root, planner="openai",
                     openai={"base_url": base_url, "model": "planner", "api_key_env": "PLANNER_KEY", **openai})


@pytest.fixture
def endpoint():
    """An OpenAI-compatible endpoint answering each chat request with the next canned reply; it keeps
    the requests (the planner's prompt and headers are checked too)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    replies: list[str] = []
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            answer = json.dumps({"choices": [{"message": {"role": "assistant", "content": replies.pop(0)}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer.encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", replies, seen
    server.shutdown()


def test_the_model_proposes_within_the_knobs_or_the_rules_take_over(tmp_path, endpoint, monkeypatch):
    from tunelab.autopilot.planner import next_step
    from tunelab.autopilot.state import AutopilotState

    url, replies, seen = endpoint
    monkeypatch.setenv("PLANNER_KEY", "sk-test")
    loaded = load_goal(llm_goal(tmp_path, url))
    state = AutopilotState(folder=tmp_path, status="running", created="now")
    replies.append('Sure: {"overrides": ["train.learning_rate=3e-3", "train.epochs=8"], "reason": "more steps"}')
    step = next_step(loaded, state)
    assert step.source == "planner" and step.overrides == ["train.learning_rate=0.003", "train.epochs=8"]
    assert step.reason == "planner: more steps"
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["auth"] == "Bearer sk-test"
    prompt = json.loads(seen[0]["body"]["messages"][1]["content"])
    assert prompt["target"] == "validation macro_f1 >= 0.85" and set(prompt["knobs"]) == set(KNOBS)
    # a setting that is no knob, a value out of range, the same step again, no JSON: the rules decide
    state.steps.append(step)
    for reply, why in [('{"overrides": ["train.warmup_ratio=0.2"]}', "is not one of the knobs"),
                       ('{"overrides": ["train.epochs=40"]}', "must be a number in [1, 12]"),
                       ('{"overrides": ["train.learning_rate=0.003", "train.epochs=8"]}', "was tried already"),
                       ("I would raise the learning rate.", "no JSON object")]:
        replies.append(reply)
        fallback = next_step(loaded, state)
        assert fallback.source == "search" and why in fallback.reason, fallback.reason
        assert fallback.reason.startswith("planner openai fell back to the rules")


@pytest.mark.slow
def test_a_small_model_served_by_tunelab_falls_back_to_the_rules(workspace, tmp_path, monkeypatch):
    """The planner talks to `tunelab serve`'s own chat endpoint; a tiny random model answers no
    proposal, so every step comes from the rules, each saying so."""
    from conftest import free_port, start_server, stop_server
    from tests.test_causal_lm import chat_rows
    from tunelab.config import load_config
    from tunelab.recipes import autopilot as recipe
    from tunelab.recipes.train import train
    from tunelab.workspace import registry
    from tunelab.workspace.tokens import create_token

    lm = tmp_path / "lm.yaml"
    lm.write_text(yaml.safe_dump({
        "task": "causal-lm", "model": {"source": "tiny-random-llama"}, "method": {"name": "lora", "r": 4},
        "data": {"train": str(write_jsonl(tmp_path / "chat.jsonl", chat_rows(24, seed=1)))},
        "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 1e-2, "max_length": 128, "seed": 0},
        "eval": {"base": False, "retention": "none", "generate_samples": 0}, "generation": {"max_new_tokens": 24},
        "governance": {"promotion": {"require_data_check": False, "require_pii_clean": False}},
        "output": {"dir": str(tmp_path / "runs")}}))
    registry.register(workspace, train(load_config(lm)).run.id, "planner")
    assert registry.promote(workspace, "planner@v1", "production").passed
    monkeypatch.setenv("PLANNER_KEY", create_token(workspace, "autopilot", "viewer"))
    port = free_port()
    server = start_server(workspace.root, port)
    try:
        goal = llm_goal(tmp_path, f"http://127.0.0.1:{port}/v1")
        body = yaml.safe_load(goal.read_text())
        body["budget"] = {"runs": 2}
        goal.write_text(yaml.safe_dump(body))
        loaded, state = recipe.plan(goal, tmp_path / "autopilots")
        recipe.decide(state, True)
        summary = recipe.run(loaded, state)
    finally:
        stop_server(server)
    steps = summary["steps"]
    assert [s["status"] for s in steps] == ["succeeded", "succeeded"]
    assert steps[1]["source"] in ("diagnosis", "search")
    assert steps[1]["reason"].startswith("planner openai fell back to the rules: the answer was not a proposal")
