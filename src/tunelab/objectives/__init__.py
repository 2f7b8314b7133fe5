"""Objectives: what training optimises. One module each, registered in OBJECTIVES; settings in
config/schema.py (ObjectiveConfig)."""

from tunelab.objectives import cross_entropy, dpo, grpo, kto, orpo, sft, simpo  # noqa: F401  (registration)
from tunelab.objectives.base import OBJECTIVES, Objective, build_objective, check_fits, metrics_of

__all__ = ["OBJECTIVES", "Objective", "build_objective", "check_fits", "metrics_of"]
