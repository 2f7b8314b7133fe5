"""Forgetting: retention sets scored before and after training, and the `eval.max_forgetting` gate.

Forgetting is the relative loss of ability on a set's metric: for perplexity and loss the relative
rise, for accuracy/F1-style metrics the relative fall. Positive means the model got worse; 0.1 means
10% worse. A set passes when its forgetting is at most its limit (its own `max_forgetting`, else
`eval.max_forgetting`; no limit, no gate)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tunelab.config.schema import RetentionSet
from tunelab.engine.generation import generation_eval
from tunelab.errors import ConfigError

if TYPE_CHECKING:
    from tunelab.config import Config
    from tunelab.engine import Trainer
    from tunelab.models import ResolvedModel
    from tunelab.tasks import HeldOutSet, PreparedData, Task

log = logging.getLogger(__name__)


def retention_specs(config: Config, task: Task) -> list[RetentionSet]:
    """The configured retention sets; 'auto' is the task's default (general-text for causal LMs)."""
    chosen = config.eval.retention
    if chosen == "none":
        return []
    if chosen == "auto":
        return [RetentionSet(source=task.default_retention)] if task.default_retention else []
    return list(chosen)


def prepare_sets(
    config: Config, task: Task, tokenizer: Any, model: ResolvedModel, data: PreparedData
) -> list[HeldOutSet]:
    """Load and tokenize every retention set (before the run folder exists, so bad ones stop early)."""
    sets = []
    for spec in retention_specs(config, task):
        held = task.prepare_retention(config, tokenizer, model, spec, data)
        held.info["limit"] = spec.max_forgetting if spec.max_forgetting is not None else config.eval.max_forgetting
        sets.append(held)
    names = [s.name for s in sets]
    if len(set(names)) < len(names):
        raise ConfigError(f"eval.retention: two sets are named {max(names, key=names.count)!r}",
                          fix="give each retention set its own name:")
    if config.eval.max_forgetting is not None and not sets:
        log.warning("eval.max_forgetting is set but there is no retention set to measure it on")
    return sets


def score_sets(trainer: Trainer, sets: list[HeldOutSet], config: Config, task: Task, tokenizer: Any) -> dict[str, Any]:
    """Every set's metrics with the model as it is now (generation too, for sets with prompts)."""
    scores: dict[str, Any] = {}
    for held in sets:
        model = held.score_with(trainer.unwrapped)
        metrics = trainer.evaluate(held.data.test, model=model, data=held.data, scorer=held.scorer or task)
        scores[held.name] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if held.prompts and trainer.generates_here:
            prompts = held.prompts[: config.eval.generate_samples]
            scores[held.name]["generation"], _ = generation_eval(
                trainer.unwrapped, tokenizer, prompts, config.generation, task.stop_ids(),
                max_new_tokens=config.eval.generate_max_new_tokens, autocast=trainer.accelerator.autocast())
    return scores


def forgetting(before: float, after: float, greater_is_better: bool) -> float:
    """Relative loss of ability (positive: worse); absolute when the starting value is 0."""
    lost = before - after if greater_is_better else after - before
    return lost / abs(before) if before else lost


def retention_report(sets: list[HeldOutSet], before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Per set: metric, before, after, forgetting, limit and whether it passed."""
    report = {}
    for held in sets:
        b, a = before[held.name], after[held.name]
        lost = forgetting(float(b[held.metric]), float(a[held.metric]), held.greater_is_better)
        limit = held.info.get("limit")
        report[held.name] = {
            "metric": held.metric, "greater_is_better": held.greater_is_better, "before": b, "after": a,
            "forgetting": lost, "limit": limit, "passed": limit is None or lost <= limit,
            "info": {k: v for k, v in held.info.items() if k != "limit"},
        }
    return report


def gate_checks(retention: dict[str, Any]) -> dict[str, Any]:
    """The forgetting gate of every set that has a limit; passed when all pass."""
    checks = []
    for name, entry in retention.items():
        if entry["limit"] is None:
            continue
        metric, b, a = entry["metric"], entry["before"][entry["metric"]], entry["after"][entry["metric"]]
        verdict = "within" if entry["passed"] else "over"
        message = (f"forgetting on {name}: {metric} {b:.4g} -> {a:.4g} ({100 * entry['forgetting']:+.1f}%, "
                   f"{verdict} the limit of {100 * entry['limit']:.1f}%)")
        checks.append({"name": f"forgetting:{name}", "passed": entry["passed"], "value": entry["forgetting"],
                       "limit": entry["limit"], "message": message})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}
