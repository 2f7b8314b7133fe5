"""What every peer benchmark shares: each side trains in its own fresh process (so peak RSS is its
own), prints one `RESULT {json}` line, and the parent parses it."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PREFIX = "RESULT "


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    """The hidden flags a script is re-run with to be one side of the comparison."""
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)


def emit(result: dict) -> None:
    """Hand a worker's result to the parent (the last thing a worker prints)."""
    print(PREFIX + json.dumps(result), flush=True)


def run_side(work, settings: dict) -> dict:
    """One side's result in a worker process: `work(settings)` on `settings["threads"]` torch threads,
    with the process's peak RSS so far (taken before any scoring the caller adds after training)."""
    import resource

    import torch

    torch.set_num_threads(settings["threads"])
    result = work(settings)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def measure(script: str, name: str, settings: dict) -> dict:
    """Run `script --worker name` in a fresh process and return its result, plus `process_seconds`
    (start-up, loading and training: the whole process); exit with its output tail if it fails."""
    cmd = [sys.executable, script, "--worker", name, "--settings", json.dumps(settings)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((l for l in proc.stdout.splitlines() if l.startswith(PREFIX)), None)
    if proc.returncode != 0 or line is None:
        sys.exit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    result = json.loads(line[len(PREFIX):])
    result["process_seconds"] = time.perf_counter() - started
    return result
