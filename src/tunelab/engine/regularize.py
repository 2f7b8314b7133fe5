"""L2-SP: keep fine-tuned weights close to their pretrained values (Li et al., 2018).

The penalty `strength / 2 * sum ||w - w0||^2` is not added to the loss: its gradient
`strength * (w - w0)` is added to the gradients after backward. That costs one fused op per tensor
instead of a second autograd graph, and it is independent of how many items the step holds, so
gradient accumulation and process count do not change it (every process adds the same term after
DDP has averaged the data gradients)."""

from __future__ import annotations

import re

import torch
from torch import nn

# What PEFT wraps around the original names: strip it to compare with the checkpoint's names.
_PEFT_PARTS = re.compile(r"^base_model\.model\.|\.base_layer(?=\.)|\.modules_to_save\.default(?=\.)|"
                         r"\.original_module(?=\.)")


def canonical_name(name: str) -> str:
    """A parameter name as the unwrapped model would call it (PEFT prefixes and wrappers removed)."""
    return _PEFT_PARTS.sub("", name)


class L2SP:
    """Anchors every trainable parameter except new ones (task heads missing from the checkpoint)."""

    def __init__(self, model: nn.Module, strength: float, new_parameters: set[str]) -> None:
        self.strength = strength
        self.pairs = [
            (param, param.detach().clone())
            for name, param in model.named_parameters()
            if param.requires_grad and canonical_name(name) not in new_parameters
        ]

    @property
    def anchored(self) -> int:
        return sum(p.numel() for p, _ in self.pairs)

    @torch.no_grad()
    def add_gradients(self) -> float:
        """Add the penalty's gradient to every anchored parameter; return the penalty's value."""
        if not self.pairs:
            return 0.0
        squares = []
        for param, anchor in self.pairs:
            diff = param.detach() - anchor
            squares.append(diff.pow(2).sum())
            if param.grad is None:
                param.grad = diff.mul(self.strength)
            else:
                param.grad.add_(diff, alpha=self.strength)
        # one device sync for the logged value, not one per tensor
        return self.strength / 2 * float(torch.stack(squares).sum())
