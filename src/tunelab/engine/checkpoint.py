"""Resumable checkpoints, written atomically.

A checkpoint holds what is needed to continue to the very same weights as an uninterrupted run:
the trainable parameters, optimizer and scheduler state, each process's RNG state and the loop
position. The main process writes the weights (gathered from the others under FSDP2), the loop
state and every process's RNG (sent to it); under FSDP2 and ZeRO each process also writes its own
optimizer shard, on its own machine (engine/sharding.py), so machines need no shared path. It is
assembled in `.tmp-step-N/` and renamed into place only when complete, so a crash
while writing leaves the previous checkpoint untouched. Its `manifest.json` holds every file's sha256:
resume verifies it and falls back to the newest intact checkpoint when a later one was damaged on disk.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from tunelab import faults
from tunelab.hashing import file_sha256
from tunelab.paths import cache_dir

if TYPE_CHECKING:
    from tunelab.engine.sharding import Sharding

WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "trainer_state.json"
MANIFEST = "manifest.json"


def trainable_state(model: nn.Module, sharding: Sharding | None = None) -> dict[str, torch.Tensor]:
    """Trainable parameters plus the buffers training updates (BatchNorm running statistics): a
    best checkpoint restored without them would pair its weights with the last step's statistics.

    With `sharding`, a collective: every process calls it, the main process gets the whole tensors."""
    if sharding is None:
        state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    else:
        state = sharding.trainable_tensors(model)
        if not sharding.main:
            return {}
    state.update(_running_buffers(model))
    return {n: t.to("cpu").contiguous().clone() for n, t in state.items()}


def _running_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{name}" if prefix else name: buffer
            for prefix, module in model.named_modules() if isinstance(module, nn.modules.batchnorm._NormBase)
            for name, buffer in module.named_buffers(recurse=False) if buffer is not None}


def missing_trainable(model: nn.Module, tensors: dict[str, torch.Tensor]) -> list[str]:
    """The trainable parameters of `model` that `tensors` lacks."""
    return [n for n, p in model.named_parameters() if p.requires_grad and n not in tensors]


def read_trainable(model: nn.Module, path: Path) -> dict[str, torch.Tensor]:
    """The saved trainable tensors of `path`; every trainable parameter of `model` must be present."""
    saved = load_file(path / WEIGHTS)
    missing = missing_trainable(model, saved)
    if missing:
        raise RuntimeError(f"checkpoint {path} lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    return saved


def load_trainable(model: nn.Module, path: Path, sharding: Sharding) -> None:
    """Copy saved trainable tensors (and running statistics) into `model`: a collective, the main
    process reads `path`, every process receives its part."""
    sharding.load_tensors(model, sharding.on_main(lambda: read_trainable(model, path)))


def save_weights(model: nn.Module, target: Path, accelerator: Accelerator, extra: dict[str, Any],
                 sharding: Sharding) -> None:
    """Atomically write just the trainable weights and a JSON note (the best checkpoint)."""
    tmp = _begin(target, accelerator)
    weights = trainable_state(model, sharding)
    if accelerator.is_main_process:
        save_file(weights, str(tmp / WEIGHTS))
        (tmp / STATE).write_text(json.dumps(extra, indent=2))
    _commit(tmp, target, accelerator)


def save_checkpoint(
    target: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    accelerator: Accelerator,
    sharding: Sharding,
) -> None:
    """Write a resumable checkpoint. Every process calls it. The main process writes the weights, loop
    state and every process's RNG (sent to it); under FSDP2 and ZeRO each process also writes its own
    optimizer shard, on its own machine: the run folder's checkpoint on the main machine, its cache on
    the others (`shard_folder`). The manifest, on the main machine, holds every shard's sha256."""
    tmp = _begin(target, accelerator, sharding)
    weights = trainable_state(model, sharding)
    optimizer_state = None if sharding.shards_optimizer else sharding.optimizer_state(model, optimizer)
    shards = None
    if sharding.shards_optimizer:
        mine = shard_folder(tmp, sharding) / shard_name(accelerator.process_index)
        torch.save(sharding.local_optimizer_state(model, optimizer), mine)
        shards = sharding.gather(file_sha256(mine))
    rngs = sharding.gather(_rng_state())
    if accelerator.is_main_process:
        save_file(weights, str(tmp / WEIGHTS))
        torch.save({"optimizer": optimizer_state, "scheduler": scheduler.state_dict()}, tmp / OPTIMIZER)
        for rank, rng in enumerate(rngs or []):
            torch.save(rng, tmp / f"rng-{rank}.pt")
        (tmp / STATE).write_text(json.dumps(state, indent=2))
    faults.point("checkpoint.write")
    _commit(tmp, target, accelerator, sharding, shards)


def shard_name(rank: int) -> str:
    return f"optimizer-{rank}.pt"


def shard_folder(checkpoint: Path, sharding: Sharding) -> Path:
    """Where this process's optimizer shard of `checkpoint` (a path in the run folder) lives: that path on
    the main machine; on another machine, the same checkpoint's folder in this machine's cache (so the
    run folder exists on one machine only)."""
    if sharding.node == 0:
        return checkpoint
    return cache_dir() / "checkpoint-shards" / checkpoint.parent.parent.name / checkpoint.name


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, accelerator: Accelerator,
    sharding: Sharding,
) -> dict[str, Any]:
    """Restore a checkpoint into every process; the main process reads the files, and each process its
    own optimizer shard (checked against the manifest's sha256)."""
    load_trainable(model, path, sharding)

    def read() -> dict[str, Any]:
        # weights_only: a checkpoint is a file on disk, and nothing in it needs arbitrary unpickling.
        saved = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=True)
        rngs = [path / f"rng-{rank}.pt" for rank in range(accelerator.num_processes)]
        missing = [p.name for p in rngs if not p.is_file()]
        if missing:
            raise RuntimeError(f"checkpoint {path} was written by another number of processes (no {missing[0]}); "
                               "resume it with as many processes as it was trained with")
        manifest = json.loads((path / MANIFEST).read_text()) if (path / MANIFEST).is_file() else {}
        return {**saved, "rngs": [torch.load(p, weights_only=True) for p in rngs],
                "state": json.loads((path / STATE).read_text()), "shards": manifest.get("shards")}

    saved = sharding.on_main(read)
    main = accelerator.is_main_process
    if sharding.shards_optimizer:
        expected = sharding.from_main(saved["shards"] if main else None)
        local = _read_shard(shard_folder(path, sharding) / shard_name(accelerator.process_index), expected,
                            accelerator.process_index)
        problems = sharding.gather(local if isinstance(local, str) else None)
        problem = sharding.from_main(next((p for p in problems or [] if p), None) if main else None)
        if problem:
            raise RuntimeError(problem)
        sharding.load_local_optimizer(model, optimizer, local)
    else:
        sharding.load_optimizer(model, optimizer, saved["optimizer"] if main else None)
    scheduler.load_state_dict(sharding.from_main(saved["scheduler"] if main else None))
    rng = sharding.scatter(saved["rngs"] if main else None)
    torch.set_rng_state(rng["cpu"])
    if torch.cuda.is_available() and rng.get("cuda"):
        torch.cuda.set_rng_state_all(rng["cuda"])
    return sharding.from_main(saved["state"] if main else None)


def _read_shard(path: Path, expected: list[str] | None, rank: int) -> dict[str, Any] | str:
    """This process's optimizer shard, or what is wrong with it (a string, raised on every process)."""
    if not path.is_file():
        return (f"process {rank}'s optimizer shard {path} is missing: resume on the same machines with as many "
                "processes as the run was trained with")
    if expected is None or len(expected) <= rank or file_sha256(path) != expected[rank]:
        return f"process {rank}'s optimizer shard {path} does not match the checkpoint's manifest (damaged)"
    return torch.load(path, map_location="cpu", weights_only=True)


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


def prune_checkpoints(directory: Path, keep: int, accelerator: Accelerator | None = None,
                      sharding: Sharding | None = None) -> None:
    """Keep the newest `keep` checkpoints: the main process in the run folder, the first process of
    every other machine among its shard folders."""
    if accelerator is not None and not accelerator.is_main_process:
        if not _keeps_shards_here(accelerator, sharding):
            return
        directory = shard_folder(directory / "x", sharding).parent
    steps = sorted(directory.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if directory.exists() else []
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _write_manifest(folder: Path, shards: list[str] | None = None) -> None:
    """Every file of the folder with its sha256, and every process's optimizer shard (some may live on
    other machines) in rank order."""
    files = {f.name: file_sha256(f) for f in sorted(folder.iterdir()) if f.is_file() and f.name != MANIFEST}
    record: dict[str, Any] = {"files": files}
    if shards is not None:
        record["shards"] = shards
    (folder / MANIFEST).write_text(json.dumps(record, indent=2))


def _begin(target: Path, accelerator: Accelerator, sharding: Sharding | None = None) -> Path:
    """The checkpoint's temporary folder, made fresh by the main process (and, for optimizer shards, by
    the first process of every other machine in its cache)."""
    tmp = target.parent / f".tmp-{target.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    elif _keeps_shards_here(accelerator, sharding):
        local = shard_folder(tmp, sharding)
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
    accelerator.wait_for_everyone()
    return tmp


def _keeps_shards_here(accelerator: Accelerator, sharding: Sharding | None) -> bool:
    """True for the process that places this machine's shard folder: the first of a machine other than
    the main one."""
    return (sharding is not None and sharding.shards_optimizer and sharding.node != 0
            and accelerator.is_local_main_process)


def _commit(tmp: Path, target: Path, accelerator: Accelerator, sharding: Sharding | None = None,
            shards: list[str] | None = None) -> None:
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_manifest(tmp, shards)
        _replace(tmp, target)
    elif _keeps_shards_here(accelerator, sharding):
        _replace(shard_folder(tmp, sharding), shard_folder(target, sharding))
    accelerator.wait_for_everyone()


def _replace(tmp: Path, target: Path) -> None:
    if target.exists():
        old = target.parent / f".old-{target.name}"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)
