"""Engine: the training loop on Accelerate, batching, optimizer/scheduler and checkpoints."""

from tunelab.engine.loop import FitResult, Trainer
from tunelab.engine.reporting import Reporter, SilentReporter

__all__ = ["FitResult", "Reporter", "SilentReporter", "Trainer"]
