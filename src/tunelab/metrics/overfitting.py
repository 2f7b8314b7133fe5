"""Overfitting detection from a run's metrics.jsonl: validation loss rising while training loss falls.

The signal is the classic divergence of the two curves. One noisy evaluation is not enough: the
validation loss must sit clearly above its best at the end of training (the last two evaluations,
or the last one when the best was the evaluation just before it), and the training loss, averaged
over each interval between evaluations so that per-step noise cancels, must have kept falling.
"""

from __future__ import annotations

from typing import Any

RISE = 0.05  # validation loss this far (relative) above its minimum counts as "clearly risen"
TRAIN_DROP = 0.01  # training loss must have fallen at least this much (relative) since the best evaluation
FIXES = ("set eval.early_stopping_patience, train fewer epochs, or regularize more "
         "(model.dropout, train.weight_decay, objective.label_smoothing)")


def divergence_warning(records: list[dict[str, Any]]) -> str | None:
    """A one-line warning when validation loss diverged upward from its best while training loss kept
    falling; None when the curves agree or there are fewer than 3 evaluations to judge from."""
    found = divergence(records)
    if found is None:
        return None
    return (
        f"possible overfitting: validation loss rose to {found['last_loss']:.4f} at step {found['last_step']} from "
        f"its best {found['best_loss']:.4f} at step {found['best_step']} (+{100 * found['rise']:.1f}%) while "
        f"training loss kept falling ({found['train_before']:.4f} -> {found['train_after']:.4f}); {FIXES}"
    )


def divergence(records: list[dict[str, Any]]) -> dict[str, float] | None:
    """The numbers of an upward divergence of validation loss from its best while training loss kept
    falling (best and last evaluation, relative rise, interval-mean training loss at both); None when
    the curves agree or there are fewer than 3 evaluations."""
    evals = _validation_losses(records)
    if len(evals) < 3:
        return None
    steps = [step for step, _ in evals]
    losses = [loss for _, loss in evals]
    best = min(range(len(losses)), key=losses.__getitem__)
    if best == len(losses) - 1 or not _risen(losses, best):
        return None
    train = _interval_train_means(records, steps)
    before, after = train[best], train[-1]
    if before is None or after is None or after >= before * (1 - TRAIN_DROP):
        return None
    return {"best_step": steps[best], "best_loss": losses[best], "last_step": steps[-1], "last_loss": losses[-1],
            "rise": (losses[-1] - losses[best]) / abs(losses[best]), "train_before": before, "train_after": after}


def _validation_losses(records: list[dict[str, Any]]) -> list[tuple[int, float]]:
    """(step, loss) of each evaluation in step order; a step evaluated twice (resume) keeps its last line."""
    by_step: dict[int, float] = {}
    for record in records:
        loss = record.get("loss")
        if record.get("split") == "validation" and isinstance(loss, (int, float)) and "step" in record:
            by_step[int(record["step"])] = float(loss)
    return sorted(by_step.items())


def _risen(losses: list[float], best: int) -> bool:
    """The last evaluation, and the one before it unless that one is the best, sit RISE above the best."""
    floor = losses[best]
    limit = floor + RISE * abs(floor) if floor else RISE
    tail = losses[best + 1:][-2:]
    return all(loss > limit for loss in tail)


def _interval_train_means(records: list[dict[str, Any]], steps: list[int]) -> list[float | None]:
    """Mean training loss of the lines in (previous evaluation step, this evaluation step], per evaluation."""
    train = [(int(r["step"]), float(r["loss"])) for r in records
             if "split" not in r and isinstance(r.get("loss"), (int, float)) and "step" in r]
    means: list[float | None] = []
    previous = float("-inf")
    for step in steps:
        inside = [loss for s, loss in train if previous < s <= step]
        means.append(sum(inside) / len(inside) if inside else None)
        previous = step
    return means
