"""Findings about the data: truncation, class imbalance and weak rare classes, label-noise
candidates, duplicates and leakage (data_check.json, data.json, eval.json, suspects_train.jsonl)."""

from __future__ import annotations

import statistics
from typing import Any

from tunelab.diagnose import proposals
from tunelab.diagnose.finding import Evidence, Finding, Proposal
from tunelab.diagnose.view import RunView, is_finite
from tunelab.report.load import SUSPECTS_FILE

TRUNCATED = 0.05  # more than this share of training rows cut at max_length loses what the model should read
IMBALANCE = 5.0  # largest / smallest class count in train
WEAK_F1 = 0.5  # a class scoring below this F1 on validation...
WEAK_BELOW_MACRO = 0.2  # ...and this far below the macro average...
RARE = 0.5  # ...with fewer training rows than this share of the median class: rare and poorly learned
IMPROBABLE = 0.2  # a training row whose label got at most this mean probability over training: a label to check
CONFIDENT = 0.9  # (older runs, final outputs only) a row the model gives another label with this probability
MOST_NOISE = 0.2  # more suspects than this share of the scored rows: the model, not the labels, is wrong
NOISY_SHARE = 0.01  # that many of the scored training rows: worth a warning, not a note
DUPLICATED = 0.05  # share of training rows that repeat another training row
SHOWN = 5  # example rows quoted in a finding


def data_findings(run: RunView) -> list[Finding]:
    return _leakage(run) + _truncation(run) + _imbalance(run) + _label_noise(run) + _duplicates(run)


def _train_check(run: RunView) -> dict[str, Any]:
    return ((run.data_check or {}).get("splits") or {}).get("train") or {}


def _truncation(run: RunView) -> list[Finding]:
    tokens = (_train_check(run).get("lengths") or {}).get("tokens") or {}
    rate = tokens.get("truncation_rate")
    if not is_finite(rate) or rate <= TRUNCATED:
        return []
    evidence = [Evidence("share of training rows longer than train.max_length", rate, "data_check.json"),
                Evidence("train.max_length", tokens.get("max_length"), "data_check.json"),
                Evidence("tokens per training row, p50 / p95 / max",
                         [tokens.get("p50"), tokens.get("p95"), tokens.get("max")], "data_check.json")]
    proposal = proposals.room(run, int(tokens.get("p95") or 0))
    return [Finding("truncation", "warning", f"{100 * rate:.0f}% of the training rows are cut at "
                    f"{tokens.get('max_length')} tokens", evidence, proposal or
                    Proposal([], "the model cannot read longer rows: shorten or split them"))]


def _imbalance(run: RunView) -> list[Finding]:
    counts = ((run.run.data or {}).get("label_counts") or {}).get("train") or _train_check(run).get("labels") or {}
    counts = {str(k): int(v) for k, v in counts.items() if isinstance(v, int) and v > 0}
    if len(counts) < 2:
        return []
    found = []
    ratio = max(counts.values()) / min(counts.values())
    if ratio >= IMBALANCE:
        rarest = sorted(counts, key=counts.__getitem__)[:SHOWN]
        evidence = [Evidence("largest / smallest class in train", round(ratio, 1), "data.json"),
                    Evidence("rarest classes (training rows)", {k: counts[k] for k in rarest}, "data.json")]
        proposal = proposals.balanced(run, f"the largest class has {ratio:.0f}x the rows of the smallest; balanced "
                                           "class weights make each class count equally in the loss")
        found.append(Finding("class-imbalance", "warning", f"classes are imbalanced {ratio:.0f}:1 in train",
                             evidence, proposal or Proposal([], "collect more rows of the rare classes")))
    weak = _weak_classes(run, counts)
    if weak:
        evidence = [Evidence(f"{name}: validation F1, training rows", [round(f1, 3), counts.get(name)], "eval.json")
                    for name, f1 in weak[:SHOWN]]
        names = ", ".join(name for name, _ in weak[:SHOWN])
        proposal = proposals.balanced(run, f"{names}: few training rows and poorly recognised; balanced class "
                                           "weights raise their pull on the loss (more rows of them help most)")
        found.append(Finding("weak-classes", "warning", f"rare classes score poorly: {names}", evidence,
                             proposal or Proposal([], f"collect more training rows of {names}")))
    return found


def _weak_classes(run: RunView, counts: dict[str, int]) -> list[tuple[str, float]]:
    per_class = ((run.run.eval or {}).get("validation") or {}).get("per_class") or {}
    macro = run.result("validation", "macro_f1")
    if not per_class or macro is None:
        return []
    median = statistics.median(counts.values())
    weak = [(name, scores["f1"]) for name, scores in per_class.items()
            if is_finite(scores.get("f1")) and scores["f1"] < WEAK_F1 and scores["f1"] < macro - WEAK_BELOW_MACRO
            and counts.get(name, 0) < RARE * median]
    return sorted(weak, key=lambda item: item[1])


def _label_noise(run: RunView) -> list[Finding]:
    confident = [r for r in run.suspects if _suspicious(r)]
    scored = int(((run.run.eval or {}).get("train_sample") or {}).get("rows") or 0)
    share = len(confident) / scored if scored else 0.0
    # a model that predicts one class (diverged, underfit) finds whole classes improbable: that is
    # no verdict on their labels
    if not confident or share > MOST_NOISE:
        return []
    evidence = [Evidence(f"training rows whose label had a mean probability <= {IMPROBABLE} over training",
                         len(confident), SUSPECTS_FILE)]
    if scored:
        evidence.append(Evidence("training rows scored", scored, "eval.json"))
    evidence += [Evidence(f"row {r.get('row')}: labelled {r.get('label')!r}, predicted {r.get('predicted')!r}",
                          {"label_p": round(r.get("confidence", 1 - r["score"]), 3),
                           "input": str(r.get("input", ""))[:160]}, SUSPECTS_FILE)
                 for r in confident[:SHOWN]]
    reason = f"check the labels of the rows in {SUSPECTS_FILE} and fix the wrong ones"
    overrides = proposals.cross_entropy(run, "label_smoothing=0.1") or []
    if overrides and not run.setting("objective.label_smoothing"):
        reason += "; label smoothing limits their pull meanwhile"
    else:
        overrides = []
    severity = "warning" if share >= NOISY_SHARE else "info"
    return [Finding("label-noise", severity, f"{len(confident)} training row(s) look mislabelled (their label stayed "
                    "improbable while the model learned the rest)", evidence, Proposal(overrides, reason))]


def _suspicious(row: dict[str, Any]) -> bool:
    """A label the model found improbable on average over training; runs written before the label
    probabilities were kept: one the final model contradicts with confidence."""
    if is_finite(row.get("confidence")):
        return row["confidence"] <= IMPROBABLE
    return is_finite(row.get("score")) and row["score"] >= CONFIDENT and row.get("predicted") != row.get("label")


def _duplicates(run: RunView) -> list[Finding]:
    train = _train_check(run)
    rows = int(train.get("rows") or 0)
    repeated = int((train.get("exact_duplicates") or {}).get("rows") or 0) + \
        int((train.get("near_duplicates") or {}).get("rows") or 0)
    if not rows or repeated / rows <= DUPLICATED:
        return []
    evidence = [Evidence("training rows that repeat another (exact + near)", repeated, "data_check.json"),
                Evidence("training rows", rows, "data_check.json")]
    return [Finding("duplicates", "info", f"{100 * repeated / rows:.0f}% of the training rows repeat another",
                    evidence, Proposal([], "repeated rows weigh more than the rest; drop the duplicates listed in "
                                           "data_check.html"))]


def _leakage(run: RunView) -> list[Finding]:
    leaked = ((run.data_check or {}).get("summary") or {}).get("leaked_rows") or {}
    leaks = {pair: int(n) for pair, n in leaked.items() if isinstance(n, int) and n > 0}
    if not leaks:
        return []
    evidence = [Evidence(f"rows of {pair.replace('->', ' also in ')}", n, "data_check.json")
                for pair, n in sorted(leaks.items())]
    overrides = [] if run.setting("governance.on_data_check_errors") == "block" else \
        ["governance.on_data_check_errors=block"]
    return [Finding("leakage", "error", "held-out rows also appear in training, so the held-out scores are inflated",
                    evidence, Proposal(overrides, "remove the shared rows (data_check.html lists them); blocking on "
                                                  "data-check errors stops the next run that leaks"))]
