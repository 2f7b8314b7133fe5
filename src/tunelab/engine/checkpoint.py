"""Resumable checkpoints, written atomically.

A checkpoint holds what is needed to continue to the very same weights as an uninterrupted run:
the trainable parameters, optimizer and scheduler state, each process's RNG state and the loop
position. It is assembled in `.tmp-step-N/` and renamed into place only when complete, so a crash
while writing leaves the previous checkpoint untouched. Its `manifest.json` holds every file's sha256:
resume verifies it and falls back to the newest intact checkpoint when a later one was damaged on disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab import faults
from tunelab.hashing import file_sha256

WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "trainer_state.json"
MANIFEST = "manifest.json"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Trainable parameters plus the buffers training updates (BatchNorm running statistics): a
    best checkpoint restored without them would pair its weights with the last step's statistics."""
    state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    state.update(_running_buffers(model))
    return {n: t.to("cpu").contiguous().clone() for n, t in state.items()}


def _running_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}" if prefix else name: buffer
            for prefix, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._NormBase)
            for name, buffer in module.named_buffers(recurse=False) if buffer is not None}


def load_trainable(model: nn.Module, path: Path) -> None:
    """Copy saved trainable tensors (and running statistics) into `model`; every trainable
    parameter must be present."""
    saved = load_file(path / WEIGHTS)
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in saved]
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    targets = {**params, **_running_buffers(model)}
    with torch.no_grad():
        for name, tensor in saved.items():
            targets[name].copy_(tensor)


def save_weights(model: nn.Module, target: Path, accelerator: Accelerator, extra: dict[str, Any]) -> None:
    """Atomically write just the trainable weights and a JSON note (the best checkpoint)."""
    tmp = _begin(target, accelerator)
    if accelerator.is_main_process:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        (tmp / STATE).write_text(json.dumps(extra, indent=2))
    _commit(tmp, target, accelerator)


def save_checkpoint(
    target: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    accelerator: Accelerator,
) -> None:
    tmp = _begin(target, accelerator)
    if accelerator.is_main_process:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER)
        (tmp / STATE).write_text(json.dumps(state, indent=2))
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng-{accelerator.process_index}.pt")
    faults.point("checkpoint.write")
    _commit(tmp, target, accelerator)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, accelerator: Accelerator
) -> dict[str, Any]:
    load_trainable(model, path)
    # weights_only: a checkpoint is a file on disk, and nothing in it needs arbitrary unpickling.
    saved = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = torch.load(path / f"rng-{accelerator.process_index}.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available() and rng.get("cuda"):
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((path / STATE).read_text())


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint's files (named), or None when its manifest matches them."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None if (path / STATE).is_file() and (path / WEIGHTS).is_file() else f"{manifest} is missing"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{manifest} is unreadable"
    for name, sha in files.items():
        target = path / name
        if not target.is_file():
            return f"{target} is missing"
        if file_sha256(target) != sha:
            return f"{target} is damaged (its sha256 differs from the manifest)"
    return None


def intact_checkpoint(directory: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint whose files match their manifest, and what was wrong with newer ones."""
    skipped = []
    steps = sorted(directory.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if directory.exists() else []
    for path in reversed(steps):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, skipped
        skipped.append(problem)
    return None, skipped


def latest_checkpoint(directory: Path) -> Path | None:
    steps = sorted(directory.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if directory.exists() else []
    return steps[-1] if steps else None


def prune_checkpoints(directory: Path, keep: int) -> None:
    steps = sorted(directory.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _write_manifest(folder: Path) -> None:
    files = {f.name: file_sha256(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2))


def _begin(target: Path, accelerator: Accelerator) -> Path:
    tmp = target.parent / f".tmp-{target.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    return tmp


def _commit(tmp: Path, target: Path, accelerator: Accelerator) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_manifest(tmp)
        if target.exists():
            old = target.parent / f".old-{target.name}"
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    accelerator.wait_for_everyone()
