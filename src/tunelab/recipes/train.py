"""The train recipe, top to bottom: validate, load, prepare data, create the run, train, evaluate, save.

Everything that can fail on bad input (config, model source, data files) happens before the run
folder is created, so a bad input never leaves a half-written run behind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list, set_seed

from tunelab.config import Config
from tunelab.engine import FitResult, Reporter, Trainer
from tunelab.engine.accel import make_accelerator
from tunelab.engine.checkpoint import latest_checkpoint
from tunelab.errors import RunError
from tunelab.eval.generation import generation_eval
from tunelab.logs import add_file_log
from tunelab.methods import METHODS, count_parameters
from tunelab.models import load_tokenizer, resolve_model
from tunelab.runs import RunFolder, collect_environment, now_iso
from tunelab.tasks import TASKS

log = logging.getLogger(__name__)


@dataclass
class TrainOutcome:
    run: RunFolder
    results: dict[str, Any]
    fit: FitResult


def train(config: Config, *, resume: RunFolder | None = None, reporter: Reporter | None = None) -> TrainOutcome:
    """Run one training job described by `config` (or continue `resume`) and return its results."""
    task = TASKS.get(config.task)()
    task.validate_config(config)
    method = METHODS.get(config.method.name)()
    method.validate(config, task)
    task.load_kwargs = method.load_kwargs(config)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    resolved = resolve_model(config.model)
    tokenizer = load_tokenizer(resolved, config.model) if task.uses_tokenizer else None
    data = task.prepare(config, tokenizer, resolved)

    accelerator = make_accelerator(config)
    run = resume or _create_run(config, accelerator)
    file_log = add_file_log(run.path / "train.log")
    try:
        if accelerator.is_main_process:
            run.update(status="running", started=now_iso(), task=config.task, model=resolved.to_dict(),
                       processes=accelerator.num_processes, device=str(accelerator.device))
            run.write_json("data.json", data.info)
            run.write_json("environment.json", collect_environment())
        set_seed(config.train.seed)
        model = _build(config, task, resolved, data)
        trainer = Trainer(config, task, model, data, accelerator, run, reporter)
        if resume is not None:
            trainer.resume(_last_checkpoint(run))
        base = _base_evaluation(trainer, run, config, task, data, tokenizer)
        fit = trainer.fit()
        results = _final_evaluation(trainer, config, data, fit)
        _generation_results(trainer, run, config, task, data, tokenizer, results, base)
        if accelerator.is_main_process:
            _save(run, trainer, config, task, data, tokenizer, results, fit)
        accelerator.wait_for_everyone()
        return TrainOutcome(run, results, fit)
    except KeyboardInterrupt:
        _mark(run, accelerator, status="interrupted", ended=now_iso())
        if latest_checkpoint(run.checkpoints) is not None:
            log.warning("interrupted; continue with: tunelab train --resume %s", run.path)
        raise
    except Exception as err:
        _mark(run, accelerator, status="failed", ended=now_iso(), error=str(err))
        raise
    finally:
        logging.getLogger("tunelab").removeHandler(file_log)
        file_log.close()


def _create_run(config: Config, accelerator: Any) -> RunFolder:
    # Every process must agree on the run id; the main process picks it.
    run_id = [RunFolder.new_id(config) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(run_id)
    if accelerator.is_main_process:
        run = RunFolder.create(config, run_id[0])
        log.info("run folder: %s", run.path)
    accelerator.wait_for_everyone()
    return RunFolder.open(f"{config.output.dir}/{run_id[0]}")


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


def _last_checkpoint(run: RunFolder):
    found = latest_checkpoint(run.checkpoints)
    if found is None:
        raise RunError(f"{run.path} has no checkpoint to resume from", fix="start a new run with `tunelab train`")
    return found


def _final_evaluation(trainer: Trainer, config: Config, data: Any, fit: FitResult) -> dict[str, Any]:
    used = "last"
    if config.eval.load_best and fit.best and trainer.load_best():
        used = "best"
    results: dict[str, Any] = {"weights": used, "best": fit.best}
    if fit.best:
        results["best_reason"] = (
            f"best: step {fit.best['step']}, validation {fit.best['metric']} {fit.best['value']:.4f}"
        )
    results["validation"] = trainer.evaluate(data.validation)
    if data.test is not None and len(data.test):
        results["test"] = trainer.evaluate(data.test)
    return results


def _base_evaluation(
    trainer: Trainer, run: RunFolder, config: Config, task: Any, data: Any, tokenizer: Any
) -> dict[str, Any] | None:
    """Score the starting model exactly as the tuned one will be (saved once, reused on resume)."""
    if not (task.evaluates_base and config.eval.base):
        return None
    saved = run.path / "eval_base.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    log.info("evaluating the base model (eval.base)")
    base: dict[str, Any] = {"validation": trainer.evaluate(data.validation)}
    if data.test is not None and len(data.test):
        base["test"] = trainer.evaluate(data.test)
    prompts = data.extra.get("prompts") or []
    if prompts and trainer.accelerator.is_main_process:
        base["generation"], base["answers"] = generation_eval(
            trainer.unwrapped, tokenizer, prompts, config.generation, task.stop_ids()
        )
    if trainer.accelerator.is_main_process:
        run.write_json("eval_base.json", base)
    return base


def _generation_results(
    trainer: Trainer, run: RunFolder, config: Config, task: Any, data: Any, tokenizer: Any,
    results: dict[str, Any], base: dict[str, Any] | None,
) -> None:
    """Tuned-model generations on the held-out prompts; base vs tuned side by side in eval.json
    and every prompt's answers in generations.jsonl."""
    prompts = data.extra.get("prompts") or []
    if prompts and trainer.accelerator.is_main_process:
        results["generation"], answers = generation_eval(
            trainer.unwrapped, tokenizer, prompts, config.generation, task.stop_ids()
        )
        base_answers = (base or {}).get("answers") or [None] * len(prompts)
        rows = [
            {"prompt": p.get("messages") or p.get("prompt"), "reference": p["reference"], "base": b, "tuned": a}
            for p, a, b in zip(prompts, answers, base_answers, strict=True)
        ]
        run.write_jsonl("generations.jsonl", rows)
    if base is not None:
        results["base"] = {k: v for k, v in base.items() if k != "answers"}
        results["gain"] = _gain(results["base"], results)


def _gain(base: dict[str, Any], tuned: dict[str, Any]) -> dict[str, dict[str, float]]:
    """tuned - base for every numeric metric both have, per section (validation, test, generation)."""
    gain: dict[str, dict[str, float]] = {}
    for section, metrics in base.items():
        theirs = tuned.get(section)
        if not isinstance(metrics, dict) or not isinstance(theirs, dict):
            continue
        gain[section] = {
            k: theirs[k] - v for k, v in metrics.items()
            if isinstance(v, float) and isinstance(theirs.get(k), float) and k != "samples"
        }
    return gain


def _save(run: RunFolder, trainer: Trainer, config: Config, task: Any, data: Any, tokenizer: Any,
          results: dict[str, Any], fit: FitResult) -> None:
    model = trainer.unwrapped
    trainable, total = count_parameters(model)
    run.write_json("eval.json", results)
    written = METHODS.get(config.method.name)().save(model, run.model_dir, config)
    for folder in written.values():
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        task.finalize_saved(Path(folder))
    task.save_artifacts(run.path, data)
    run.update(
        status="succeeded", ended=now_iso(), steps=fit.steps, epochs=round(fit.epochs_done, 3),
        stopped_early=fit.stopped_early, train_seconds=round(fit.train_seconds, 2),
        eval_seconds=round(fit.eval_seconds, 2), checkpoint_seconds=round(fit.checkpoint_seconds, 2), best=results.get("best"),
        best_reason=results.get("best_reason"), trainable_params=trainable, total_params=total,
        artifacts=written,
    )


def _mark(run: RunFolder, accelerator: Any, **fields: Any) -> None:
    if accelerator.is_main_process:
        run.update(**fields)
