"""Creating the Accelerator for a config."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

if TYPE_CHECKING:
    from tunelab.config import Config


def launched_distributed() -> bool:
    """True under `accelerate launch` / torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(config: Config) -> Accelerator:
    from accelerate.state import AcceleratorState, GradientState, PartialState

    if not launched_distributed():
        # Accelerate keeps process-wide singletons; a second run in one process (tests, sweeps)
        # may use another precision, which the shared state would otherwise refuse.
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        PartialState._reset_state()
    import torch

    mixed = "bf16" if config.train.precision == "bf16" else "no"
    ddp = DistributedDataParallelKwargs(find_unused_parameters=False)
    # Without a GPU, Accelerate only forms a process group (gloo) when told it runs on CPU;
    # otherwise every launched process would silently train alone.
    cpu = launched_distributed() and not torch.cuda.is_available()
    return Accelerator(mixed_precision=mixed, cpu=cpu, kwargs_handlers=[ddp], step_scheduler_with_optimizer=False)
