"""Comparing runs: one row per run (the table and summary.json), their curves, and the config keys that differ.

Runs may be of different tasks. The compared metric is the one asked for, else the first run's
selection metric; a run that lacks it shows its own selection metric instead, and its row says so.
"""

from __future__ import annotations

import json
from typing import Any

from tunelab.config import validate
from tunelab.errors import TunelabError
from tunelab.report import display as fmt, sections
from tunelab.report.load import RunData

NOISE = ("output.",)  # keys that differ between any two runs and say nothing about them
MISSING = object()


def pick_metric(runs: list[RunData], requested: str | None = None) -> str:
    """The metric to compare: the requested one, else the first run's selection metric."""
    if requested:
        return requested
    return next((run.selection_metric for run in runs if run.selection_metric), "loss")


def row(run: RunData, metric: str) -> dict[str, Any]:
    """One run's comparison row, raw values (None where unknown)."""
    ev = run.eval or {}
    validation = ev.get("validation") if isinstance(ev.get("validation"), dict) else {}
    test = ev.get("test") if isinstance(ev.get("test"), dict) else {}
    used = metric
    if metric not in validation and metric not in test and run.selection_metric:
        used = run.selection_metric
    model = run.run.get("model") if isinstance(run.run.get("model"), dict) else {}
    found = sections.gates(run)
    return {
        "run": run.id,
        "path": str(run.path),
        "task": run.run.get("task") or run.config.get("task"),
        "model": model.get("source") or run.section("model").get("source"),
        "method": fmt.method(run.section("method")),
        "status": run.run.get("status"),
        "metric": used,
        "validation": _number(validation.get(used)),
        "test": _number(test.get(used)),
        "test_loss": _number(test.get("loss")),
        "gates": None if found is None else ("pass" if found["passed"] else "fail"),
        "train_seconds": _number(run.run.get("train_seconds")),
        "trainable_params": _number(run.run.get("trainable_params")),
        "total_params": _number(run.run.get("total_params")),
    }


def _number(value: Any) -> float | int | None:
    return value if fmt.is_number(value) else None


def curves(run: RunData, metric: str) -> dict[str, Any]:
    """A run's training-loss and validation-metric points for the overlaid plot."""
    used = metric if any(metric in r for r in run.validation_records) else (run.selection_metric or metric)
    return {
        "id": run.id,
        "metric": used,
        "train": [(r["step"], r["loss"]) for r in run.train_records if "step" in r and fmt.is_number(r.get("loss"))],
        "validation": [(r["step"], r[used]) for r in run.validation_records
                       if "step" in r and fmt.is_number(r.get(used))],
    }


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (`train.learning_rate`); lists and scalars are leaves."""
    if not isinstance(obj, dict) or (prefix and not obj):
        return {prefix: obj}
    flat: dict[str, Any] = {}
    for key, value in obj.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def config_diff(runs: list[RunData]) -> list[tuple[str, list[str]]]:
    """(dotted key, one display value per run) for every config key whose value is not the same in all runs."""
    flats = [flatten(_resolved(run.config)) for run in runs]
    keys = dict.fromkeys(key for flat in flats for key in flat)
    differing = []
    for key in keys:
        if key.startswith(NOISE):
            continue
        values = [flat.get(key, MISSING) for flat in flats]
        if len({_canonical(v) for v in values}) > 1:
            differing.append((key, [_shown(v) for v in values]))
    return differing


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    """The config with today's defaults filled in, so a key added to the schema after an older run was
    made does not show up as a difference; the config as written when it no longer validates."""
    try:
        return validate(config).model_dump(mode="json")
    except TunelabError:
        return config


def diff_text(runs: list[RunData], differing: list[tuple[str, list[str]]]) -> str:
    """config_diff.txt: a header naming the runs in column order, then `key: v1 | v2 | ...` per line."""
    lines = [f"# runs: {' | '.join(run.id for run in runs)}", "# output.* keys are not compared"]
    lines += [f"{key}: {' | '.join(values)}" for key, values in differing] or ["# the configs are identical"]
    return "\n".join(lines) + "\n"


def _canonical(value: Any) -> str:
    return "\0missing" if value is MISSING else json.dumps(value, sort_keys=True, default=str)


def _shown(value: Any) -> str:
    if value is MISSING:
        return fmt.DASH
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)
