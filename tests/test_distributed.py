"""The same loop under `accelerate launch` with 2 CPU processes (gloo) matches one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_causal_lm import lm_config  # noqa: F401  (fixture)
from tunelab.config import load_config
from tunelab.recipes.train import train


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "split" not in json.loads(line)]


def launch_two(path: Path, name: str) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(free_port()), "-m", "tunelab", "--quiet", "train", str(path),
              f"output.name={name}"]
    return subprocess.run(launch, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_two_processes_match_one(make_config, tmp_path):
    # batch 5 splits 3/2 across the processes, and the epoch (96 rows, 10 steps) ends with a 1-row batch
    # that leaves one process empty: the global loss normalisation must still be exact.
    body = {"max_steps": 10, "batch_size": 5, "gradient_accumulation_steps": 2, "learning_rate": 1e-2}
    path = make_config("dist", train=body, model={"dropout": 0.0})
    single = train(load_config(path, ["output.name=single"]))
    result = launch_two(path, "double")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [p for p in single.run.path.parent.iterdir() if p.name.startswith("double")]
    assert len(runs) == 1, "every process must write into one run folder"
    record = json.loads((runs[0] / "run.json").read_text())
    assert record["processes"] == 2 and record["status"] == "succeeded"
    assert losses(runs[0]) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)
    assert (runs[0] / "model" / "model.safetensors").is_file()


@pytest.mark.slow
def test_two_processes_match_one_for_a_packed_causal_lm(lm_config):
    """Rows hold different numbers of trained tokens; normalising by the global trained-token count
    keeps 2 processes equal to 1 (batch 3 splits 2/1)."""
    path = lm_config("dist-lm", train={"max_steps": 4, "batch_size": 3}, lm={"packing": True},
                     eval={"base": False, "generate_samples": 0})
    single = train(load_config(path, ["output.name=single"]))
    result = launch_two(path, "double")
    assert result.returncode == 0, result.stderr[-3000:]
    double = next(p for p in single.run.path.parent.iterdir() if p.name.startswith("double"))
    assert losses(double) == pytest.approx(losses(single.run.path), rel=1e-5, abs=1e-6)
