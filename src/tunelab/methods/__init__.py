"""Methods: how a model is adapted (full, freeze, lora, dora, qlora). One module each, registered in METHODS."""

from tunelab.methods import dora, freeze, full, lora, qlora  # noqa: F401  (registration)
from tunelab.methods.base import METHODS, Method, count_parameters

__all__ = ["METHODS", "Method", "count_parameters"]
