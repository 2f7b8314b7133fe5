"""Tasks: one module per task, registered in TASKS."""

from tunelab.tasks import causal_lm, text_classification  # noqa: F401  (registration)
from tunelab.tasks.base import TASKS, PreparedData, Task

__all__ = ["TASKS", "PreparedData", "Task"]
