"""Achieved FLOP/s and model FLOPs utilisation (MFU) of the training steps.

The first optimizer step runs under torch's FlopCounterMode, which counts the FLOPs of every matmul,
convolution and attention kernel the forward and backward passes dispatch (whatever the model or the
method: a LoRA step has no 6·N·tokens rule of thumb). That count, divided by the step's input
positions, prices every later step by its own positions. MFU is achieved FLOP/s over the measured
matmul peak of the precision in use (engine/hardware.py), summed over the GPUs of a multi-process run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from tunelab.engine.hardware import Peak


class FlopMeter:
    def __init__(self, peak: Peak, precision: str, devices: int) -> None:
        self.peak_flops = peak.for_precision(precision) * devices
        self.peak_device = peak.device
        self.per_position: float | None = None  # FLOPs per input position, from the first step
        self._counter: FlopCounterMode | None = None

    def counting(self) -> AbstractContextManager[Any]:
        """Wrap the forward/backward passes of a step; counts only until the first step is priced."""
        if self.per_position is not None:
            return nullcontext()
        self._counter = FlopCounterMode(display=False)
        return self._counter

    def step_flops(self, positions: int) -> float:
        """FLOPs of a step over `positions` input positions (this process's)."""
        if self.per_position is None:
            assert self._counter is not None
            self.per_position = self._counter.get_total_flops() / max(positions, 1)
            self._counter = None
        return self.per_position * positions

    def summary(self, flops: float, seconds: float) -> dict[str, float]:
        """achieved TFLOP/s and MFU for `flops` done in `seconds` (all processes together)."""
        achieved = flops / seconds if seconds > 0 else 0.0
        return {"tflops": round(achieved / 1e12, 4), "mfu": round(achieved / self.peak_flops, 4) if self.peak_flops else 0.0}


def real_tokens(batch: dict[str, Any]) -> int:
    """Tokens of a collated batch that are not padding (every side of a pair batch); 0 for images."""
    return sum(int(v.sum()) for k, v in batch.items() if k.endswith("attention_mask") and isinstance(v, torch.Tensor))


def positions(batch: dict[str, torch.Tensor]) -> int:
    """Input positions of a collated batch: tokens (padding included: it is computed) or images. A
    batch of several sequences per row (embedding pairs: anchor_input_ids, positive_input_ids) counts
    every side."""
    ids = [v for k, v in batch.items() if k.endswith("input_ids") and isinstance(v, torch.Tensor)]
    if ids:
        return sum(int(v.numel()) for v in ids)
    first = next((v for v in batch.values() if isinstance(v, torch.Tensor)), None)
    return int(first.shape[0]) if first is not None else 1
