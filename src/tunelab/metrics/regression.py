"""Regression metrics: RMSE, MAE, R² (scikit-learn), Pearson and Spearman correlation (scipy)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

NAMES = ("rmse", "mae", "r2", "pearson", "spearman")


def regression_metrics(targets: np.ndarray, predictions: np.ndarray, names: list[str]) -> dict[str, Any]:
    """The metrics of `predictions` [rows, targets] against `targets`, averaged over the targets (each
    target's own under per_target when there are several). A correlation of constant predictions is
    undefined: reported as 0 (no association), not NaN, so a run can still be ranked by it."""
    if len(targets) == 0:
        return {name: float("nan") for name in NAMES}
    per_target = {name: _one(targets[:, j], predictions[:, j]) for j, name in enumerate(names)}
    metrics: dict[str, Any] = {m: float(np.mean([t[m] for t in per_target.values()])) for m in NAMES}
    metrics["support"] = int(len(targets))
    if len(names) > 1:
        metrics["per_target"] = per_target
    return metrics


def _one(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    scores = {
        "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
        "mae": float(mean_absolute_error(truth, predicted)),
        "r2": float(r2_score(truth, predicted)) if len(truth) > 1 else float("nan"),
    }
    constant = len(truth) < 2 or np.ptp(predicted) == 0 or np.ptp(truth) == 0
    with warnings.catch_warnings():  # scipy warns on near-constant input; `constant` covers the exact case
        warnings.simplefilter("ignore")
        scores["pearson"] = 0.0 if constant else float(pearsonr(truth, predicted)[0])
        scores["spearman"] = 0.0 if constant else float(spearmanr(truth, predicted)[0])
    return scores
