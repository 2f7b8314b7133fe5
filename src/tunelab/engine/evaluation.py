"""Evaluation over a dataset, sharded across processes and gathered back in row order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch import nn

from tunelab.engine.batching import eval_batches
from tunelab.engine.sharding import lockstep, no_grad_for

if TYPE_CHECKING:
    import datasets

    from tunelab.tasks import PreparedData


class Scorer(Protocol):
    """What evaluation calls: an objective, or a task scoring its own data (retention sets)."""

    def collate(self, rows: dict[str, list[Any]]) -> dict[str, torch.Tensor]: ...

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]: ...

    def compute_metrics(self, outputs: dict[str, np.ndarray], data: PreparedData) -> dict[str, Any]: ...


def evaluate(
    model: nn.Module,
    scorer: Scorer,
    dataset: datasets.Dataset,
    data: PreparedData,
    accelerator: Accelerator,
    batch_size: int,
    keep_outputs: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The scorer's metrics on `dataset`; every process scores its shard, results are merged in order.

    With `keep_outputs`, also the per-row outputs in dataset order (baselines, worst samples)."""
    was_training = model.training
    model.eval()
    outputs: list[dict[str, np.ndarray]] = []
    indices: list[np.ndarray] = []
    rank, world = accelerator.process_index, accelerator.num_processes
    batches = eval_batches(lengths(dataset), batch_size, rank, world)
    real = len(batches)
    if lockstep(accelerator) and len(dataset):
        # sharded parameters: every process runs as many forward passes as the busiest (rank 0);
        # the padding batches' outputs are dropped
        busiest = len(eval_batches(lengths(dataset), batch_size, 0, world))
        batches += [batches[-1] if batches else np.array([0])] * (busiest - real)
    with no_grad_for(model), accelerator.autocast():
        for i, idx in enumerate(batches):
            batch = to_device(scorer.collate(dataset[idx.tolist()]), accelerator.device)
            out = scorer.eval_step(model, batch)
            if i < real:
                outputs.append(out)
                indices.append(idx)
    model.train(was_training)
    mine = (concat(outputs), np.concatenate(indices) if indices else np.array([], dtype=np.int64))
    parts = gather_object([mine]) if world > 1 else [mine]
    merged = concat([p for p, _ in parts if p])
    order = np.argsort(np.concatenate([i for _, i in parts]), kind="stable")
    ordered = {k: v[order] for k, v in merged.items()}
    metrics = scorer.compute_metrics(ordered, data)
    return (metrics, ordered) if keep_outputs else metrics


def lengths(dataset: datasets.Dataset) -> np.ndarray:
    """The `length` column as a numpy array (one integer per row; respects index mappings)."""
    column = dataset.select_columns(["length"]).with_format("numpy")[:]["length"]
    return np.asarray(column, dtype=np.int64)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Tensors moved to `device`; anything else a batch carries (GRPO's reward columns) as it is."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
