"""Everything a run scores on held-out data around training.

Before the first step: the starting model (causal LMs: its loss, perplexity and generations) and
every retention set, saved in `eval_base.json` and reused on resume. After the last step: the
validation and test sets with the best (or last) weights; the baseline for classifiers, whose
starting model has no head for the task (the majority class); the retention sets again, with the
forgetting gate; the overfitting check; the worst-scored test rows; and a sample of the training rows
(the train/validation gap, label-noise candidates).
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from tunelab.engine.generation import generation_eval
from tunelab.metrics.overfitting import divergence_warning
from tunelab.objectives.base import base_function
from tunelab.report.load import SUSPECTS_FILE
from tunelab.retention import base_cache
from tunelab.retention.sets import gate_checks, retention_report, score_sets
from tunelab.runs.timings import Timings

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.engine import FitResult, Trainer
    from tunelab.runs import RunFolder
    from tunelab.tasks import HeldOutSet, PreparedData, Task

log = logging.getLogger(__name__)
WORST_SAMPLES = 25
SUSPECTS = 50  # label-noise candidates kept in suspects_train.jsonl


def before_training(
    trainer: Trainer, run: RunFolder, config: Config, task: Task, data: PreparedData, tokenizer: Any,
    retention: list[HeldOutSet], clock: Timings | None = None, cache_key: str | None = None,
) -> dict[str, Any]:
    """Score the starting model exactly as the tuned one will be (saved once, reused on resume; with
    `cache_key`, taken from or stored in the base-score cache, retention/base_cache.py)."""
    clock = clock or Timings()
    saved = run.path / "eval_base.json"
    # a resumed run scored its base already; the main process holds the folder, the others follow it
    earlier = trainer.sharding.from_main(json.loads(saved.read_text()) if saved.is_file() else None)
    if earlier is not None:
        return earlier
    with clock.phase("base_cache"):
        base = base_cache.load(cache_key) if cache_key else None
    if base is not None:
        log.info("base model scores reused from the cache (same model, data and settings)")
        run.update(base_scores={"cached": True, "key": cache_key})
    else:
        with base_function(trainer.unwrapped):
            base = _score_base(trainer, config, task, data, tokenizer, retention, clock)
        if cache_key and base:
            base_cache.store(cache_key, base)
            run.update(base_scores={"cached": False, "key": cache_key})
    if base and trainer.accelerator.is_main_process:
        run.write_json("eval_base.json", base)
    return base


def _score_base(trainer: Trainer, config: Config, task: Task, data: PreparedData, tokenizer: Any,
                retention: list[HeldOutSet], clock: Timings) -> dict[str, Any]:
    base: dict[str, Any] = {}
    if task.evaluates_base and config.eval.base:
        log.info("evaluating the base model (eval.base)")
        with clock.phase("base_eval"):
            base["validation"] = trainer.evaluate(data.validation)
            if data.test is not None and len(data.test):
                base["test"] = trainer.evaluate(data.test)
        prompts = data.extra.get("prompts") or []
        if prompts and trainer.generates_here:
            with clock.phase("base_generation"):
                base["generation"], base["answers"] = generation_eval(
                    trainer.unwrapped, tokenizer, prompts, config.generation, task.stop_ids(),
                    max_new_tokens=config.eval.generate_max_new_tokens, autocast=trainer.accelerator.autocast())
    if retention:
        names = ", ".join(s.name for s in retention)
        log.info("scoring %d retention set(s) before training: %s", len(retention), names)
        with clock.phase("retention_before"):
            base["retention"] = score_sets(trainer, retention, config, task, tokenizer)
    return base


def after_training(
    trainer: Trainer, run: RunFolder, config: Config, task: Task, data: PreparedData, tokenizer: Any,
    fit: FitResult, before: dict[str, Any], retention: list[HeldOutSet], clock: Timings | None = None,
) -> dict[str, Any]:
    """The final results (eval.json): tuned metrics, base or baseline and gain, retention and gates,
    warnings; writes generations.jsonl and samples_test.jsonl on the main process."""
    clock = clock or Timings()
    with clock.phase("final_eval"):
        results, outputs = _final_evaluation(trainer, config, task, data, fit)
    main = trainer.accelerator.is_main_process
    base = _base_section(task, data, before, outputs, config)
    with clock.phase("generation"):
        _generation_results(trainer, run, config, task, data, tokenizer, results, before)
    if base:
        results["base"] = base
        results["gain"] = _gain(base, results)
    if retention:
        with clock.phase("retention_after"):
            after = score_sets(trainer, retention, config, task, tokenizer)
        results["retention"] = retention_report(retention, before["retention"], after)
        results["gates"] = gate_checks(results["retention"])
        for check in results["gates"]["checks"]:
            (log.info if check["passed"] else log.warning)("gate %s: %s", "passed" if check["passed"] else "FAILED",
                                                          check["message"])
    with clock.phase("train_sample"):
        _train_sample(trainer, run, task, data, results)
    results["warnings"] = _warnings(run) + left_out_warnings(data.info)
    if main and "test" in outputs:
        rows = trainer.objective.worst_samples(outputs["test"], data.test, data, WORST_SAMPLES)
        if rows:
            run.write_jsonl("samples_test.jsonl", rows)
    return results


def _final_evaluation(
    trainer: Trainer, config: Config, task: Task, data: PreparedData, fit: FitResult
) -> tuple[dict[str, Any], dict[str, Any]]:
    used = "last"
    if config.eval.load_best and fit.best and trainer.load_best():
        used = "best"
    results: dict[str, Any] = {"weights": used, "best": fit.best}
    if fit.best:
        results["best_reason"] = (
            f"best: step {fit.best['step']}, validation {fit.best['metric']} {fit.best['value']:.4f}"
        )
    outputs: dict[str, Any] = {}
    results["validation"], outputs["validation"] = trainer.evaluate(data.validation, keep_outputs=True)
    fitted = task.calibrate(outputs["validation"], data)  # e.g. thresholds: test is scored with them
    if fitted is not None:
        results["calibration"] = fitted
        results["validation"] = trainer.objective.compute_metrics(outputs["validation"], data)
    if data.test is not None and len(data.test):
        results["test"], outputs["test"] = trainer.evaluate(data.test, keep_outputs=True)
    return results, outputs


def watch_train_sample(trainer: Trainer, config: Config, task: Task, data: PreparedData) -> None:
    """Have the loop score the training sample at every evaluation (its label probabilities over
    training are what `suspects_train.jsonl` ranks by)."""
    sample = task.train_sample(data, config.eval.score_train_rows, config.train.seed)
    if sample is not None:
        data.extra["train_sample"] = sample  # the same rows are scored once more after training
        trainer.watch(sample[0])


def _train_sample(trainer: Trainer, run: RunFolder, task: Task, data: PreparedData, results: dict[str, Any]) -> None:
    """Score the training sample with the final weights: eval.json `train_sample` (what the
    train/validation gap is read from) and suspects_train.jsonl (the rows whose label stayed least
    probable over training: label-noise candidates)."""
    sample = data.extra.get("train_sample")  # chosen by watch_train_sample before training
    if sample is None:
        return
    rows, indices = sample
    metrics, outputs = trainer.evaluate(rows, keep_outputs=True)
    results["train_sample"] = {"rows": len(rows), "of": len(data.train or []), **metrics}
    if not trainer.accelerator.is_main_process:
        return
    state = trainer.state
    suspects = task.label_suspects(outputs, rows, data, SUSPECTS, state.label_probability_sum,
                                   state.label_probability_evaluations)
    for suspect in suspects:
        suspect["row"] = int(indices[suspect["row"]])  # its row in the training split
    run.write_jsonl(SUSPECTS_FILE, suspects)


def _base_section(
    task: Task, data: PreparedData, before: dict[str, Any], outputs: dict[str, Any], config: Config
) -> dict[str, Any] | None:
    """The starting model's scores (tasks that can score it), else the trivial baseline's."""
    if task.evaluates_base:
        scored = {k: v for k, v in before.items() if k not in ("answers", "retention")}
        if not scored:
            return None
        return {"kind": "pretrained", "note": "the starting model, scored before the first step", **scored}
    if not config.eval.base:
        return None
    section: dict[str, Any] = {}
    for split, out in outputs.items():
        trivial = task.baseline_outputs(out, data)
        if trivial is None:
            return None
        section[split] = task.compute_metrics(trivial, data)
    kind, label, what = task.baseline
    note = f"{config.model.source} has no {task.name} head for these labels yet, so the baseline is {what}"
    return {"kind": kind, "label": label, "note": note, **section}


def _generation_results(
    trainer: Trainer, run: RunFolder, config: Config, task: Task, data: PreparedData, tokenizer: Any,
    results: dict[str, Any], before: dict[str, Any],
) -> None:
    """Tuned-model generations on the held-out prompts; every prompt's answers (base and tuned) go
    to generations.jsonl."""
    prompts = data.extra.get("prompts") or []
    if prompts and trainer.generates_here:
        results["generation"], answers = generation_eval(
            trainer.unwrapped, tokenizer, prompts, config.generation, task.stop_ids(),
            max_new_tokens=config.eval.generate_max_new_tokens, autocast=trainer.accelerator.autocast())
        if not trainer.accelerator.is_main_process:
            return
        base_answers = before.get("answers") or [None] * len(prompts)
        rows = [
            {"prompt": p.get("messages") or p.get("prompt"), "reference": p["reference"], "base": b, "tuned": a}
            for p, a, b in zip(prompts, answers, base_answers, strict=True)
        ]
        run.write_jsonl("generations.jsonl", rows)


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
            and math.isfinite(v) and math.isfinite(theirs[k])
        }
    return gain


def left_out_warnings(info: dict[str, Any]) -> list[str]:
    """Held-out rows the metrics do not cover (labels never seen in train), one line per split."""
    return [f"{split}: {count} row(s) have labels never seen in train and are left out of its metrics"
            for split, count in sorted((info.get("unseen_labels") or {}).items())
            if split != "train" and count]


def _warnings(run: RunFolder) -> list[str]:
    """Warnings about the training curves (train and validation diverging)."""
    path = run.path / "metrics.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    warning = divergence_warning(records)
    if warning:
        log.warning("%s", warning)
    return [warning] if warning else []
