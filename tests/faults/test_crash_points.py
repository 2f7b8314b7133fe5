"""A tiny run or workspace write is killed with SIGKILL exactly where a crash hurts (src/tunelab/faults.py),
in a real `tunelab` process: nothing half-written is served, and resume gives the bit-identical model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunelab.config import load_config

pytestmark = pytest.mark.slow
KILLED = -signal.SIGKILL


def tunelab(*args: str, fault: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TUNELAB_FAULT"}
    if fault:
        env["TUNELAB_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "tunelab", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return {**load_file(run / "adapter" / "adapter_model.safetensors"),
            **{f"merged.{k}": v for k, v in load_file(run / "model" / "model.safetensors").items()}}


def lora_config(make_config, name: str) -> Path:
    return make_config(name, method={"name": "lora", "r": 4, "merge": True},
                       train={"max_steps": 6, "checkpoint_every": 2, "keep_checkpoints": 2})


_uninterrupted: list[Path] = []


def uninterrupted(make_config) -> Path:
    """The same tiny LoRA run, never interrupted, trained once in its own process like the faulted ones
    (the data files of every test have the same bytes)."""
    if not _uninterrupted:
        path = lora_config(make_config, "whole")
        whole = tunelab("train", str(path))
        assert whole.returncode == 0, whole.stderr[-2000:]
        _uninterrupted.append(next(Path(load_config(path).output.dir).glob("whole-*")))
    return _uninterrupted[0]


@pytest.mark.parametrize("fault", ["checkpoint.write@2", "save.final", "save.place"])
def test_a_run_killed_at_a_write_resumes_to_the_identical_model(make_config, fault: str) -> None:
    from tunelab.errors import RunError
    from tunelab.recipes.predict import load_predictor
    from tunelab.runs import RunFolder

    reference = uninterrupted(make_config)
    path = lora_config(make_config, "killed")
    killed = tunelab("train", str(path), fault=fault)
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    runs = Path(load_config(path).output.dir)
    run = next(runs.glob("killed-*"))

    assert RunFolder.open(run).read_json("run.json")["status"] == "running"  # SIGKILL ran no handler
    with pytest.raises(RunError, match=rf"run {run.name} is unfinished \(status running\)"):
        load_predictor(run)
    served = tunelab("predict", str(run), "goal match team")
    assert served.returncode != 0 and "is unfinished" in served.stderr and "Traceback" not in served.stderr
    if fault == "checkpoint.write@2":  # the second checkpoint never left its temporary folder
        assert [p.name for p in (run / "checkpoints").glob("step-*")] == ["step-0000002"]
        assert (run / "checkpoints" / ".tmp-step-0000004").is_dir()
    else:
        assert (run / ".saving").is_dir()

    resumed = tunelab("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not (run / ".saving").exists() and not list((run / "checkpoints").glob(".tmp-*"))
    a, b = weights(reference), weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_predictor(run) is not None


def test_a_write_killed_before_its_commit_leaves_nothing_and_numbers_stay_dense(workspace, text_data) -> None:
    from tunelab.workspace import Workspace
    from tunelab.workspace.audit import verify

    killed = tunelab("data", "add", "topics", str(text_data["train"]), fault="db.commit", cwd=workspace.root)
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    ws = Workspace.open(workspace.root)
    assert tunelab("data", "show", "topics@v1", cwd=workspace.root).returncode != 0  # never registered
    added = tunelab("data", "add", "topics", str(text_data["train"]), cwd=workspace.root)
    assert added.returncode == 0 and "topics@v1" in added.stdout, added.stderr[-2000:]
    with ws.read() as session:
        result = verify(session, anchor_path=ws.anchor_path)
    assert result.ok and result.unanchored == 0, result.problems
    assert tunelab("verify", "--all", cwd=workspace.root).returncode == 0
    ws.close()


def test_a_write_killed_before_its_anchor_is_reported_then_anchored(workspace, text_data) -> None:
    from tunelab.workspace import Workspace
    from tunelab.workspace.audit import verify

    killed = tunelab("data", "add", "topics", str(text_data["train"]), fault="audit.anchor", cwd=workspace.root)
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    ws = Workspace.open(workspace.root)
    with ws.read() as session:
        result = verify(session, anchor_path=ws.anchor_path)
    assert result.ok and result.unanchored >= 1  # committed: the version exists, its head not yet anchored
    shown = tunelab("audit", "verify", cwd=workspace.root)
    assert shown.returncode == 0 and "newest not yet" in shown.stdout, shown.stdout + shown.stderr
    assert tunelab("data", "add", "topics", str(text_data["validation"]), cwd=workspace.root).returncode == 0
    with ws.read() as session:
        result = verify(session, anchor_path=ws.anchor_path)
    assert result.ok and result.unanchored == 0  # the next write anchors the head, which covers the tail
    ws.close()
