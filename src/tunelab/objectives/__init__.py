"""Objectives: what training optimises. One module each, registered in OBJECTIVES; settings in
config/schema.py (ObjectiveConfig)."""

from tunelab.objectives import (  # noqa: F401  (registration)
    binary_cross_entropy,
    cross_entropy,
    dpo,
    embedding,
    grpo,
    kto,
    orpo,
    regression,
    sft,
    simpo,
)
from tunelab.objectives.base import OBJECTIVES, Objective, build_objective, check_fits, metrics_of

__all__ = ["OBJECTIVES", "Objective", "build_objective", "check_fits", "metrics_of"]
