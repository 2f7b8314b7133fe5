"""The report's content, section by section, as plain data for the HTML template.

Each builder takes the `RunData` and returns what its section shows, or None when the run lacks that
data (an older run, a failed run, a task without it); the template then says so in one line.
Numbers are formatted here so the template only lays them out.
"""

from __future__ import annotations

import json
from typing import Any

from tunelab.metrics.overfitting import divergence_warning
from tunelab.report import display as fmt
from tunelab.report import plots
from tunelab.report.load import RunData

SPLITS = ("validation", "test", "generation")
SAMPLE_ROWS = 50  # worst test predictions shown
TEXT_LIMIT = 600  # characters of one sample cell before it is cut


def figures(run: RunData) -> dict[str, bytes]:
    """Every figure the run has data for, by file name."""
    best = (run.run.get("best") or {}).get("step")
    drawn = {
        "loss.png": plots.loss_curves(run.train_records, run.validation_records, best),
        "lr.png": plots.learning_rate(run.train_records),
        "metrics.png": plots.validation_metrics(run.validation_records, run.selection_metric, best),
        "objective.png": plots.objective_statistics(run.train_records),
        "lengths.png": plots.token_lengths((run.data or {}).get("lengths") or {}),
    }
    matrix = confusion(run)
    if matrix:
        drawn["confusion.png"] = plots.confusion(matrix["labels"], matrix["matrix"],
                                                 f"Confusion matrix ({matrix['split']})")
    scores = per_class(run)
    if scores:
        title = f"F1 per {scores['kind']} ({scores['split']})"
        drawn["per_class_f1.png"] = plots.per_class_f1(scores["scores"], title)
    return {name: png for name, png in drawn.items() if png is not None}


def summary(run: RunData) -> list[tuple[str, str]]:
    """(label, value) rows describing the run."""
    record, ev = run.run, run.eval or {}
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    source = model.get("source") or run.section("model").get("source")
    steps = record.get("steps")
    progress = f"{fmt.number(steps)} steps, {fmt.number(record.get('epochs'), 2)} epochs" if steps is not None else None
    if progress and record.get("stopped_early"):
        progress += " (stopped early)"
    best = record.get("best_reason") or ev.get("best_reason")
    if best and ev.get("weights"):
        best += f"; model saved with the {ev['weights']} weights"
    rows = [
        ("run", run.id),
        ("status", str(record.get("status") or fmt.DASH)),
        ("task", str(record.get("task") or run.config.get("task") or fmt.DASH)),
        ("model", f"{source} ({model['kind']})" if model.get("kind") else str(source or fmt.DASH)),
        ("method", fmt.method(run.section("method"))),
        ("training", progress or fmt.DASH),
        ("time", _times(record)),
        ("trainable parameters", fmt.parameters(record.get("trainable_params"), record.get("total_params"))),
        ("best checkpoint", best or fmt.DASH),
        ("selection metric", run.selection_metric or fmt.DASH),
        ("gates", _gate_word(run)),
        ("folder", str(run.path)),
    ]
    if record.get("error"):
        rows.insert(2, ("error", str(record["error"])))
    return rows


def _times(record: dict[str, Any]) -> str:
    parts = [f"train {fmt.duration(record.get('train_seconds'))}"] if "train_seconds" in record else []
    if "eval_seconds" in record:
        parts.append(f"eval {fmt.duration(record['eval_seconds'])}")
    span = " → ".join(str(record[k]) for k in ("started", "ended") if record.get(k))
    if span:
        parts.append(span)
    return "; ".join(parts) or fmt.DASH


def _gate_word(run: RunData) -> str:
    found = gates(run)
    if found is None:
        return fmt.DASH
    return "passed" if found["passed"] else "FAILED"


def warnings(run: RunData) -> list[dict[str, str]]:
    """Everything the reader must not miss: failed gates, a failed run, eval.json warnings, unreadable files."""
    items: list[dict[str, str]] = []
    status = run.run.get("status")
    if status == "failed":
        items.append({"level": "error", "text": f"the run failed: {run.run.get('error') or 'no error recorded'}"})
    elif status in ("running", "interrupted", "pruned", "created"):
        items.append({"level": "warn", "text": f"the run is {status}: results below may be partial or missing"})
    found = gates(run)
    for check in (found or {}).get("checks", []):
        if not check.get("passed", True):
            items.append({"level": "error", "text": f"gate {check.get('name', '?')} failed: "
                                                    f"{check.get('message') or _limit_text(check)}"})
    for message in (found or {}).get("failed", []):
        if not any(message in item["text"] for item in items):
            items.append({"level": "error", "text": f"gate failed: {message}"})
    for text in _run_warnings(run):
        items.append({"level": "warn", "text": text})
    items.extend({"level": "warn", "text": problem} for problem in run.problems)
    return items


def _run_warnings(run: RunData) -> list[str]:
    """eval.json's warnings; runs written before eval.json had them get the overfitting check here."""
    if isinstance((run.eval or {}).get("warnings"), list):
        return [str(text) for text in run.eval["warnings"]]
    found = divergence_warning(run.metrics)
    return [found] if found else []


def _limit_text(check: dict[str, Any]) -> str:
    return f"value {fmt.number(check.get('value'))}, limit {fmt.number(check.get('limit'))}"


def base_vs_tuned(run: RunData) -> dict[str, Any] | None:
    """Base, tuned and gain per metric per split, with what the base was (pretrained, majority class)."""
    ev = run.eval or {}
    base = ev.get("base")
    if not isinstance(base, dict):
        return None
    gains = ev.get("gain") if isinstance(ev.get("gain"), dict) else {}
    rows = []
    for split in SPLITS:
        before, after = base.get(split), ev.get(split)
        if not isinstance(before, dict):
            continue
        after = after if isinstance(after, dict) else {}
        for name, value in before.items():
            if not fmt.is_number(value) or name in plots.NOT_METRICS:
                continue
            tuned = after.get(name)
            gain = (gains.get(split) or {}).get(name)
            if gain is None and fmt.is_number(tuned):
                gain = tuned - value
            rows.append({"split": split, "metric": name, "base": fmt.number(value), "tuned": fmt.number(tuned),
                         "gain": fmt.signed(gain), "better": fmt.better(name, gain)})
    kind = base.get("kind") or "pretrained"
    return {"kind": kind, "note": base.get("note") or "", "rows": rows}


def retention(run: RunData) -> list[dict[str, Any]] | None:
    """One row per retention set: its metric before and after training and the relative forgetting."""
    sets = (run.eval or {}).get("retention")
    if not isinstance(sets, dict) or not sets:
        return None
    rows = []
    for name, entry in sets.items():
        if not isinstance(entry, dict):
            continue
        metric = entry.get("metric")
        rows.append({
            "set": name, "metric": metric or fmt.DASH,
            "before": fmt.number(_metric_of(entry.get("before"), metric)),
            "after": fmt.number(_metric_of(entry.get("after"), metric)),
            "forgetting": fmt.percent(entry.get("forgetting"), 2),
            "limit": fmt.percent(entry.get("limit"), 2),
            "passed": entry.get("passed"),
        })
    return rows


def _metric_of(metrics: Any, name: str | None) -> Any:
    return metrics.get(name) if isinstance(metrics, dict) else metrics


def gates(run: RunData) -> dict[str, Any] | None:
    """Gate checks from eval.json, else the pass/fail summary in run.json."""
    found = (run.eval or {}).get("gates")
    if isinstance(found, dict):
        checks = [{**check, "value_text": fmt.number(check.get("value")),
                   "limit_text": fmt.number(check.get("limit"))}
                  for check in found.get("checks") or [] if isinstance(check, dict)]
        passed = found.get("passed", all(c.get("passed", True) for c in checks))
        return {"passed": bool(passed), "checks": checks, "failed": []}
    found = run.run.get("gates")
    if isinstance(found, dict):
        failed = [str(message) for message in found.get("failed") or []]
        return {"passed": bool(found.get("passed")), "checks": [], "failed": failed}
    return None


def _evaluated_split(run: RunData, *keys: str) -> tuple[str, str, dict[str, Any]] | None:
    """(split, key, value) of the first of test/validation whose metrics hold one of `keys`."""
    for split in ("test", "validation"):
        metrics = (run.eval or {}).get(split)
        for key in keys:
            if isinstance(metrics, dict) and isinstance(metrics.get(key), dict) and metrics[key]:
                return split, key, metrics[key]
    return None


def confusion(run: RunData) -> dict[str, Any] | None:
    """The test (else validation) confusion matrix of a classifier."""
    found = _evaluated_split(run, "confusion_matrix")
    if found is None or not found[2].get("labels") or not found[2].get("matrix"):
        return None
    return {"split": found[0], "labels": found[2]["labels"], "matrix": found[2]["matrix"]}


def per_class(run: RunData) -> dict[str, Any] | None:
    """Precision/recall/F1/support per class (classifiers), per label (multi-label) or per entity type (NER)."""
    found = _evaluated_split(run, "per_class", "per_label", "per_type")
    if found is None:
        return None
    split, key, scores = found
    rows = [{"name": name, **{k: fmt.number(s.get(k)) for k in ("precision", "recall", "f1", "support")}}
            for name, s in scores.items() if isinstance(s, dict)]
    kind = {"per_type": "entity type", "per_label": "label"}.get(key, "class")
    return {"split": split, "kind": kind, "scores": scores, "rows": rows}


def lengths(run: RunData) -> list[dict[str, str]] | None:
    """Per split: rows, max_length and rows cut at max_length; older runs give only their truncation counts."""
    data = run.data or {}
    max_length = run.section("train").get("max_length")
    if isinstance(data.get("lengths"), dict) and data["lengths"]:
        return [{**_length_row(split, h.get("rows"), h.get("truncated"), h.get("max_length", max_length)),
                 "p50": fmt.number(h.get("p50")), "p95": fmt.number(h.get("p95"))}
                for split, h in data["lengths"].items() if isinstance(h, dict)]
    if isinstance(data.get("truncated_rows"), dict):  # text classification before the histogram
        rows = data.get("rows") or {}
        return [_length_row(split, rows.get(split), cut, max_length) for split, cut in data["truncated_rows"].items()]
    if isinstance(data.get("stats"), dict):  # causal LMs record truncation per split in stats
        return [{**_length_row(split, s.get("samples"), s.get("longer_than_max_length"),
                               s.get("max_length", max_length)),
                 "p50": fmt.number(s.get("length_p50")), "p95": fmt.number(s.get("length_p95"))}
                for split, s in data["stats"].items() if isinstance(s, dict)]
    return None


def _length_row(split: str, rows: Any, cut: Any, max_length: Any) -> dict[str, str]:
    share = cut / rows if fmt.is_number(cut) and fmt.is_number(rows) and rows else None
    return {"split": split, "rows": fmt.number(rows), "max_length": fmt.number(max_length),
            "truncated": fmt.number(cut), "share": fmt.percent(share), "p50": fmt.DASH, "p95": fmt.DASH}


def samples(run: RunData) -> dict[str, Any] | None:
    """The worst-scored test predictions as a table of whatever fields the task wrote."""
    if not run.samples:
        return None
    columns = list(dict.fromkeys(key for row in run.samples[:SAMPLE_ROWS] for key in row))
    rows = [[_cell(row.get(column)) for column in columns] for row in run.samples[:SAMPLE_ROWS]]
    return {"columns": columns, "rows": rows, "shown": len(rows), "total": len(run.samples)}


def generations(run: RunData) -> dict[str, Any] | None:
    """Held-out prompts of a causal LM with the reference, the base model's and the tuned model's answers."""
    if not run.generations:
        return None
    rows = [{"prompt": _prompt(g.get("prompt")), "reference": _cell(g.get("reference")),
             "base": _cell(g.get("base")), "tuned": _cell(g.get("tuned"))} for g in run.generations[:SAMPLE_ROWS]]
    return {"rows": rows, "shown": len(rows), "total": len(run.generations),
            "has_base": any(g.get("base") is not None for g in run.generations[:SAMPLE_ROWS])}


def _prompt(prompt: Any) -> str:
    """A prompt as text: a chat becomes 'role: content' lines."""
    if isinstance(prompt, list):
        return _cut("\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" if isinstance(m, dict) else str(m)
                              for m in prompt))
    return _cell(prompt)


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, (dict, list)):
        return _cut(json.dumps(value, ensure_ascii=False))
    return fmt.number(value)


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def context(run: RunData, diagnosis: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the report template needs, section by section (`diagnosis`: the findings of
    `tunelab diagnose`, which the report recipe runs)."""
    record = run.run
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    matrix = confusion(run)
    return {
        "run_id": run.id,
        "task": str(record.get("task") or run.config.get("task") or fmt.DASH),
        "model": str(model.get("source") or run.section("model").get("source") or fmt.DASH),
        "status": str(record.get("status") or "unknown"),
        "summary": summary(run),
        "warnings": warnings(run),
        "diagnosis": diagnosis or [],
        "base": base_vs_tuned(run),
        "retention": retention(run),
        "gates": gates(run),
        "confusion_split": matrix["split"] if matrix else "",
        "per_class": per_class(run),
        "lengths": lengths(run),
        "samples": samples(run),
        "generations": generations(run),
        "config_text": run.config_text,
    }
