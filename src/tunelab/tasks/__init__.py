"""Tasks: one module per task, registered in TASKS."""

from tunelab.tasks import (  # noqa: F401  (registration)
    causal_lm,
    embedding,
    image_classification,
    image_embedding,
    multi_label,
    regression,
    text_classification,
    token_classification,
)
from tunelab.tasks.base import TASKS, HeldOutSet, PreparedData, Task

__all__ = ["TASKS", "HeldOutSet", "PreparedData", "Task"]
