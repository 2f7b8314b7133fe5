"""The training loop, on HF Accelerate (not HF Trainer).

Loss normalisation: each optimizer step's gradient is the mean over every item (row or trained
token) in all its micro-batches on all processes. Each micro-batch contributes
`loss_sum * world_size / global_items`; DDP averages over processes, so the result does not depend
on gradient accumulation or on the number of processes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from tunelab.engine import checkpoint as ckpt
from tunelab.engine.accel import fit_fsdp_to_model
from tunelab.engine.batching import epoch_batches, planned_steps, shard
from tunelab.engine.evaluation import evaluate, lengths as _lengths, to_device
from tunelab.engine.flops import FlopMeter, positions, real_tokens
from tunelab.engine.hardware import measured_peak
from tunelab.engine.memory import peak_rss_mb, release_free_heap
from tunelab.engine.optim import build_optimizer, build_scheduler
from tunelab.engine.regularize import L2SP
from tunelab.engine.reporting import Reporter, SilentReporter
from tunelab.engine.sharding import sharding_for
from tunelab.errors import TrainingError
from tunelab.methods import METHODS

if TYPE_CHECKING:
    import datasets

    from tunelab.config import Config
    from tunelab.engine.evaluation import Scorer
    from tunelab.objectives import Objective
    from tunelab.runs import RunFolder
    from tunelab.tasks import PreparedData

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    steps: int
    epochs_done: float
    best: dict[str, Any] | None
    stopped_early: bool
    train_seconds: float
    eval_seconds: float = 0.0
    checkpoint_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    flops: float = 0.0  # counted FLOPs of every step, all processes
    throughput: dict[str, Any] = field(default_factory=dict)  # tflops, mfu, peak (run.json)

    @property
    def step_seconds(self) -> float:
        """Time spent in training steps alone (what throughput is measured against)."""
        return self.train_seconds - self.eval_seconds - self.checkpoint_seconds


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_done: int = 0  # global batches of `epoch` already consumed
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0  # wall time of the loop, evaluations included
    eval_seconds: float = 0.0  # the part of it spent evaluating
    checkpoint_seconds: float = 0.0  # ... and writing checkpoints (periodic and best)
    flops: float = 0.0  # FLOPs of the steps so far, all processes (engine/flops.py)
    #: the probability the model gave each watched training row's label (`Trainer.watch`), summed over
    #: the evaluations so far: a running sum, so a checkpoint holds one number per row, not one per evaluation
    label_probability_sum: list[float] = field(default_factory=list)
    label_probability_evaluations: int = 0


class Trainer:
    """Trains `model` on `data.train` with `objective`, the only task-specific thing it calls.

    `new_parameters` are the freshly initialized ones (new heads), which L2-SP does not anchor."""

    def __init__(
        self,
        config: Config,
        objective: Objective,
        model: nn.Module,
        data: PreparedData,
        accelerator: Accelerator,
        run: RunFolder | None = None,
        reporter: Reporter | None = None,
        new_parameters: set[str] | frozenset[str] = frozenset(),
    ) -> None:
        self.config, self.objective, self.data, self.accelerator, self.run = config, objective, data, accelerator, run
        self.reporter = reporter or SilentReporter()
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        cfg = config.train
        self.lengths = _lengths(data.train)
        self.batches_per_epoch = math.ceil(len(self.lengths) / cfg.batch_size)
        if self.batches_per_epoch == 0:
            raise TrainingError("the training split is empty", fix="check data.train")
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.gradient_accumulation_steps)
        self.total_steps = planned_steps(len(self.lengths), cfg)
        self.optimizer = build_optimizer(model, cfg, METHODS.get(config.method.name)().lr_scales(model, config))
        # Anchored before accelerate.prepare, on the model as the method left it.
        self.l2_sp = L2SP(model, cfg.l2_sp, set(new_parameters)) if cfg.l2_sp else None
        # The scheduler is not passed to accelerator.prepare: Accelerate would step it once per process.
        self.scheduler = build_scheduler(self.optimizer, cfg, self.total_steps * objective.iterations)
        fit_fsdp_to_model(accelerator, model)
        self.model, self.optimizer = accelerator.prepare(model, self.optimizer)
        self.sharding = sharding_for(accelerator)  # what FSDP2 / DeepSpeed change about steps and checkpoints
        self.state = LoopState()
        self.history: list[dict[str, Any]] = []
        devices = self.world if accelerator.device.type == "cuda" else 1  # CPU processes share one peak
        self.flop_meter = FlopMeter(measured_peak(accelerator.device.type), cfg.precision, devices)
        self._last_longest = 0
        self.watched: datasets.Dataset | None = None
        objective.before_training(self)  # the model is still the starting model, even for a resumed run

    # ---- public ---------------------------------------------------------------------------
    @property
    def unwrapped(self) -> nn.Module:
        if self.accelerator.distributed_type == DistributedType.NO:
            # one process: prepare wrapped nothing, and unwrap_model would import deepspeed (~1 s) to check
            return self.model
        return self.accelerator.unwrap_model(self.model)

    @property
    def generates_here(self) -> bool:
        """Whether this process runs held-out generation: the main process, or every process when the
        parameters are sharded (each forward pass is then a collective; generation seeds itself, so
        every process samples the same tokens and stops after as many passes)."""
        return self.accelerator.is_main_process or self.sharding.sharded_forward

    def watch(self, rows: datasets.Dataset) -> None:
        """Also score these training rows at every evaluation, keeping the probability of each row's
        label (training dynamics: a row whose label stays improbable while the rest are learned is a
        label-noise candidate, even after the model memorised it)."""
        self.watched = rows

    def resume(self, checkpoint: Path) -> None:
        saved = ckpt.load_checkpoint(checkpoint, self.unwrapped, self.optimizer, self.scheduler, self.accelerator,
                                     self.sharding)
        self.state = LoopState(**saved["loop"])
        if self.run is not None and self.accelerator.is_main_process:
            self.run.truncate_metrics(self.state.step)
        log.info("resumed from %s (step %d)", checkpoint, self.state.step)

    def fit(self) -> FitResult:
        cfg = self.config.train
        state = self.state
        self.reporter.start(self.total_steps, state.step)
        started = time.perf_counter() - state.train_seconds
        self.model.train()
        while state.step < self.total_steps and not state.stopped_early:
            steps = self._epoch_steps(state.epoch)
            for step_batches in steps[math.ceil(state.batches_done / cfg.gradient_accumulation_steps) :]:
                self._trim_if_growing(step_batches)
                record = self._train_step(step_batches)
                state.step += 1
                state.batches_done += len(step_batches)
                state.train_seconds = time.perf_counter() - started
                self._after_step(record, end_of_epoch=state.batches_done >= self.batches_per_epoch)
                if state.step >= self.total_steps or state.stopped_early:
                    break
            if state.batches_done >= self.batches_per_epoch:
                state.epoch += 1
                state.batches_done = 0
        state.train_seconds = time.perf_counter() - started
        self.reporter.end()
        best = None
        if state.best_step is not None:
            best = {"step": state.best_step, "metric": self.config.eval.metric, "value": state.best_value}
        epochs_done = state.epoch + state.batches_done / self.batches_per_epoch
        step_seconds = state.train_seconds - state.eval_seconds - state.checkpoint_seconds
        throughput = {**self.flop_meter.summary(state.flops, step_seconds),
                      "peak_tflops": round(self.flop_meter.peak_flops / 1e12, 4),
                      "peak_device": self.flop_meter.peak_device,
                      # what sharding saves shows here: each process's high-water mark, in rank order
                      "peak_rss_mb": self.sharding.gather(peak_rss_mb())}
        if self.accelerator.device.type == "cuda":
            throughput["peak_gpu_mb"] = self.sharding.gather(round(torch.cuda.max_memory_allocated() / 2**20, 1))
        return FitResult(state.step, epochs_done, best, state.stopped_early, state.train_seconds,
                         state.eval_seconds, state.checkpoint_seconds, self.history, state.flops, throughput)

    def load_best(self) -> bool:
        best = self._checkpoint_dir() / "best" if self.run else None
        # the main process holds the run folder; the others follow its answer
        found = self.sharding.from_main(best is not None and (best / ckpt.WEIGHTS).exists())
        if not found:
            return False
        ckpt.load_trainable(self.unwrapped, best, self.sharding)
        return True

    def evaluate(self, dataset: datasets.Dataset, *, model: nn.Module | None = None, data: PreparedData | None = None,
                 scorer: Scorer | None = None, keep_outputs: bool = False) -> Any:
        """The objective's metrics on `dataset` (and the per-row outputs with `keep_outputs`); `model`,
        `data` and `scorer` default to the trained model, the run's data and the objective (retention
        sets pass their own, scored by the task whatever the objective)."""
        batch_size = self.config.eval.batch_size or 2 * self.config.train.batch_size
        return evaluate(self.model if model is None else model, scorer or self.objective, dataset,
                        self.data if data is None else data, self.accelerator, batch_size, keep_outputs=keep_outputs)

    # ---- one step -------------------------------------------------------------------------
    def _epoch_steps(self, epoch: int) -> list[list[np.ndarray]]:
        cfg = self.config.train
        batches = epoch_batches(self.lengths, cfg.batch_size, cfg.seed, epoch, cfg.group_by_length)
        accum = cfg.gradient_accumulation_steps
        return [batches[i : i + accum] for i in range(0, len(batches), accum)]

    def _train_step(self, step_batches: list[np.ndarray]) -> dict[str, Any]:
        started = time.perf_counter()
        micro = [self._micro_batch(b) for b in step_batches]
        # Objectives that write their own sequences (GRPO samples answers) do it before anything is counted.
        micro = [(self.objective.prepare_batch(self.unwrapped, batch), weight) for batch, weight in micro]
        local_items = sum(self.objective.count_items(b) * weight for b, weight in micro)
        global_items = self.sum_across(float(local_items))
        # several updates on one prepared batch (GRPO's num_iterations); their mean is logged
        updates = [self._update(micro, global_items) for _ in range(self.objective.iterations)]
        tokens = sum(real_tokens(b) * w for b, w in micro)
        flops = self.sum_across(self.flop_meter.step_flops(sum(positions(b) for b, _ in micro)))
        extra = {"l2_sp": float(np.mean([u["l2_sp"] for u in updates]))} if self.l2_sp else {}
        for name, (total, count) in self.objective.pop_step_stats().items():
            extra[name] = self.sum_across(total) / max(self.sum_across(count), 1.0)
        seconds = time.perf_counter() - started
        self.state.flops += flops
        return {"loss": float(np.mean([u["loss"] for u in updates])), "lr": updates[0]["lr"],
                "grad_norm": float(np.mean([u["grad_norm"] for u in updates])),
                "tokens_per_s": self.sum_across(tokens) / seconds,
                "samples_per_s": sum(len(b) for b in step_batches) / seconds,
                **self.flop_meter.summary(flops, seconds), **extra}

    def _update(self, micro: list[tuple[dict[str, Any], int]], global_items: float) -> dict[str, float]:
        """One optimizer update over the step's micro-batches: its loss, gradient norm, learning rate
        (and L2-SP penalty)."""
        loss_total = torch.zeros((), device=self.accelerator.device)
        with self.flop_meter.counting():
            for i, (batch, weight) in enumerate(micro):
                boundary = i == len(micro) - 1
                with self.sharding.accumulating(self.model, boundary):
                    loss_sum = self.objective.loss_sum(self.model, batch) * weight
                    self.sharding.backward(loss_sum * self.world / global_items, boundary)
                loss_total += loss_sum.detach().float()
        loss = self.sum_across(float(loss_total)) / global_items
        if not math.isfinite(loss):
            self._fail_non_finite("loss", loss)
        l2_sp = self.l2_sp.add_gradients() if self.l2_sp else 0.0
        max_norm = self.config.train.max_grad_norm or float("inf")
        lr = self.scheduler.get_last_lr()[0]

        def check(norm: float) -> None:
            if not math.isfinite(norm):
                self._fail_non_finite("gradient norm", norm)

        grad_norm = self.sharding.clip_and_step(self.model, self.optimizer, max_norm, check)
        self.scheduler.step()
        return {"loss": loss, "grad_norm": grad_norm, "lr": lr, "l2_sp": l2_sp}

    def _trim_if_growing(self, step_batches: list[np.ndarray]) -> None:
        longest = max(int(self.lengths[b].max()) for b in step_batches)
        if longest > self._last_longest and self.accelerator.device.type == "cpu":
            release_free_heap()
        self._last_longest = longest

    def _micro_batch(self, global_batch: np.ndarray) -> tuple[dict[str, torch.Tensor], int]:
        """This process's slice of a global batch, with weight 1; or, when the batch has fewer rows
        than processes and the slice is empty, a stand-in row with weight 0 — DDP needs every
        process to run backward, and the weight keeps the stand-in out of loss and gradients."""
        rows = shard(global_batch, self.rank, self.world)
        weight = 1
        if len(rows) == 0:
            rows, weight = global_batch[:1], 0
        return self._to_device(self.objective.collate(self.data.train[rows.tolist()])), weight

    def _after_step(self, record: dict[str, Any], end_of_epoch: bool) -> None:
        cfg, state = self.config, self.state
        step = state.step
        record = {"step": step, "epoch": round(state.epoch + state.batches_done / self.batches_per_epoch, 4),
                  **record}
        if step % cfg.train.log_every == 0 or step == self.total_steps:
            self._write_metrics(record)
        self.reporter.step(step, record)
        every = cfg.eval.every_steps
        due = (step % every == 0) if every else end_of_epoch
        if due or step == self.total_steps:
            self._evaluate_and_track()
            if cfg.train.checkpoint_every is None:
                self._checkpoint()
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
            self._checkpoint()

    def _evaluate_and_track(self) -> None:
        cfg, state = self.config.eval, self.state
        started = time.perf_counter()
        metrics = self.evaluate(self.data.validation)
        if self.watched is not None:
            _, outputs = self.evaluate(self.watched, keep_outputs=True)
            probabilities = self.objective.task.label_probability(outputs)
            if probabilities is not None:
                total = np.asarray(state.label_probability_sum or np.zeros(len(probabilities)), dtype=np.float64)
                state.label_probability_sum = np.round(total + probabilities, 6).tolist()
                state.label_probability_evaluations += 1
        state.eval_seconds += time.perf_counter() - started
        value = float(metrics[cfg.metric])
        better = self.objective.greater_is_better(cfg.metric)
        improved = state.best_value is None or (value > state.best_value if better else value < state.best_value)
        if improved:
            state.best_value, state.best_step, state.evals_without_improvement = value, state.step, 0
            if self.run is not None:
                started = time.perf_counter()
                note = {"step": state.step, "metric": cfg.metric, "value": value}
                ckpt.save_weights(self.unwrapped, self._checkpoint_dir() / "best", self.accelerator, note,
                                  self.sharding)
                state.checkpoint_seconds += time.perf_counter() - started
        else:
            state.evals_without_improvement += 1
        note = f"best: step {state.best_step}, validation {cfg.metric} {state.best_value:.4f}"
        if cfg.early_stopping_patience and state.evals_without_improvement >= cfg.early_stopping_patience:
            state.stopped_early = True
            note += f"; early stop after {state.evals_without_improvement} evaluations without improvement"
        summary = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.history.append({"step": state.step, **summary})
        self._write_metrics({"step": state.step, "split": "validation", **summary})
        self.reporter.evaluation(state.step, summary, note)
        # The reporter already shows this line on the console; the log file still gets it.
        log.info("step %d validation %s; %s", state.step, _fmt(summary), note, extra={"console": False})

    def _checkpoint(self) -> None:
        if self.run is None:
            return
        started = time.perf_counter()
        target = self._checkpoint_dir() / f"step-{self.state.step:07d}"
        state = {"loop": vars(self.state).copy()}
        ckpt.save_checkpoint(target, self.unwrapped, self.optimizer, self.scheduler, state, self.accelerator,
                             self.sharding)
        ckpt.prune_checkpoints(self._checkpoint_dir(), self.config.train.keep_checkpoints, self.accelerator,
                               self.sharding)
        self.state.checkpoint_seconds += time.perf_counter() - started

    # ---- helpers --------------------------------------------------------------------------
    def _checkpoint_dir(self) -> Path:
        assert self.run is not None
        return self.run.checkpoints

    def _write_metrics(self, record: dict[str, Any]) -> None:
        if self.run is not None and self.accelerator.is_main_process:
            self.run.append_metrics(record)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return to_device(batch, self.accelerator.device)

    def sum_across(self, value: float) -> float:
        """`value` summed over every process (what a statistic of a sharded batch needs)."""
        if self.world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, reduction="sum").item())

    def _fail_non_finite(self, what: str, value: float) -> None:
        last = ckpt.latest_checkpoint(self._checkpoint_dir()) if self.run else None
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written before it"
        raise TrainingError(
            f"{what} became {value} at step {self.state.step + 1}; training stopped and {kept}",
            fix="lower train.learning_rate, keep train.max_grad_norm set, or use precision: fp32",
        )


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
