"""The train recipe, top to bottom: validate, load, prepare data, create the run, train, evaluate, save.

Everything that can fail on bad input (config, model source, data files) happens before the run
folder is created, so a bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, set_seed

from tunelab import faults
from tunelab.config import Config
from tunelab.data.stats import length_histogram
from tunelab.engine import FitResult, Reporter, Trainer
from tunelab.engine.accel import check_distributed, make_accelerator, strategy
from tunelab.engine.checkpoint import (
    intact_checkpoint,
    latest_checkpoint,
    missing_trainable,
    trainable_state,
)
from tunelab.engine.hardware import checkpoint_parameters, resolve_attention, resolve_precision
from tunelab.engine.reporting import RunPruned
from tunelab.engine.sharding import Sharding, copy_tensors
from tunelab.errors import RunError
from tunelab.logs import add_file_log
from tunelab.methods import METHODS, count_parameters
from tunelab.models import load_tokenizer, resolve_model
from tunelab.objectives import build_objective
from tunelab.recipes import governance, preflight
from tunelab.recipes.diagnose import diagnose_after_training
from tunelab.recipes.heldout import after_training, before_training, watch_train_sample
from tunelab.retention import base_cache
from tunelab.retention.sets import prepare_sets
from tunelab.runs import RunFolder, collect_environment, now_iso
from tunelab.runs.timings import Timings
from tunelab.tasks import TASKS

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    run: RunFolder
    results: dict[str, Any]
    fit: FitResult


def train(config: Config, *, resume: RunFolder | None = None, reporter: Reporter | None = None,
          reproduces: str | None = None, origin: dict[str, Any] | None = None) -> TrainOutcome:
    """Run one training job described by `config` (or continue `resume`) and return its results.

    Inside a workspace the run is recorded there (inputs, config, environment, outcome, artifacts);
    `reproduces` names the run this one repeats; `origin` says who started it and why when a person did
    not (an autopilot step: its parent run and reason), kept in run.json and the lineage.
    """
    clock = Timings()
    if resume is None:
        preflight.check_output(config)
    with clock.phase("data_check"):
        governed = governance.prepare(config)
    try:
        return _train(governed, resume, reporter, reproduces, clock, origin)
    finally:
        governed.cleanup()


def _train(governed: governance.Governed, resume: RunFolder | None, reporter: Reporter | None,
           reproduces: str | None, clock: Timings, origin: dict[str, Any] | None = None) -> TrainOutcome:
    config = governed.config  # data references resolved to paths; the run records `governed.original`
    task = TASKS.get(config.task)()
    task.validate_config(config)
    governed.original.objective = config.objective  # the run's config.yaml names the objective it trained with
    method = METHODS.get(config.method.name)()
    method.validate(config, task)
    check_distributed(config)
    task.load_kwargs = method.load_kwargs(config)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    with clock.phase("model_resolve"):
        resolved = resolve_model(config.model)
        preflight.check_model_fit(config, task, resolved)
        speed = _settle_speed(governed, resolved, task.uses_tokenizer)
        task.load_kwargs.update(speed.pop("load_kwargs"))
    with clock.phase("tokenize"):
        tokenizer = None
        if task.uses_tokenizer:  # the data check loaded the same tokenizer from the same model
            tokenizer = governed.tokenizer if governed.tokenizer is not None else load_tokenizer(resolved, config.model)
        data = task.prepare(config, tokenizer, resolved)
    governance.refuse_check_errors(governed)
    preflight.check_plan(config, len(data.train))
    with clock.phase("retention_prepare"):
        retention = prepare_sets(config, task, tokenizer, resolved, data)

    accelerator = make_accelerator(config)
    peers = Sharding(accelerator)  # collectives over objects, before the model is prepared
    _check_same_config(peers, governed.original)
    run = resume or _create_run(governed.original, accelerator)
    # Only the main process writes the run folder (other machines may not have it).
    file_log = add_file_log(run.path / "train.log") if accelerator.is_main_process else logging.NullHandler()
    # Chosen before the try: a run whose checkpoints are all damaged stays as it was, not `failed`.
    checkpoint = _last_checkpoint(run, peers) if resume is not None else None
    try:
        with clock.phase("run_setup"):
            if accelerator.is_main_process:
                run.update(status="running", started=now_iso(), task=config.task, model=resolved.to_dict(),
                           processes=accelerator.num_processes, distributed=strategy(config),
                           device=str(accelerator.device), **speed)
                run.write_json("data.json", {**data.info, **_length_info(task, data, config)})
                environment = collect_environment()
                run.write_json("environment.json", environment)
                if origin:
                    run.update(origin=origin)
                governance.start(governed, run, environment, resumed=resume is not None, reproduces=reproduces,
                                 origin=origin)
        with clock.phase("model_build"):
            set_seed(config.train.seed)
            model = _build(config, task, resolved, data)
            trainer = Trainer(config, build_objective(config, task), model, data, accelerator, run, reporter,
                              new_parameters=task.new_parameters)
            watch_train_sample(trainer, config, task, data)
            if checkpoint is not None:
                trainer.resume(checkpoint)
        before = before_training(trainer, run, config, task, data, tokenizer, retention, clock,
                                 _base_cache_key(config, task, resolved, data, retention, speed, accelerator, tokenizer))
        fit = trainer.fit()
        clock.add("train_steps", fit.step_seconds)
        clock.add("evaluations", fit.eval_seconds)
        clock.add("checkpoints", fit.checkpoint_seconds)
        results = after_training(trainer, run, config, task, data, tokenizer, fit, before, retention, clock)
        with clock.phase("save"):
            final = _unsharded(trainer, config, task, resolved, data)
        if accelerator.is_main_process:
            with clock.phase("save"):
                _save(run, final, config, task, data, tokenizer, results, fit)
            with clock.phase("hash_artifacts"):
                artifacts = governance.hash_run(governed, run)
            run.update(timings=clock.as_dict())
            log.info("timings (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in clock.as_dict().items()))
            governance.end(governed, run, "succeeded", artifacts=artifacts)
            diagnose_after_training(run.path)
        accelerator.wait_for_everyone()
        return TrainOutcome(run, results, fit)
    except RunPruned:
        _mark(run, accelerator, governed, status="pruned", ended=now_iso())
        raise
    except KeyboardInterrupt:
        _mark(run, accelerator, governed, status="interrupted", ended=now_iso())
        if latest_checkpoint(run.checkpoints) is not None:
            log.warning("interrupted; continue with: tunelab train --resume %s", run.path)
        raise
    except Exception as err:
        _mark(run, accelerator, governed, status="failed", ended=now_iso(), error=str(err))
        raise
    finally:
        logging.getLogger("tunelab").removeHandler(file_log)
        file_log.close()


def _settle_speed(governed: governance.Governed, resolved: Any, uses_tokenizer: bool) -> dict[str, Any]:
    """Turn `train.precision: auto` into fp32 or bf16 for this machine and model (written into the run's
    config, so a reproduction uses the same), and pick the attention kernel; returns run.json fields."""
    config = governed.config
    params = checkpoint_parameters(resolved.path)
    if params is None:  # no safetensors (a vision checkpoint): size on disk / 4 bytes is close enough
        params = sum(f.stat().st_size for f in Path(resolved.path).rglob("*") if f.is_file()) // 4
    precision, reason = resolve_precision(config, params)
    for cfg in {id(governed.original): governed.original, id(config): config}.values():
        cfg.train.precision = precision
    # Image backbones (timm, EfficientNet-Lite) take no attn_implementation.
    attention = resolve_attention(config, precision) if uses_tokenizer else None
    log.info("precision %s (%s); attention %s", precision, reason, attention or "model default")
    return {"precision": precision, "precision_reason": reason, "attention": attention or "default",
            "load_kwargs": {"attn_implementation": attention} if attention else {}}


def _base_cache_key(config: Config, task: Any, resolved: Any, data: Any, retention: Any, speed: dict[str, Any],
                    accelerator: Any, tokenizer: Any) -> str | None:
    """The base-score cache key (retention/base_cache.py), for single-process runs of tasks that score their base."""
    if accelerator.num_processes > 1 or not task.evaluates_base:
        return None
    return base_cache.cache_key(config, resolved.fingerprint, data, retention, speed["attention"],
                                accelerator.device.type, accelerator.num_processes,
                                len(tokenizer) if tokenizer is not None else 0)


def _create_run(config: Config, accelerator: Any) -> RunFolder:
    # Every process must agree on the run id; the main process picks it.
    run_id = [RunFolder.new_id(config) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(run_id)
    if accelerator.is_main_process:
        run = RunFolder.create(config, run_id[0])
        log.info("run folder: %s", run.path)
        return run
    # The other processes know where the folder is, but never open or write it: on another machine
    # it does not exist (docs/scaling.md).
    return RunFolder(Path(config.output.dir) / run_id[0])


def _check_same_config(peers: Sharding, config: Config) -> None:
    """Every process must train the same config: on several machines each reads its own copy."""
    if peers.world == 1:
        return
    from tunelab.config.load import dump_config

    hashes = peers.gather(hashlib.sha256(dump_config(config).encode()).hexdigest())
    differing = peers.from_main([r for r, h in enumerate(hashes) if h != hashes[0]] if peers.main else None)
    if differing:
        if peers.main:
            log.error("process(es) %s read a config that differs from the main process's", differing)
        raise RunError("the launched processes read different configs (or data refs): each machine must have the "
                       "same YAML and overrides", fix="copy the same config file to every machine and launch the "
                       "same command on each")


def _build(config: Config, task: Any, resolved: Any, data: Any) -> torch.nn.Module:
    model = task.build_model(config, resolved, data)
    method = METHODS.get(config.method.name)()
    model = method.apply(model, config, task)
    if config.train.gradient_checkpointing:
        _enable_checkpointing(model)
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    trainable, total = count_parameters(model)
    log.info("method %s: %s trainable of %s parameters (%.2f%%)",
             config.method.name, f"{trainable:,}", f"{total:,}", 100 * trainable / max(total, 1))
    return model


def _enable_checkpointing(model: torch.nn.Module) -> None:
    # transformers 5.x renamed the switch (and its kwargs); keep working on either side of the rename.
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _last_checkpoint(run: RunFolder, peers: Sharding) -> Path:
    """The newest intact checkpoint (its files match its manifest), found by the main process (which
    holds the run folder) and told to the others; damaged newer ones are named."""
    return peers.on_main(lambda: _find_checkpoint(run), share=True)


def _find_checkpoint(run: RunFolder) -> Path:
    found, damaged = intact_checkpoint(run.checkpoints)
    for problem in damaged:
        log.warning("skipping a damaged checkpoint: %s", problem)
    if found is None:
        if damaged:
            raise RunError(f"{run.path} has no intact checkpoint to resume from: {damaged[0]}",
                           fix="start a new run with `tunelab train` (the damaged checkpoint cannot be used)")
        raise RunError(f"{run.path} has no checkpoint to resume from", fix="start a new run with `tunelab train`")
    if damaged:
        log.warning("resuming from %s, the newest intact checkpoint", found.name)
    return found


def _unsharded(trainer: Trainer, config: Config, task: Any, resolved: Any, data: Any) -> torch.nn.Module | None:
    """The trained model as one ordinary module on the main process (None elsewhere). With sharded
    parameters (FSDP2, ZeRO-3) every process sends its shards of the trainable tensors, and the main
    process loads them into a freshly built copy: what it saves is a normal `save_pretrained` folder."""
    if not trainer.sharding.sharded_forward:
        return trainer.unwrapped if trainer.accelerator.is_main_process else None
    state = trainable_state(trainer.unwrapped, trainer.sharding)
    if not trainer.accelerator.is_main_process:
        return None
    with trainer.sharding.building_plain():
        model = _build(config, task, resolved, data)
    missing = missing_trainable(model, state)
    if missing:
        raise RunError(f"the gathered model lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    copy_tensors(model, state)
    return model


def _save(run: RunFolder, model: torch.nn.Module, config: Config, task: Any, data: Any, tokenizer: Any,
          results: dict[str, Any], fit: FitResult) -> None:
    trainable, total = count_parameters(model)
    run.write_json("eval.json", results)
    written = _save_model(run, model, config, task, tokenizer)
    task.save_artifacts(run.path, data)
    run.update(
        status="succeeded", ended=now_iso(), steps=fit.steps, epochs=round(fit.epochs_done, 3),
        stopped_early=fit.stopped_early, train_seconds=round(fit.train_seconds, 2),
        eval_seconds=round(fit.eval_seconds, 2), checkpoint_seconds=round(fit.checkpoint_seconds, 2),
        best=results.get("best"), best_reason=results.get("best_reason"), trainable_params=trainable, total_params=total,
        artifacts=written, gates=_gate_summary(results), throughput=fit.throughput,
    )


def _save_model(run: RunFolder, model: Any, config: Config, task: Any, tokenizer: Any) -> dict[str, str]:
    """Write model/ and adapter/ complete, or not at all: everything goes into `.saving/` first and each
    finished folder is renamed into place (a rename within one filesystem is atomic). A process killed
    here leaves `.saving/` (removed on resume) and the run's status `running`, which no command serves."""
    staging = run.path / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    written = METHODS.get(config.method.name)().save(model, staging / run.model_dir.name, config)
    for folder in written.values():
        if tokenizer is not None:
            _clear_call_state(tokenizer)
            tokenizer.save_pretrained(folder)
        task.finalize_saved(Path(folder))
    faults.point("save.final")
    placed = {}
    for name, folder in written.items():
        target = run.path / Path(folder).name
        if target.exists():  # an earlier attempt of a resumed run
            shutil.rmtree(target)
        os.replace(folder, target)
        placed[name] = str(target)
        faults.point("save.place")
    staging.rmdir()
    return placed


def _clear_call_state(tokenizer: Any) -> None:
    """Forget the truncation/padding the last tokenizer call left on the fast backend: tokenizer.json would
    otherwise record it, and differ between a run that tokenized and one served from the token cache."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()


def _gate_summary(results: dict[str, Any]) -> dict[str, Any] | None:
    gates = results.get("gates")
    if gates is None:
        return None
    return {"passed": gates["passed"], "failed": [c["message"] for c in gates["checks"] if not c["passed"]]}


def _length_info(task: Any, data: Any, config: Config) -> dict[str, Any]:
    """Token-length histograms per split (reports mark the max_length cut on them)."""
    if not task.uses_tokenizer:
        return {}

    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    return {"lengths": {name: length_histogram(ds, config.train.max_length)
                        for name, ds in splits.items() if ds is not None and len(ds)}}


def _mark(run: RunFolder, accelerator: Any, governed: governance.Governed, **fields: Any) -> None:
    if accelerator.is_main_process:
        run.update(**fields)
        governance.end(governed, run, fields["status"], error=fields.get("error"))
