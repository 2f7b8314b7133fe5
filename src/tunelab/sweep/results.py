"""What a sweep leaves behind, written from trial records alone so every backend gets the same outputs:
trials.jsonl, best.yaml, sweep.json, importance.png and (layers preset) layers.png."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from tunelab.config import Config, dump_config
from tunelab.runs.folder import atomic_write_text
from tunelab.sweep.presets import describe_recommendation, point_label, recommend
from tunelab.sweep.trial import COMPLETE, FAIL, PRUNED, SweepSetup, TrialRecord

log = logging.getLogger(__name__)
STATE_ORDER = {COMPLETE: 0, PRUNED: 1, FAIL: 2}


def ranked(records: list[TrialRecord], greater_is_better: bool) -> list[TrialRecord]:
    """Best first: finished trials by value, then pruned, then failed; ties by trial number."""
    sign = -1 if greater_is_better else 1

    def key(r: TrialRecord) -> tuple[int, float, int]:
        return STATE_ORDER[r.state], sign * r.value if r.state == COMPLETE else 0.0, r.number

    return sorted(records, key=key)


def best_record(records: list[TrialRecord], greater_is_better: bool) -> TrialRecord | None:
    first = ranked(records, greater_is_better)[:1]
    return first[0] if first and first[0].state == COMPLETE else None


def write_outputs(setup: SweepSetup, records: list[TrialRecord], base: Config, *, backend: str,
                  seed: int | None, tolerance: float) -> dict[str, Any]:
    """Write every output file into the sweep folder and return the summary (also sweep.json)."""
    out = setup.sweep_dir
    write_trials(out / "trials.jsonl", records)
    best = best_record(records, setup.greater_is_better)
    summary: dict[str, Any] = {
        "backend": backend, "config": str(setup.config_path), "overrides": setup.overrides,
        "space": setup.space.source, **setup.space.notes, "metric": setup.metric, "direction": setup.direction,
        "seed": seed, "trials": len(records), "counts": {s: n for s, n in Counter(r.state for r in records).items()},
        "best": None, "best_config": None,
    }
    for state in (COMPLETE, PRUNED, FAIL):
        summary["counts"].setdefault(state, 0)
    if best is not None:
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params, "run": best.run}
        summary["best_config"] = str(write_best_config(setup, best, base, out / "best.yaml"))
    summary["importance"], summary["importance_note"] = importance(setup, records, out / "importance.png")
    if setup.space.notes.get("preset") == "layers":
        rec = recommend(records, setup.greater_is_better, tolerance)
        summary["recommendation"] = rec
        summary["recommendation_text"] = describe_recommendation(rec, setup.metric) if rec else None
        plot_layers(records, rec, setup, tolerance, out / "layers.png")
    atomic_write_text(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    return summary


def write_trials(path: Path, records: list[TrialRecord]) -> None:
    rows = sorted(records, key=lambda r: r.number)
    atomic_write_text(path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows))


def write_best_config(setup: SweepSetup, best: TrialRecord, base: Config, path: Path) -> Path:
    """The best trial's full resolved config, runnable with `tunelab train best.yaml`: the trial's own
    overrides rebuilt, with the sweep's bookkeeping (output folder/name, Ray's thread cap) put back."""
    config = setup.trial_config(best.number, best.params)
    config.output = base.output.model_copy()
    config.train.num_threads = base.train.num_threads
    config.eval.metric = setup.metric
    atomic_write_text(path, dump_config(config))
    return path


def importance(setup: SweepSetup, records: list[TrialRecord], path: Path) -> tuple[dict[str, float] | None, str | None]:
    """fANOVA importances of the parameters over the finished trials, drawn as a bar chart."""
    done = [r for r in records if r.state == COMPLETE]
    if len(setup.space.params) < 2:
        return None, "importance.png skipped: the space has one parameter"
    if len(done) < 2:
        return None, f"importance.png skipped: {len(done)} finished trial(s), importances need at least 2"
    try:
        scores = _importances(setup, done)
    except Exception as err:  # too few distinct values, values outside the space (enqueued points), ...
        log.debug("parameter importances failed", exc_info=True)
        return None, f"importance.png skipped: {type(err).__name__}: {err}"
    _bar_chart(scores, f"parameter importance for {setup.metric} ({len(done)} trials)", path)
    return scores, None


def _importances(setup: SweepSetup, done: list[TrialRecord]) -> dict[str, float]:
    import optuna
    from optuna.importance import FanovaImportanceEvaluator

    study = optuna.create_study(direction=setup.direction)
    distributions = setup.space.distributions()
    study.add_trials([optuna.trial.create_trial(params=r.params, distributions=distributions, value=r.value)
                      for r in done])
    scores = optuna.importance.get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    return {k: float(v) for k, v in scores.items()}


def _figure(width: float = 7.0, height: float = 4.0) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), layout="constrained")


def _bar_chart(scores: dict[str, float], title: str, path: Path) -> None:
    names = list(scores)[::-1]  # largest on top
    fig = _figure(7.0, 1.2 + 0.45 * len(names))
    ax = fig.subplots()
    ax.barh(names, [scores[n] for n in names], color="#4c72b0")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_title(title)
    fig.savefig(path, dpi=120)


def plot_layers(records: list[TrialRecord], rec: dict[str, Any] | None, setup: SweepSetup, tolerance: float,
                path: Path) -> None:
    """Validation metric against trainable parameters (log x), each point labeled, the pick ringed."""
    done = [r for r in records if r.state == COMPLETE and r.trainable_params]
    fig = _figure()
    ax = fig.subplots()
    for i, record in enumerate(sorted(done, key=lambda r: r.trainable_params)):
        color = "#c44e52" if str(point_label(record)).startswith("lora") else "#4c72b0"
        ax.scatter(record.trainable_params, record.value, color=color, zorder=3)
        # Neighbours along x alternate above/below, so close points (LoRA r4 vs head only) stay readable.
        ax.annotate(point_label(record), (record.trainable_params, record.value), textcoords="offset points",
                    xytext=(5, 6 if i % 2 == 0 else -12), fontsize=8)
    if rec:
        ax.scatter(rec["trainable_params"], rec["value"], s=220, facecolors="none", edgecolors="black", zorder=4,
                   label=f"recommended: {rec['label']}")
        edge = rec["best"]["value"] - tolerance if setup.greater_is_better else rec["best"]["value"] + tolerance
        ax.axhline(edge, color="grey", linestyle="--", linewidth=1, label=f"within {tolerance} of the best")
        ax.legend(fontsize=8, loc="best")
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"validation {setup.metric} ({'higher' if setup.greater_is_better else 'lower'} is better)")
    ax.set_title("which layers to train: freeze (blue) vs LoRA (red)")
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
