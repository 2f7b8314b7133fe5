"""`tunelab mcp`: the workspace as an MCP server (the official `mcp` SDK's MCPServer), for the user's own agent.

The same workspace, roles, audit trail and job rules as the REST API:

- over streamable HTTP (mounted at /mcp by `tunelab serve`) every request carries the API's bearer
  token; `mount_http` refuses a request without a valid one (401) before the SDK sees it, and each
  tool call checks the token's role again, so a viewer reads and cannot submit, and promotion to
  production is admin-only and gated;
- over stdio (`tunelab mcp`, started by a local agent) the caller is the OS user, as on the CLI,
  with the admin role; its jobs are still confined like server jobs (workspace paths only, no user
  code without `--allow-code`).

Every tool call is an audit entry (`mcp.<tool>`, outcome ok / refused / error) under the caller's
identity, with the arguments summarised (long text such as a config is recorded by sha256 and
length, never whole). Results are compact JSON with bounded sizes: a run's summary, not its files.
A TunelabError becomes a tool error with the one line the CLI prints.
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import inspect
import json
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import UserMessage

import tunelab
from tunelab.errors import RunError, TunelabError
from tunelab.runs.folder import read_json_object
from tunelab.server.auth import ANONYMOUS, actor_of
from tunelab.server.routes.uploads import check_version
from tunelab.workspace import Workspace, registry
from tunelab.workspace import jobs as queue
from tunelab.workspace.audit import ACTOR
from tunelab.workspace.confine import job_policy
from tunelab.workspace.datasets import get_version, list_versions, usage, version_dict
from tunelab.workspace.lineage import get_run, recent_runs
from tunelab.workspace.tokens import Principal, role_allows, verify_token

MAX_ITEMS = 100  # longest list in a result
MAX_TEXT = 4000  # longest string in a result
AUDITED_TEXT = 200  # arguments longer than this are audited by sha256 and length
WATCH_LIMIT_S = 600  # the longest one watch_job call waits
INSTRUCTIONS = (
    "tunelab fine-tuning workspace. Typical loop: list_datasets -> validate_config -> submit_job -> "
    "watch_job -> get_run / diagnose_run -> submit the proposed overrides as the next job -> compare_runs "
    "-> register_model. Promotion goes through the run's gates and, for production, an admin."
)


@dataclass(frozen=True)
class Caller:
    """Who is calling a tool: their role and the identity the audit trail records."""

    role: str
    actor: str


CallerOf = Callable[[Context], Caller]


def local_caller(_ctx: Context) -> Caller:
    """stdio: the OS user who started `tunelab mcp`, as on the command line."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Caller("admin", f"os:{user}")


def token_caller(ws: Workspace, allow_anonymous: bool) -> CallerOf:
    """HTTP: the bearer token of the request the tool call came in (its headers)."""

    def caller_of(ctx: Context) -> Caller:
        header = (ctx.headers or {}).get("authorization")
        principal = principal_from_header(ws, header, allow_anonymous)
        if principal is None:  # mount_http refused such requests already; this is the second lock
            raise ToolError("missing or invalid token: send 'Authorization: Bearer <token>'")
        return Caller(principal.role, actor_of(principal))

    return caller_of


def principal_from_header(ws: Workspace, header: str | None, allow_anonymous: bool) -> Principal | None:
    if header is None:
        return ANONYMOUS if allow_anonymous else None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return verify_token(ws, token.strip())


def build_server(ws: Workspace, caller_of: CallerOf, *, allow_code: bool = False) -> MCPServer:
    """The MCP server over `ws`: its tools, resources and prompts, each call authorized by `caller_of`."""
    # WARNING: the SDK configures the root logger with this level; its INFO lines (each failed tool call)
    # would otherwise join every log of the process. Tool failures are in the audit trail.
    server = MCPServer("tunelab", version=tunelab.__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    tool = _registrar(server, ws, caller_of)

    _data_tools(tool, ws, allow_code)
    _config_tools(tool, ws, allow_code)
    _job_tools(tool, ws, allow_code)
    _run_tools(tool, ws, allow_code)
    _registry_tools(tool, ws, allow_code)
    _autopilot_tools(tool, ws, allow_code)
    _resources(server, ws, caller_of)
    _prompts(server)
    return server


def _data_tools(tool: Callable[[str], Callable[..., Any]], ws: Workspace, allow_code: bool) -> None:
    """Tools over dataset versions and their checks."""

    @tool("viewer")
    def list_datasets(name: str | None = None) -> dict[str, Any]:
        """Dataset versions in the workspace (NAME@vN, sha256, files, rows), newest first; `name` filters."""
        return {"datasets": list_versions(ws, name)}

    @tool("viewer")
    def show_dataset(ref: str) -> dict[str, Any]:
        """One dataset version (NAME@vN or NAME@latest) and the runs that used it."""
        with ws.read() as session:
            version = get_version(session, ref)
            return version_dict(version) | usage(session, version)

    @tool("engineer")
    def check_data(ref: str, label_column: str | None = None) -> dict[str, Any]:
        """Run the data checks (schema, duplicates, leakage, labels, lengths, encoding, PII) on a dataset
        version and record them; `passed: false` is a finding, not an error."""
        return _bounded(check_version(ws, ref, label_column))


def _config_tools(tool: Callable[[str], Callable[..., Any]], ws: Workspace, allow_code: bool) -> None:
    """Tools that check a config before anything runs."""

    @tool("viewer")
    def validate_config(config: str, overrides: list[str] | None = None) -> dict[str, Any]:
        """Validate a YAML config (and dotted overrides) exactly as a submitted job is validated, including
        what server jobs may read; the error is the one line `tunelab train` prints."""
        checked = queue.validate_submission(config, list(overrides or []), _policy(ws, allow_code))
        return {"valid": True, "task": checked.task, "model": checked.model.source, "method": checked.method.name,
                "objective": checked.objective.name if checked.objective else None,
                "data": checked.data.split_paths()}

    @tool("viewer")
    def preview_loss_mask(config: str, overrides: list[str] | None = None, samples: int = 3) -> dict[str, Any]:
        """The first training samples of a causal-lm config token by token, marking which tokens carry loss
        (what `tunelab data preview` shows); runs the same pre-flight checks as training."""
        from tunelab.recipes.preview import preview

        checked = queue.validate_submission(config, list(overrides or []), _policy(ws, allow_code))
        shown, info = preview(checked, min(max(samples, 1), 10))
        return {"samples": [{"where": s.where, "text": "".join(p for p, _ in s.pieces),
                             "trained": "".join(p for p, trained in s.pieces if trained)} for s in shown],
                "stats": {k: v for k, v in info.items() if k in ("rows", "trained_tokens", "dropped", "template")}}


def _job_tools(tool: Callable[[str], Callable[..., Any]], ws: Workspace, allow_code: bool) -> None:
    """Tools that submit, follow and cancel training jobs."""

    @tool("engineer")
    def submit_job(config: str, overrides: list[str] | None = None, processes: int = 1) -> dict[str, Any]:
        """Queue a training job (the YAML config as a file holds it; data are workspace paths or dataset
        versions NAME@vN). Returns the job; follow it with watch_job."""
        caller = _CALLER.get()
        policy = job_policy(ws, server_allows_code=allow_code, admin=caller.role == "admin")
        return queue.job_dict(queue.submit(ws, config, list(overrides or []), policy=policy,
                                           processes=min(max(processes, 1), 64)))

    @tool("viewer")
    def list_jobs(status: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Recent jobs, newest first (`status`: queued, running, succeeded, failed, cancelled)."""
        return {"jobs": [queue.job_dict(j) for j in queue.list_jobs(ws, status=status, limit=_limit(limit))]}

    @tool("viewer")
    def get_job(job_id: int) -> dict[str, Any]:
        """A job's status, its run, and the last metrics line it wrote."""
        return _job_state(ws, job_id)

    @tool("viewer")
    async def watch_job(job_id: int, ctx: Context, timeout_s: float = 300) -> dict[str, Any]:
        """Wait until the job ends or `timeout_s` passes (at most 600 s), reporting progress (the step
        reached); returns the job, and its run's summary once it has one."""
        deadline = time.monotonic() + min(max(timeout_s, 0), WATCH_LIMIT_S)
        while True:
            state = await anyio.to_thread.run_sync(_job_state, ws, job_id)
            latest = state.get("latest") or {}
            if "step" in latest:
                await ctx.report_progress(float(latest["step"]), None, f"step {latest['step']}")
            if state["status"] in queue.TERMINAL or time.monotonic() >= deadline:
                break
            await anyio.sleep(1.0)
        if state.get("run_id") and state["status"] in queue.TERMINAL:
            state["run"] = await anyio.to_thread.run_sync(_run_summary, ws, state["run_id"])
        state["finished"] = state["status"] in queue.TERMINAL
        return state

    @tool("engineer")
    def cancel_job(job_id: int) -> dict[str, Any]:
        """Cancel a queued or running job (a running one is stopped; its run is marked interrupted)."""
        return queue.job_dict(queue.request_cancel(ws, job_id))


def _run_tools(tool: Callable[[str], Callable[..., Any]], ws: Workspace, allow_code: bool) -> None:
    """Tools that read runs: summary, curves, evaluation, diagnosis, comparison."""

    @tool("viewer")
    def list_runs(status: str | None = None, limit: int = 20) -> dict[str, Any]:
        """Recent runs, newest first, with their validation/test headline metrics and gate verdicts."""
        with ws.read() as session:
            rows = recent_runs(session, status=status, limit=_limit(limit))
            return {"runs": [{"id": r.id, "status": r.status, "task": r.task, "ended_at": r.ended_at,
                              "created_by": r.created_by, "gates_passed": (r.gates or {}).get("passed"),
                              "validation": _headline((r.metrics or {}).get("validation")),
                              "test": _headline((r.metrics or {}).get("test"))} for r in rows]}

    @tool("viewer")
    def get_run(run_id: str) -> dict[str, Any]:
        """A run's summary: status, task, model, method, headline metrics, base vs tuned, forgetting, gates,
        and its diagnosis (finding ids and the proposed next experiment)."""
        return _run_summary(ws, run_id)

    @tool("viewer")
    def get_run_metrics(run_id: str, last: int = 50) -> dict[str, Any]:
        """The last `last` lines of the run's metrics.jsonl (training steps and evaluations), at most 100."""
        path = _run_folder(ws, run_id) / "metrics.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
        rows = [json.loads(line) for line in lines[-_limit(last):] if line.strip()]
        return {"run": run_id, "lines": len(lines), "metrics": rows}

    @tool("viewer")
    def get_run_eval(run_id: str) -> dict[str, Any]:
        """The run's eval.json: validation, test, base and gain, retention, gates, warnings (per-class
        tables and confusion matrices are left out; the report has them)."""
        path = _run_folder(ws, run_id) / "eval.json"
        if not path.is_file():
            raise RunError(f"run {run_id} has no eval.json", fix="wait until it has finished")
        return _bounded(_without_tables(json.loads(path.read_text(encoding="utf-8"))))

    @tool("viewer")
    def diagnose_run(run_id: str) -> dict[str, Any]:
        """`tunelab diagnose`: findings (overfitting, underfitting, divergence, forgetting, data problems),
        each with evidence and a proposed change as dotted overrides, and the next experiment."""
        from tunelab.recipes.diagnose import diagnose_run as diagnose

        return _bounded(diagnose(_run_folder(ws, run_id)))

    @tool("viewer")
    def compare_runs(run_ids: list[str], metric: str | None = None) -> dict[str, Any]:
        """Runs side by side on one metric (default: the first run's eval.metric) and the config keys
        that differ between them."""
        from tunelab.report import compare, load_run

        if len(run_ids) < 2:
            raise TunelabError(f"compare needs at least two runs, got {len(run_ids)}", fix="pass two or more run ids")
        runs = [load_run(_run_folder(ws, run_id)) for run_id in run_ids[:MAX_ITEMS]]
        chosen = compare.pick_metric(runs, metric)
        return {"metric": chosen, "runs": [compare.row(run, chosen) for run in runs],
                "differing": [{"key": key, "values": values} for key, values in compare.config_diff(runs)]}


def _registry_tools(tool: Callable[[str], Callable[..., Any]], ws: Workspace, allow_code: bool) -> None:
    """Tools over the model registry (promotion stays gated)."""

    @tool("viewer")
    def list_models() -> dict[str, Any]:
        """Registered models with their versions and stages."""
        return {"models": registry.list_models(ws)}

    @tool("engineer")
    def register_model(run_id: str, name: str, note: str | None = None) -> dict[str, Any]:
        """Register a succeeded run as a new candidate version of model `name` (artifacts re-verified)."""
        version = registry.register(ws, run_id, name, note=note)
        return registry.show(ws, f"{name}@v{version.version}")

    @tool("engineer")
    def promote_model(ref: str, to: str, reason: str | None = None) -> dict[str, Any]:
        """Promote NAME@vN to staging, production or archived. The run's promotion gates decide; who may
        promote is its policy too (production: admin by default). Refused gates are a result, not an error."""
        caller = _CALLER.get()
        with ws.read() as session:
            policy = registry.run_policy(registry.resolve_model_ref(session, ref).run)
        needed = policy.production_role if to == "production" else policy.staging_role
        if not role_allows(caller.role, needed):
            raise ToolError(f"promoting to {to} needs the {needed} role (the run's governance.promotion); "
                            f"{caller.actor} has the {caller.role} role")
        result = registry.promote(ws, ref, to, reason=reason)
        return {"ref": result.ref, "from": result.from_stage, "to": result.to_stage, "passed": result.passed,
                "checks": result.checks, "archived": result.archived}


def _autopilot_tools(tool: Callable[[str], Callable[..., Any]], ws: Workspace, allow_code: bool) -> None:
    """Tools that plan, approve and follow autopilots."""

    @tool("engineer")
    def start_autopilot(goal: str, config: str) -> dict[str, Any]:
        """Plan an autopilot: `goal` is the goal file's YAML (target, budget, knobs), `config` the base
        training config's YAML. Returns the plan; nothing trains until approve_autopilot."""
        from tunelab.server.routes.autopilots import plan_submission

        return _bounded(plan_submission(ws, _CALLER.get(), goal, config))

    @tool("viewer")
    def get_autopilot(autopilot_id: str) -> dict[str, Any]:
        """An autopilot's status, plan, steps (overrides, why, metric) and, once finished, its best run."""
        from tunelab.recipes import autopilot as recipe

        return _bounded(recipe.describe(recipe.autopilot_folder(ws, autopilot_id)))

    @tool("engineer")
    def approve_autopilot(autopilot_id: str) -> dict[str, Any]:
        """Approve a planned autopilot: it is queued as one job (follow it with watch_job)."""
        from tunelab.server.routes.autopilots import decide_and_queue

        return _bounded(decide_and_queue(ws, autopilot_id, _CALLER.get(), approved=True))

    @tool("engineer")
    def reject_autopilot(autopilot_id: str) -> dict[str, Any]:
        """Reject a planned autopilot: nothing of it runs."""
        from tunelab.server.routes.autopilots import decide_and_queue

        return _bounded(decide_and_queue(ws, autopilot_id, _CALLER.get(), approved=False))


# ---- registration: roles, audit, errors ------------------------------------------------------
#: the caller of the tool call running in this context (set by the registrar's wrapper)
_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("tunelab_mcp_caller")


@contextmanager
def _acting(caller: Caller) -> Iterator[None]:
    """Run as `caller`: what the tool writes is audited under their identity (audit.ACTOR)."""
    tokens = _CALLER.set(caller), ACTOR.set(caller.actor)
    try:
        yield
    finally:
        _CALLER.reset(tokens[0])
        ACTOR.reset(tokens[1])


def _registrar(server: MCPServer, ws: Workspace, caller_of: CallerOf) -> Callable[[str], Callable[..., Any]]:
    """A decorator factory: `@tool("engineer")` registers a function as a tool callable by that role and
    above, every call audited (ok / refused / error), a TunelabError turned into a tool error with the
    CLI's line. The function gets the Context only when it declares a `ctx` parameter."""

    def tool(role: str) -> Callable[..., Any]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            signature = inspect.signature(fn)
            wants_ctx, name = "ctx" in signature.parameters, fn.__name__

            def admit(caller: Caller, summary: dict[str, Any]) -> None:
                if not role_allows(caller.role, role):
                    _audit(ws, name, summary, "refused")
                    raise ToolError(f"{name} needs the {role} role; {caller.actor} has the {caller.role} role")

            if inspect.iscoroutinefunction(fn):
                async def wrapper(ctx: Context, **arguments: Any) -> Any:
                    caller, summary = await anyio.to_thread.run_sync(caller_of, ctx), _audited(arguments)
                    with _acting(caller):  # the threads below run in a copy of this context
                        await anyio.to_thread.run_sync(admit, caller, summary)
                        outcome = "error"
                        try:
                            result = await fn(**arguments, **({"ctx": ctx} if wants_ctx else {}))
                            outcome = "ok"
                            return result
                        except TunelabError as err:
                            raise ToolError(str(err)) from None
                        finally:
                            await anyio.to_thread.run_sync(_audit, ws, name, summary, outcome)
            else:
                def wrapper(ctx: Context, **arguments: Any) -> Any:  # the SDK runs it in a worker thread
                    caller, summary = caller_of(ctx), _audited(arguments)
                    with _acting(caller):
                        admit(caller, summary)
                        outcome = "error"
                        try:
                            result = fn(**arguments, **({"ctx": ctx} if wants_ctx else {}))
                            outcome = "ok"
                            return result
                        except TunelabError as err:
                            raise ToolError(str(err)) from None
                        finally:
                            _audit(ws, name, summary, outcome)

            # The SDK builds the input schema from this signature: the function's own parameters, and
            # the Context it injects (not part of the schema).
            params = [p for p in signature.parameters.values() if p.name != "ctx"]
            params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
            wrapper.__name__ = wrapper.__qualname__ = name
            wrapper.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
            wrapper.__annotations__ = {**typing.get_type_hints(fn), "ctx": Context}
            server.tool(name=name, description=inspect.getdoc(fn))(wrapper)
            return fn

        return register

    return tool


def _audit(ws: Workspace, tool: str, arguments: dict[str, Any], outcome: str) -> None:
    """One audit entry per tool call, under the caller set by `_acting`."""
    with ws.write() as txn:
        txn.audit(f"mcp.{tool}", "mcp_tool", tool, {"arguments": arguments, "outcome": outcome})


def _audited(arguments: dict[str, Any]) -> dict[str, Any]:
    """Arguments as the audit trail keeps them: long text by sha256 and length, so a config's contents
    (which may hold paths or names the workspace should not copy around) are identified, not stored."""
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        if isinstance(value, str) and len(value) > AUDITED_TEXT:
            out[key] = {"sha256": hashlib.sha256(value.encode()).hexdigest(), "chars": len(value)}
        elif isinstance(value, list):
            out[key] = [v if not isinstance(v, str) or len(v) <= AUDITED_TEXT else f"<{len(v)} chars>"
                        for v in value[:MAX_ITEMS]]
        else:
            out[key] = value
    return out


# ---- results ---------------------------------------------------------------------------------
def _policy(ws: Workspace, allow_code: bool) -> Any:
    caller = _CALLER.get()
    return job_policy(ws, server_allows_code=allow_code, admin=caller.role == "admin")


def _limit(value: int) -> int:
    return min(max(int(value), 1), MAX_ITEMS)


def _bounded(value: Any) -> Any:
    """`value` with lists cut at MAX_ITEMS and strings at MAX_TEXT, recursively."""
    if isinstance(value, dict):
        return {k: _bounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bounded(v) for v in value[:MAX_ITEMS]]
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value


def _without_tables(results: dict[str, Any]) -> dict[str, Any]:
    """eval.json without the per-class tables and confusion matrices (the report has them)."""
    out = {}
    for key, value in results.items():
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in ("per_class", "confusion_matrix", "per_label")}
        out[key] = value
    return out


def _headline(metrics: Any) -> dict[str, Any] | None:
    if not isinstance(metrics, dict):
        return None
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _run_folder(ws: Workspace, run_id: str) -> Path:
    with ws.read() as session:
        return Path(get_run(session, run_id).path)


def _job_state(ws: Workspace, job_id: int) -> dict[str, Any]:
    state = queue.job_dict(queue.get(ws, job_id))
    if state.get("run_id"):
        metrics = _run_folder(ws, state["run_id"]) / "metrics.jsonl"
        if metrics.is_file():
            lines = [line for line in metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
            if lines:
                try:
                    state["latest"] = json.loads(lines[-1])
                except ValueError:  # the line being written
                    pass
    return state


def _run_summary(ws: Workspace, run_id: str) -> dict[str, Any]:
    from tunelab.recipes.diagnose import diagnose_run

    with ws.read() as session:
        row = get_run(session, run_id)
        summary: dict[str, Any] = {"id": row.id, "status": row.status, "task": row.task, "path": row.path,
                                   "created_by": row.created_by, "started_at": row.started_at,
                                   "ended_at": row.ended_at, "gates": row.gates}
        metrics = row.metrics or {}
    folder = Path(summary["path"])
    config = _yaml(folder / "config.yaml")
    summary["model"] = (config.get("model") or {}).get("source")
    summary["method"] = {k: v for k, v in (config.get("method") or {}).items() if v is not None}
    summary["metric"] = (config.get("eval") or {}).get("metric")
    for split in ("validation", "test"):
        summary[split] = _headline(metrics.get(split))
    results = read_json_object(folder / "eval.json")
    if results:
        summary["gain"] = results.get("gain")
        summary["forgetting"] = {name: {"metric": e.get("metric"), "forgetting": e.get("forgetting"),
                                        "limit": e.get("limit"), "passed": e.get("passed")}
                                 for name, e in (results.get("retention") or {}).items()}
    if (folder / "run.json").is_file() and summary["status"] in ("succeeded", "failed"):
        diagnosis = diagnose_run(folder, write=False)  # a read: diagnosis.json is left as it is
        summary["diagnosis"] = {"healthy": diagnosis["healthy"], "next": diagnosis["next"],
                                "findings": [{"id": f["id"], "severity": f["severity"], "summary": f["summary"]}
                                             for f in diagnosis["findings"]]}
    return _bounded(summary)


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return value if isinstance(value, dict) else {}


# ---- resources and prompts -------------------------------------------------------------------
def _resources(server: MCPServer, ws: Workspace, caller_of: CallerOf) -> None:
    def readable(ctx: Context) -> None:
        caller = caller_of(ctx)
        if not role_allows(caller.role, "viewer"):
            raise ToolError(f"reading needs the viewer role; {caller.actor} has {caller.role}")

    @server.resource("tunelab://runs/{run_id}", name="run", mime_type="application/json",
                     description="A run's summary: metrics, gates, forgetting, diagnosis.")
    def run_resource(run_id: str, ctx: Context) -> str:
        readable(ctx)
        return json.dumps(_run_summary(ws, run_id), indent=2)

    @server.resource("tunelab://models/{name}/{version}/card", name="model-card", mime_type="text/markdown",
                     description="The model card of a registered version (NAME, vN).")
    def card_resource(name: str, version: str, ctx: Context) -> str:
        readable(ctx)
        with ws.read() as session:
            found = registry.resolve_model_ref(session, f"{name}@{version}")
            return registry.card_text(ws, found)


def _prompts(server: MCPServer) -> None:
    @server.prompt(name="diagnose-run", description="Explain what went wrong or could be better in a run.")
    def diagnose_prompt(run_id: str) -> list[UserMessage]:
        return [UserMessage(
            f"Call diagnose_run for run {run_id}. For each finding, explain the evidence in plain words and "
            "whether you agree with the proposed change; then say which single experiment to run next and "
            "why, as the overrides to pass to submit_job.")]

    @server.prompt(name="improve-run", description="Iterate on a run until a target metric is reached.")
    def improve_prompt(run_id: str, target: str, budget_runs: str = "4") -> list[UserMessage]:
        return [UserMessage(
            f"Improve run {run_id} until {target} on validation, with at most {budget_runs} new runs. Loop: "
            "get_run and diagnose_run; submit_job with the run's config.yaml and the proposed overrides "
            "(or your own, saying why); watch_job; compare_runs against the best so far. Stop at the target "
            "or the budget, then register_model the best run as a candidate and summarise what was tried, "
            "each run's metrics and forgetting, and why the best one won. Never promote: that is a person's call.")]


# ---- streamable HTTP inside `tunelab serve` ----------------------------------------------------
def mount_http(app: Any, ws: Workspace, *, allow_anonymous: bool, allow_code: bool) -> Callable[[], Any]:
    """Add GET/POST/DELETE /mcp (streamable HTTP, stateless: any server process can answer any request)
    to the FastAPI `app`, behind the API's bearer tokens. Returns what the app's lifespan enters: a
    fresh SDK session manager each time (one can run only once, and an app's lifespan may run again)."""
    from mcp.server.transport_security import TransportSecuritySettings
    from starlette.routing import Route

    server = build_server(ws, token_caller(ws, allow_anonymous), allow_code=allow_code)
    # With tokens, a cross-site page cannot call in (it has no token). Without (`serve --no-auth`, the
    # anonymous admin on loopback), DNS-rebinding protection keeps other sites' pages out.
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=allow_anonymous,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", "testserver"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
    guard = _TokenGuard()
    app.router.routes.append(Route("/mcp", endpoint=guard, methods=["GET", "POST", "DELETE"]))

    def sessions() -> Any:
        sdk_app = server.streamable_http_app(streamable_http_path="/mcp", stateless_http=True,
                                             transport_security=security)
        guard.endpoint = next(r.endpoint for r in sdk_app.routes if getattr(r, "path", None) == "/mcp")
        return server.session_manager.run()

    return sessions


class _TokenGuard:
    """The SDK's endpoint behind the API's own authentication (`auth.authenticate`: the same tokens,
    the same `--no-auth` loopback rule, the same 401s), before any MCP message is read. (A class:
    Starlette calls a plain function endpoint with a Request, an object with __call__ as an ASGI app.)"""

    def __init__(self) -> None:
        self.endpoint: Any = None  # the SDK's, set by each lifespan (mount_http)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from fastapi import HTTPException
        from starlette.requests import Request
        from starlette.responses import JSONResponse

        from tunelab.server.auth import authenticate, bearer

        request = Request(scope, receive)
        try:
            await authenticate(request, await bearer(request))
        except HTTPException as err:
            await JSONResponse({"detail": err.detail}, status_code=err.status_code, headers=err.headers)(
                scope, receive, send)
            return
        await self.endpoint(scope, receive, send)
