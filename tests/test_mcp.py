"""`tunelab mcp` and /mcp: the SDK's own client over stdio and over streamable HTTP drives the workspace
under the same roles, audit trail and job rules as the REST API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from conftest import free_port, start_server, stop_server
from tunelab.workspace import Workspace, audit
from tunelab.workspace.tokens import create_token

TOOLS = {"list_datasets", "show_dataset", "check_data", "validate_config", "preview_loss_mask", "submit_job",
         "list_jobs", "get_job", "watch_job", "cancel_job", "list_runs", "get_run", "get_run_metrics",
         "get_run_eval", "diagnose_run", "compare_runs", "list_models", "register_model", "promote_model",
         "start_autopilot", "get_autopilot", "approve_autopilot", "reject_autopilot"}


@pytest.fixture
def database_url():
    """SQLite: the store is tested on both backends in test_workspace.py."""
    return


def result(call) -> dict:
    """A successful tool call's JSON result."""
    assert not call.is_error, call.content[0].text
    return json.loads(call.content[0].text)


def error(call) -> str:
    assert call.is_error, call
    return call.content[0].text


def mcp_audit(ws: Workspace) -> list[dict]:
    with ws.read() as session:
        return [audit.entry_dict(e) for e in audit.query(session, action="mcp.*", limit=1000)]


async def train_and_diagnose(client: Client, config: str) -> dict:
    """Submit a job, watch it to the end, and read its run and diagnosis: what an agent does."""
    job = result(await client.call_tool("submit_job", {"config": config}))
    assert job["status"] == "queued"
    watched = {}
    for _ in range(8):  # each call waits at most 60 s
        watched = result(await client.call_tool("watch_job", {"job_id": job["id"], "timeout_s": 60}))
        if watched["finished"]:
            break
    assert watched["status"] == "succeeded", watched
    run_id = watched["run_id"]
    assert watched["run"]["id"] == run_id and watched["run"]["validation"]["macro_f1"] >= 0
    diagnosis = result(await client.call_tool("diagnose_run", {"run_id": run_id}))
    assert diagnosis["run"] == run_id and isinstance(diagnosis["findings"], list)
    assert watched["run"]["diagnosis"]["healthy"] == diagnosis["healthy"]
    return watched


def test_stdio_a_local_agent_validates_trains_and_reads_the_diagnosis(workspace: Workspace, make_config) -> None:
    config = Path(make_config(train={"epochs": 1})).read_text()
    params = StdioServerParameters(command=sys.executable, args=["-m", "tunelab", "mcp"], cwd=str(workspace.root),
                                   env={**os.environ, "TUNELAB_WORKSPACE": str(workspace.root)})

    async def agent() -> dict:
        async with Client(params, read_timeout_seconds=120) as client:
            listed = await client.list_tools()
            assert {t.name for t in listed.tools} == TOOLS
            # a bad argument is a tool error with the line the CLI prints
            bad = error(await client.call_tool("validate_config", {"config": config.replace("epochs: 1",
                                                                                               "epochs: 0")}))
            assert "submitted config: train.epochs: input should be greater than 0 (got 0)" in bad
            outside = error(await client.call_tool("validate_config", {
                "config": config.replace(str(workspace.root / "data" / "train.jsonl"), "/etc/passwd")}))
            assert "/etc/passwd" in outside and "outside" in outside  # jobs stay confined to the workspace
            checked = result(await client.call_tool("validate_config", {"config": config}))
            assert checked == {**checked, "valid": True, "task": "text-classification", "method": "full"}
            watched = await train_and_diagnose(client, config)
            goal = "target: {metric: macro_f1, at_least: 0.9}\nbudget: {runs: 2}\nknobs: {train.epochs: [1, 2]}\n"
            planned = result(await client.call_tool("start_autopilot", {"goal": goal, "config": config}))
            assert planned["status"] == "planned" and planned["plan"]["first_steps"][0]["step"] == 1
            rejected = result(await client.call_tool("reject_autopilot", {"autopilot_id": planned["id"]}))
            assert rejected["status"] == "rejected" and "job" not in rejected
            prompts = await client.list_prompts()
            assert {p.name for p in prompts.prompts} == {"diagnose-run", "improve-run"}
            run = await client.read_resource(f"tunelab://runs/{watched['run_id']}")
            assert json.loads(run.contents[0].text)["id"] == watched["run_id"]
            return watched

    watched = anyio.run(agent)
    entries = mcp_audit(workspace)
    actions = [e["action"] for e in entries]
    assert {"mcp.validate_config", "mcp.submit_job", "mcp.watch_job", "mcp.diagnose_run"} <= set(actions)
    assert all(e["actor"].startswith("os:") for e in entries)
    refused = [e for e in entries if e["action"] == "mcp.validate_config" and e["details"]["outcome"] == "error"]
    assert len(refused) == 2
    # the config itself is not copied into the audit trail, only identified
    submitted = next(e for e in entries if e["action"] == "mcp.submit_job")
    assert set(submitted["details"]["arguments"]["config"]) == {"sha256", "chars"}
    with workspace.read() as session:
        from tunelab.workspace.lineage import get_run

        assert get_run(session, watched["run_id"]).status == "succeeded"


@pytest.fixture
def served(workspace: Workspace):
    tokens = {role: create_token(workspace, f"{role}-agent", role) for role in ("viewer", "engineer", "admin")}
    port = free_port()
    server = start_server(workspace.root, port)
    try:
        yield f"http://127.0.0.1:{port}/mcp", tokens
    finally:
        stop_server(server)


def http_client(url: str, token: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(120))
    return Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120)


def test_http_same_tokens_roles_and_audit_as_the_api(workspace: Workspace, make_config, served) -> None:
    url, tokens = served
    config = Path(make_config(train={"epochs": 1})).read_text()
    assert httpx.post(url, json={}).status_code == 401  # no token: refused before MCP reads anything
    assert httpx.post(url, json={}, headers={"Authorization": "Bearer tl_nope"}).status_code == 401

    async def agents() -> dict:
        async with http_client(url, tokens["viewer"]) as viewer:
            assert {t.name for t in (await viewer.list_tools()).tools} == TOOLS
            assert result(await viewer.call_tool("list_jobs", {})) == {"jobs": []}
            refused = error(await viewer.call_tool("submit_job", {"config": config}))
            assert "submit_job needs the engineer role; token:viewer-agent has the viewer role" in refused
            refused = error(await viewer.call_tool("start_autopilot", {"goal": "{}", "config": config}))
            assert "start_autopilot needs the engineer role" in refused
        async with http_client(url, tokens["engineer"]) as engineer:
            watched = await train_and_diagnose(engineer, config)
            registered = result(await engineer.call_tool("register_model", {"run_id": watched["run_id"],
                                                                            "name": "topics"}))
            assert registered["stage"] == "candidate"
            refused = error(await engineer.call_tool("promote_model", {"ref": "topics@v1", "to": "production"}))
            assert "needs the admin role" in refused
        async with http_client(url, tokens["admin"]) as admin:
            promoted = result(await admin.call_tool("promote_model", {"ref": "topics@v1", "to": "production"}))
            assert promoted["to"] == "production" and promoted["passed"] is True
        return watched

    watched = anyio.run(agents)
    entries = mcp_audit(workspace)
    by = {(e["actor"], e["action"], e["details"]["outcome"]) for e in entries}
    assert ("token:viewer-agent", "mcp.submit_job", "refused") in by
    assert ("token:engineer-agent", "mcp.submit_job", "ok") in by
    assert ("token:engineer-agent", "mcp.promote_model", "error") in by
    assert ("token:admin-agent", "mcp.promote_model", "ok") in by
    with workspace.read() as session:
        jobs = [audit.entry_dict(e) for e in audit.query(session, action="job.submit")]
        promotions = [audit.entry_dict(e) for e in audit.query(session, action="registry.promote")]
    # the job and the promotion themselves are audited as the tokens that asked, like REST calls
    assert [j["actor"] for j in jobs] == ["token:engineer-agent"]
    assert promotions[-1]["actor"] == "token:admin-agent"
    assert watched["submitted_by"] == "token:engineer-agent"
