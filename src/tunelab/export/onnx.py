"""ONNX export of classifiers (text, token, image) with torch.onnx (dynamo exporter), verified in
onnxruntime against PyTorch before the file is put in place.

Batch and sequence dimensions are dynamic. The file holds one graph that returns `logits`; the
tokenizer or image preprocessing stays outside, as with any ONNX deployment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tunelab.errors import ExportError

log = logging.getLogger(__name__)
OPSET = 18
TOLERANCE = 1e-4  # max |logit difference| onnxruntime vs PyTorch, fp32


INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


class _Logits(nn.Module):
    """Return only the logits tensor (HF models return a ModelOutput). The explicit signature gives
    torch.export named inputs to attach dynamic shapes to."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if pixel_values is not None:  # HF vision models take it by name; plain backbones positionally
            out = self.model(pixel_values=pixel_values) if hasattr(self.model, "config") else self.model(pixel_values)
        else:
            out = self.model(**{k: v for k, v in given.items() if v is not None})
        return out if isinstance(out, torch.Tensor) else out.logits


def write_onnx(model: nn.Module, example: dict[str, torch.Tensor], out_file: Path,
               dynamic: dict[str, dict[int, str]]) -> dict[str, Any]:
    """Export `model(**example)` logits to `out_file`; verify with onnxruntime; return a summary.

    `dynamic` names the dynamic axes of each input, e.g. {"input_ids": {0: "batch", 1: "sequence"}}.
    """
    model = model.eval()
    unknown = set(example) - set(INPUTS)
    if unknown:
        raise ValueError(f"unsupported ONNX inputs {sorted(unknown)}; known: {INPUTS}")
    names = [n for n in INPUTS if n in example]
    wrapper = _Logits(model).eval()
    shapes = _dynamic_shapes(example, dynamic)
    tmp = out_file.parent / f".{out_file.name}.tmp"
    try:
        with torch.no_grad():
            program = torch.onnx.export(wrapper, (), kwargs={n: example[n] for n in names}, dynamo=True,
                                        input_names=names, output_names=["logits"], dynamic_shapes=shapes,
                                        opset_version=OPSET, external_data=False)
        program.save(str(tmp))
        diff = verify(tmp, wrapper, example)
        if diff > TOLERANCE:
            raise ExportError(f"the ONNX graph's logits differ from PyTorch's by {diff:.2e} (> {TOLERANCE:g})",
                              fix="report this model; the PyTorch model/ folder is unaffected")
        tmp.replace(out_file)
    except ExportError:
        raise
    except Exception as err:  # exporter failures are many types; say which model could not be traced
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ExportError(f"{type(model).__name__} could not be exported to ONNX: {first}",
                          fix="export --format merged and convert with your own tooling") from err
    finally:
        tmp.unlink(missing_ok=True)
    return {"file": str(out_file), "opset": OPSET, "inputs": names, "max_abs_diff": diff,
            "bytes": out_file.stat().st_size}


def _dynamic_shapes(example: dict[str, torch.Tensor], dynamic: dict[str, dict[int, str]]) -> dict[str, Any]:
    """torch.export dynamic shapes keyed by input name; axes with the same label share one Dim."""
    dims: dict[str, Any] = {}
    return {
        name: {axis: dims.setdefault(label, torch.export.Dim(label, min=1)) for axis, label in
               dynamic.get(name, {}).items()} or None
        for name in INPUTS if name in example
    }


def verify(path: Path, wrapper: Callable[..., torch.Tensor], example: dict[str, torch.Tensor]) -> float:
    """Max |difference| between onnxruntime and PyTorch logits on `example` and on a batch of a
    different size (so dynamic axes are exercised)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for inputs in (example, _resized(example)):
        with torch.no_grad():
            expected = wrapper(**inputs).float().numpy()
        got = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def _resized(example: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The example with one more row (the first repeated): a second batch size for verification."""
    return {k: torch.cat([v, v[:1]], dim=0) for k, v in example.items()}
