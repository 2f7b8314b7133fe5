"""Full fine-tuning: every parameter trains."""

from tunelab.methods.base import METHODS, Method


@METHODS.register("full")
class Full(Method):
    name = "full"
