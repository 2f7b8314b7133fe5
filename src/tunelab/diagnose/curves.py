"""Findings from the training and validation curves (metrics.jsonl) and the tuned-vs-base scores.

Thresholds are deliberately coarse: a finding should be something a person would act on, and a
healthy run of a tiny model on easy data must not raise any (tests/test_diagnose.py checks both).
"""

from __future__ import annotations

import math
import statistics

from tunelab.diagnose import proposals
from tunelab.diagnose.finding import Evidence, Finding
from tunelab.diagnose.view import RunView, is_finite
from tunelab.metrics.overfitting import divergence

SPIKE = 3.0  # a training loss this many times the first step's (the starting model's) is a blow-up
GRAD_BLOWUP = 10.0  # a gradient norm this many times the norms of the first steps is a blow-up
ENDED_ABOVE = 1.05  # the last tenth of training this far above the first step: the run went the wrong way
UNDERFIT_DROP = 0.10  # training loss that fell less than this (relative) barely moved
FLAT_GAIN = 0.01  # tuned within this (relative) of the base: training changed nothing that matters
STILL_RISING = 0.01  # the last evaluation this much better (relative) than the one before: more steps would help
GAP = 0.15  # train sample this much above validation (absolute, on a 0-1 metric): memorised
SMALL_SET = 500  # training rows below which overfitting is the expected failure


def curve_findings(run: RunView) -> list[Finding]:
    """Divergence first: a run that blew up is neither over- nor underfitting."""
    found = _divergence(run)
    if found:
        return found
    found = _overfitting(run)
    steps = _too_few_steps(run)
    if not found and not steps:
        found += _underfitting(run)
    return found + steps


def _losses(run: RunView) -> list[tuple[int, float]]:
    return [(int(r["step"]), r["loss"]) for r in run.train_steps if isinstance(r.get("loss"), (int, float))]


def _tenths(losses: list[float]) -> tuple[float, float]:
    """Mean of the first and of the last tenth of the finite training losses (at least one step each)."""
    finite = [v for v in losses if math.isfinite(v)]
    width = max(1, len(finite) // 10)
    return statistics.fmean(finite[:width]), statistics.fmean(finite[-width:])


def _divergence(run: RunView) -> list[Finding]:
    """NaN/inf losses; a loss that spiked far above where training started; a run whose loss ended
    above its start. Gradient-norm blow-ups are quoted as evidence of those, not judged alone: a
    fresh head's small first gradients grow as it starts to learn, which is no divergence."""
    losses = _losses(run)
    if not losses:
        return []
    evidence: list[Evidence] = []
    bad = [step for step, v in losses if not math.isfinite(v)]
    bad_eval = [int(r["step"]) for r in run.evaluations if isinstance(r.get("loss"), float)
                and not math.isfinite(r["loss"])]
    if bad or bad_eval:
        evidence.append(Evidence("first step with a NaN/inf loss", min(bad + bad_eval), "metrics.jsonl"))
    finite = [(step, v) for step, v in losses if math.isfinite(v)]
    start = finite[0][1] if finite else 0.0
    peak_step, peak = max(finite, key=lambda item: item[1]) if finite else (0, 0.0)
    if start > 0 and peak > SPIKE * start:
        evidence.append(Evidence(f"highest training loss (step {peak_step}) / the first step's loss",
                                 round(peak / start, 1), "metrics.jsonl"))
    ended_up = False
    if start > 0 and len(finite) >= 10:
        end = _tenths([v for _, v in finite])[1]
        if end > ENDED_ABOVE * start:
            ended_up = True
            evidence.append(Evidence("training loss, last tenth / the first step", round(end / start, 3),
                                     "metrics.jsonl"))
    if not evidence:
        return []
    norms = [r["grad_norm"] for r in run.train_steps if is_finite(r.get("grad_norm"))]
    if len(norms) >= 10:
        early = statistics.median(norms[:max(5, len(norms) // 10)])
        if early > 0 and max(norms) > GRAD_BLOWUP * early:
            evidence.append(Evidence("largest gradient norm / median norm of the first steps",
                                     round(max(norms) / early, 1), "metrics.jsonl"))
    nan = bool(bad or bad_eval)
    severity = "error" if nan or ended_up else "warning"
    summary = ("training diverged: the loss became NaN/inf" if nan else
               "training went the wrong way: the loss ended above where it started" if ended_up else
               f"unstable training: the loss spiked to {peak / start:.0f}x its starting value")
    return [Finding("divergence", severity, f"{summary} (learning rate {proposals.value(proposals.lr(run))})",
                    evidence, proposals.calmer(run))]


def _overfitting(run: RunView) -> list[Finding]:
    rows = int(((run.run.data or {}).get("rows") or {}).get("train") or 0)
    small = 0 < rows < SMALL_SET
    found: list[Finding] = []
    diverged = divergence(run.run.metrics)
    if diverged:
        evidence = [
            Evidence(f"validation loss at step {diverged['best_step']} (its best)", round(diverged["best_loss"], 4),
                     "metrics.jsonl"),
            Evidence(f"validation loss at step {diverged['last_step']} (the last)", round(diverged["last_loss"], 4),
                     "metrics.jsonl"),
            Evidence("training loss, mean of the interval ending at the best and at the last evaluation",
                     [round(diverged["train_before"], 4), round(diverged["train_after"], 4)], "metrics.jsonl"),
        ]
        if rows:
            evidence.append(Evidence("training rows", rows, "data.json"))
        found.append(Finding("overfitting", "warning",
                             f"validation loss rose {100 * diverged['rise']:.0f}% above its best while "
                             "training loss kept falling", evidence, proposals.restrained(run, small)))
    gap = _metric_gap(run)
    if gap and not found:
        metric, train, validation = gap
        evidence = [Evidence(f"{metric} on a sample of the training rows", round(train, 4), "eval.json"),
                    Evidence(f"{metric} on validation", round(validation, 4), "eval.json")]
        if rows:
            evidence.append(Evidence("training rows", rows, "data.json"))
        found.append(Finding("train-validation-gap", "warning",
                             f"the model fits the training rows far better than validation ({metric} {train:.3f} vs "
                             f"{validation:.3f})", evidence, proposals.restrained(run, small)))
    return found


def _metric_gap(run: RunView) -> tuple[str, float, float] | None:
    """(metric, train, validation) when a 0-1 metric on the training sample is GAP above validation."""
    for metric in ((run.metric,) if run.greater_is_better else ()) + ("accuracy",):
        train, validation = run.result("train_sample", metric), run.result("validation", metric)
        if train is None or validation is None or metric not in ((run.run.eval or {}).get("train_sample") or {}):
            continue
        if 0 <= validation <= 1 and train >= 0.9 and train - validation >= GAP:
            return metric, train, validation
        return None
    return None


def _underfitting(run: RunView) -> list[Finding]:
    evidence: list[Evidence] = []
    losses = [v for _, v in _losses(run)]
    if len(losses) >= 10:
        start, end = _tenths(losses)
        if start > 0 and end > (1 - UNDERFIT_DROP) * start:
            evidence.append(Evidence("training loss, first tenth -> last tenth", [round(start, 4), round(end, 4)],
                                     "metrics.jsonl"))
    tuned, base = run.result("validation"), run.base_result("validation")
    if tuned is not None and base is not None:
        scale = max(abs(base), 1e-12)
        better = (tuned - base) if run.greater_is_better else (base - tuned)
        if better / scale < FLAT_GAIN:
            what = "the majority-class baseline" if run.base_kind == "majority-class" else "the base model"
            evidence.append(Evidence(f"validation {run.metric}: tuned vs {what}", [round(tuned, 4), round(base, 4)],
                                     "eval.json"))
    if not evidence:
        return []
    return [Finding("underfitting", "warning", "underfitting: training barely moved the model", evidence,
                    proposals.stronger(run))]


def _too_few_steps(run: RunView) -> list[Finding]:
    """The selection metric improved at the last evaluation by more than STILL_RISING, and it is the best."""
    scores = [(int(r["step"]), r[run.metric]) for r in run.evaluations if is_finite(r.get(run.metric))]
    if len(scores) < 2:
        return []
    sign = 1 if run.greater_is_better else -1
    (_, before), (last_step, last) = scores[-2], scores[-1]
    best = max(sign * v for _, v in scores)
    improvement = sign * (last - before) / max(abs(before), 1e-12)
    if sign * last < best or improvement <= STILL_RISING:
        return []
    evidence = [Evidence(f"validation {run.metric} at the last two evaluations", [round(before, 4), round(last, 4)],
                         "metrics.jsonl"),
                Evidence("step of the last evaluation", last_step, "metrics.jsonl")]
    return [Finding("too-few-steps", "info", f"still improving at the end: validation {run.metric} improved "
                    f"{100 * improvement:.1f}% at the last evaluation", evidence, proposals.longer_training(run))]
