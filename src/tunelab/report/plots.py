"""Report figures, one function per figure; each returns PNG bytes, or None when its data is missing.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot): no global figure
state, no GUI backend, nothing left open after a call. Returning bytes rather than writing files
lets the caller embed the same image in the HTML and write every file only once all succeeded.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Counts and sizes logged beside the metrics; they are not curves worth drawing.
NOT_METRICS = {"step", "epoch", "split", "support", "samples", "tokens", "words"}
DPI = 100


def loss_curves(train: list[dict[str, Any]], validation: list[dict[str, Any]], best_step: int | None = None
                ) -> bytes | None:
    """Training loss (every logged step, with its smoothed trend) and validation loss (every
    evaluation) against the step."""
    train_pts = _points(train, "loss")
    val_pts = _points(validation, "loss")
    if not train_pts and not val_pts:
        return None
    fig, ax = _figure(7, 3.6)
    if train_pts:
        steps, losses = _xy(train_pts)
        if len(losses) >= SMOOTH_MIN_POINTS:  # single logged steps are noisy: show the trend over them
            ax.plot(steps, losses, lw=0.8, alpha=0.35, color="tab:blue", label="train loss (logged steps)")
            ax.plot(steps, smoothed(losses), lw=1.6, color="tab:blue", label="train loss (smoothed)")
        else:
            ax.plot(steps, losses, lw=1, alpha=0.8, color="tab:blue", label="train loss")
    if val_pts:
        ax.plot(*_xy(val_pts), marker="o", ms=4, lw=1.5, color="tab:orange", label="validation loss")
    _mark_best(ax, best_step)
    ax.set(xlabel="step", ylabel="loss", title="Loss")
    ax.legend()
    return _png(fig)


SMOOTH_MIN_POINTS = 5
SMOOTHING = 0.6  # weight of the running value, as TensorBoard's smoothing slider


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Debiased exponential moving average: the first points are not pulled toward zero."""
    out, running = [], 0.0
    for i, value in enumerate(values, start=1):
        running = weight * running + (1 - weight) * value
        out.append(running / (1 - weight**i))
    return out


def learning_rate(train: list[dict[str, Any]]) -> bytes | None:
    """The learning rate of each logged step (warmup and schedule)."""
    points = _points(train, "lr")
    if not points:
        return None
    fig, ax = _figure(7, 2.8)
    ax.plot(*_xy(points), lw=1.5, color="tab:purple")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set(xlabel="step", ylabel="learning rate", title="Learning rate")
    return _png(fig)


def validation_metrics(validation: list[dict[str, Any]], selection: str | None = None,
                       best_step: int | None = None) -> bytes | None:
    """One small panel per validation metric (they have different scales); the selection metric first."""
    names = [n for n in dict.fromkeys(k for r in validation for k in r)
             if n not in NOT_METRICS and n != "loss" and _points(validation, n)]
    if not names:
        return None
    names.sort(key=lambda n: n != selection)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):  # the grid may have spare axes
        ax.plot(*_xy(_points(validation, name)), marker="o", ms=3, lw=1.5)
        ax.set_title(f"{name} (selection)" if name == selection else name, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        _mark_best(ax, best_step, label=False)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Validation metrics")
    return _png(fig)


#: what every training step logs; anything else in a step record is the objective's (rewards, KL...)
ENGINE_KEYS = {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "samples_per_s", "tflops", "mfu", "l2_sp"}
#: statistics drawn together in one panel (preference runs: the two answers side by side)
SIDES = (("chosen_", "rejected_"), ("desirable_", "undesirable_"))


def objective_statistics(train: list[dict[str, Any]]) -> bytes | None:
    """The objective's per-step statistics (preference rewards and log-probs, KTO's KL, GRPO's rewards),
    one panel each; chosen/rejected (desirable/undesirable) pairs share a panel."""
    names = [n for n in dict.fromkeys(k for r in train for k in r) if n not in ENGINE_KEYS and _points(train, n)]
    panels: dict[str, list[str]] = {}
    for name in names:
        for first, second in SIDES:
            stem = name.removeprefix(first).removeprefix(second)
            if stem != name and f"{first}{stem}" in names and f"{second}{stem}" in names:
                panels.setdefault(f"{first.rstrip('_')} vs {second.rstrip('_')} {stem}",
                                  [f"{first}{stem}", f"{second}{stem}"])
                break
        else:
            panels[name] = [name]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.8 * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (title, series) in zip(axes, panels.items(), strict=False):
        for name in series:
            ax.plot(*_xy(_points(train, name)), lw=1.2, label=name if len(series) > 1 else None)
        if len(series) > 1:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle("Objective statistics per step")
    return _png(fig)


def confusion(labels: Sequence[str], matrix: Sequence[Sequence[int]], title: str = "Confusion matrix"
              ) -> bytes | None:
    """Confusion matrix with the count in every cell (rows: true label, columns: predicted)."""
    if not labels or not matrix:
        return None
    n = len(labels)
    side = min(max(4.0, 0.45 * n + 2.5), 16.0)
    fig, ax = _figure(side, side * 0.85)
    ax.grid(False)
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks = range(n)
    slanted = n > 3  # long label lists only fit at an angle
    ax.set_xticks(ticks, [str(label) for label in labels], rotation=45 if slanted else 0,
                  ha="right" if slanted else "center")
    ax.set_yticks(ticks, [str(label) for label in labels])
    if n <= 30:  # beyond that the numbers no longer fit in their cells
        peak = max((max(row) for row in matrix if row), default=0) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                ax.text(j, i, str(count), ha="center", va="center", fontsize=8 if n > 12 else 10,
                        color="white" if count > peak / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _png(fig)


def per_class_f1(per_class: dict[str, dict[str, Any]], title: str = "F1 per class") -> bytes | None:
    """Horizontal F1 bars, one per class (or entity type), worst at the top, support in the label."""
    items = [(name, scores) for name, scores in per_class.items() if isinstance(scores.get("f1"), (int, float))]
    if not items:
        return None
    items.sort(key=lambda item: item[1]["f1"], reverse=True)  # barh draws bottom-up: worst ends on top
    names = [f"{name} (n={scores.get('support', '?')})" for name, scores in items]
    values = [float(scores["f1"]) for _, scores in items]
    fig, ax = _figure(7, min(max(2.5, 0.32 * len(items) + 1.2), 30))
    bars = ax.barh(names, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=8)
    ax.set_xlim(0, 1.1)
    ax.set(xlabel="F1", title=title)
    return _png(fig)


def token_lengths(lengths: dict[str, dict[str, Any]]) -> bytes | None:
    """Token-length histogram per split, max_length as a vertical line, truncated rows in the legend."""
    splits = {name: h for name, h in lengths.items()
              if isinstance(h, dict) and h.get("counts") and len(h.get("edges", [])) == len(h["counts"]) + 1}
    if not splits:
        return None
    fig, ax = _figure(7, 3.6)
    max_length = None
    for name, hist in splits.items():
        rows = hist.get("rows") or sum(hist["counts"])
        cut = hist.get("truncated", 0) or 0
        share = 100 * cut / rows if rows else 0.0
        ax.stairs(hist["counts"], hist["edges"], lw=1.5, label=f"{name}: {cut} of {rows} truncated ({share:.1f}%)")
        max_length = hist.get("max_length", max_length)
    if max_length:
        ax.axvline(max_length, color="tab:red", ls="--", lw=1.2, label=f"max_length {max_length}")
    ax.set(xlabel="tokens per row", ylabel="rows", title="Token lengths")
    ax.legend(fontsize=8)
    return _png(fig)


def compare_curves(runs: list[dict[str, Any]], metric: str) -> bytes | None:
    """Overlaid curves of several runs: training loss (left) and the validation metric (right).

    `runs`: [{"id", "train": [(step, loss)], "validation": [(step, value)], "metric": name}].
    """
    if not any(r["train"] or r["validation"] for r in runs):
        return None
    fig = Figure(figsize=(12, 4.2), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for run, color in zip(runs, colors, strict=True):
        if run["train"]:
            left.plot(*_xy(run["train"]), lw=1, color=color, label=run["id"])
        if run["validation"]:
            suffix = "" if run.get("metric", metric) == metric else f" ({run['metric']})"
            right.plot(*_xy(run["validation"]), marker="o", ms=3, lw=1.5, color=color, label=run["id"] + suffix)
    left.set(xlabel="step", ylabel="loss", title="Training loss")
    right.set(xlabel="step", ylabel=metric, title=f"Validation {metric}")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return _png(fig)


def _points(records: list[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, value) pairs where `key` is a finite number."""
    return [(r["step"], float(r[key])) for r in records
            if "step" in r and isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
            and math.isfinite(r[key])]


def _xy(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [x for x, _ in points], [y for _, y in points]


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _mark_best(ax: Any, step: int | None, label: bool = True) -> None:
    if step is not None:
        ax.axvline(step, color="gray", ls=":", lw=1, label=f"best (step {step})" if label else None)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
