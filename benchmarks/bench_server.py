"""Load on the workspace server (`tunelab serve`): latency under concurrent polling while jobs train, and
no job lost or run twice when the server is SIGKILLed with a full queue. Numbers are printed, never
asserted (this is not a test).

1. Polling: N clients (default 50) each loop for D seconds (default 60): GET /v1/jobs/{id} (a job's
   status) and GET /v1/runs (the run list), while tiny jobs train in the background. Reported:
   requests, requests/s, p50/p95/p99/max latency per route, errors (non-2xx or transport errors).
2. Crash: queue J tiny jobs (default 100), SIGKILL the server once about a third have ended, start it
   again, wait until every job is terminal. Reported: jobs per final status, orphans failed with the
   reason, jobs started more than once (must be 0), jobs never ending (must be 0), runs recorded per
   succeeded job (must be 1).

    python benchmarks/bench_server.py                       # 50 clients x 60 s; 100 jobs with a SIGKILL
    python benchmarks/bench_server.py --clients 20 --duration 20 --jobs 20 --slots 2   # quicker

Tiny jobs: tiny-random-bert on 96 synthetic rows, one epoch (a few seconds, mostly process start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import yaml

TOPICS = {"sport": ["goal", "match", "team", "coach"], "tech": ["chip", "cloud", "robot", "code"],
          "politics": ["vote", "party", "law", "tax"]}


# ---- the workspace and the server -------------------------------------------------------------------
def make_workspace(root: Path) -> tuple[str, str]:
    """A workspace with tiny training data; returns (engineer token, the tiny job's config YAML)."""
    from tunelab.workspace import Workspace
    from tunelab.workspace.tokens import create_token

    ws = Workspace.init(root)
    rng = random.Random(0)
    for split, n in (("train", 96), ("validation", 24), ("test", 24)):
        rows = []
        for i in range(n):
            label = list(TOPICS)[i % 3]
            rows.append({"text": " ".join(rng.choices(TOPICS[label], k=5)), "label": label})
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"task": "text-classification", "model": {"source": "tiny-random-bert"},
              "data": {s: f"data/{s}.jsonl" for s in ("train", "validation", "test")},
              "train": {"epochs": 1, "batch_size": 16, "max_length": 32, "num_threads": 1},
              "eval": {"base": False}}
    token = create_token(ws, "bench", "engineer")
    ws.close()
    return token, yaml.safe_dump(config)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(root: Path, port: int, slots: int) -> subprocess.Popen:
    env = {**os.environ, "TUNELAB_WORKSPACE": str(root)}
    with open(root / f"serve-{time.time():.0f}.log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen([sys.executable, "-m", "tunelab", "serve", "--port", str(port),
                                    "--jobs", str(slots)], cwd=root, env=env, stdout=subprocess.DEVNULL,
                                   stderr=log, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    sys.exit("the server did not start")


def stop_server(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    process.wait(timeout=120)


# ---- part 1: polling latency ------------------------------------------------------------------------
def poll(base: str, token: str, clients: int, duration: float, job_ids: list[int]) -> dict:
    latencies: dict[str, list[float]] = {"GET /v1/jobs/{id}": [], "GET /v1/runs": []}
    errors: Counter = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            i = index
            while time.monotonic() < stop_at:
                route, url = (("GET /v1/jobs/{id}", f"/v1/jobs/{job_ids[i % len(job_ids)]}") if i % 2 == 0
                              else ("GET /v1/runs", "/v1/runs?limit=50"))
                started = time.perf_counter()
                try:
                    ok = http.get(url).status_code == 200
                except httpx.TransportError as err:
                    ok, route_error = False, type(err).__name__
                else:
                    route_error = "status"
                elapsed = time.perf_counter() - started
                with lock:
                    latencies[route].append(elapsed)
                    if not ok:
                        errors[f"{route}: {route_error}"] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "seconds": round(wall, 1), "errors": dict(errors),
            "routes": {route: _stats(values, wall) for route, values in latencies.items()}}


def _stats(values: list[float], wall: float) -> dict:
    if not values:
        return {"requests": 0}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {"requests": len(values), "per_second": round(len(values) / wall, 1),
            "p50_ms": round(1000 * statistics.median(ordered), 1), "p95_ms": pct(0.95), "p99_ms": pct(0.99),
            "max_ms": round(1000 * ordered[-1], 1)}


# ---- part 2: SIGKILL with a full queue --------------------------------------------------------------
def crash(root: Path, token: str, config: str, jobs: int, slots: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    server = start_server(root, port, slots)
    ids = [httpx.post(f"{base}/v1/jobs", json={"config": config}, headers=headers, timeout=30).json()["id"]
           for _ in range(jobs)]
    started = time.perf_counter()
    while _count_terminal(base, headers, ids) < jobs // 3:
        time.sleep(0.5)
    done_before = _count_terminal(base, headers, ids)
    stop_server(server, signal.SIGKILL)
    killed_at = time.perf_counter() - started
    server = start_server(root, port, slots)
    try:
        deadline = time.monotonic() + 60 * 60
        while _count_terminal(base, headers, ids) < jobs and time.monotonic() < deadline:
            time.sleep(1.0)
        final = {j["id"]: j for j in httpx.get(f"{base}/v1/jobs", params={"limit": jobs + 10}, headers=headers,
                                                 timeout=30).json()}
    finally:
        stop_server(server)
    return {"jobs": jobs, "slots": slots, "terminal_before_kill": done_before, "killed_after_s": round(killed_at, 1),
            "total_s": round(time.perf_counter() - started, 1), **_audit_counts(root, ids, final)}


def _count_terminal(base: str, headers: dict, ids: list[int]) -> int:
    jobs = httpx.get(f"{base}/v1/jobs", params={"limit": len(ids) + 10}, headers=headers, timeout=30).json()
    return sum(j["status"] in ("succeeded", "failed", "cancelled") for j in jobs if j["id"] in set(ids))


def _audit_counts(root: Path, ids: list[int], final: dict) -> dict:
    from sqlalchemy import select

    from tunelab.workspace import Workspace, audit
    from tunelab.workspace.orm import Run

    ws = Workspace.open(root)
    with ws.read() as session:
        starts = Counter(e.object_id for e in audit.query(session, action="job.start"))
        ends = Counter(e.object_id for e in audit.query(session, action="job.end"))
        runs = Counter(r.id for r in session.execute(select(Run)).scalars())
        chain_ok = audit.verify(session).ok
    statuses = Counter(final[i]["status"] for i in ids if i in final)
    succeeded_runs = [final[i]["run_id"] for i in ids if final.get(i, {}).get("status") == "succeeded"]
    return {"statuses": dict(statuses), "missing": sum(i not in final for i in ids),
            "not_terminal": sum(final.get(i, {}).get("status") not in ("succeeded", "failed", "cancelled")
                                for i in ids),
            "orphans_failed": sum((final[i].get("error") or "").startswith("orphaned") for i in ids if i in final),
            "started_more_than_once": sum(n > 1 for n in starts.values()),
            "ended_more_than_once": sum(n > 1 for n in ends.values()),
            "succeeded_without_run": sum(r is None or r not in runs for r in succeeded_runs),
            "audit_chain_intact": chain_ok}


# ---- main -------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--slots", type=int, default=1, help="Jobs the server runs at once.")
    parser.add_argument("--part", choices=("all", "poll", "crash"), default="all")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory(prefix="tunelab-bench-server-") as tmp:
        root = Path(tmp)
        token, config = make_workspace(root)
        if args.part in ("all", "poll"):
            port = free_port()
            server = start_server(root, port, args.slots)
            base = f"http://127.0.0.1:{port}"
            headers = {"Authorization": f"Bearer {token}"}
            ids = [httpx.post(f"{base}/v1/jobs", json={"config": config}, headers=headers).json()["id"]
                   for _ in range(max(4, args.slots * 3))]
            try:
                result["poll"] = poll(base, token, args.clients, args.duration, ids)
                result["poll"]["jobs_ended_during"] = _count_terminal(base, headers, ids)
            finally:
                stop_server(server)
        if args.part in ("all", "crash"):
            result["crash"] = crash(root, token, config, args.jobs, args.slots)
    _print(result)
    print("raw:", json.dumps(result))


def _print(result: dict) -> None:
    if "poll" in result:
        p = result["poll"]
        print(f"\n== {p['clients']} clients polling for {p['seconds']} s while jobs train "
              f"({p['jobs_ended_during']} jobs ended meanwhile)")
        print(f"{'route':<22}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for route, s in p["routes"].items():
            print(f"{route:<22}{s['requests']:>10}{s.get('per_second', 0):>9}{s.get('p50_ms', 0):>9}"
                  f"{s.get('p95_ms', 0):>9}{s.get('p99_ms', 0):>9}{s.get('max_ms', 0):>9}")
        print(f"errors: {p['errors'] or 'none'}")
    if "crash" in result:
        c = result["crash"]
        print(f"\n== {c['jobs']} queued jobs ({c['slots']} slot(s)), server SIGKILLed after {c['killed_after_s']} s "
              f"({c['terminal_before_kill']} ended by then); all done after {c['total_s']} s")
        for key in ("statuses", "missing", "not_terminal", "orphans_failed", "started_more_than_once",
                    "ended_more_than_once", "succeeded_without_run", "audit_chain_intact"):
            print(f"  {key:<24} {c[key]}")


if __name__ == "__main__":
    main()
