"""What this machine's matrix units can do, measured once: the peak behind MFU and `precision: auto`.

A short matmul probe (fp32 and bf16, square sizes that reach the peak on a laptop CPU as on a GPU)
gives the FLOP/s a step could at best achieve. It is cached in the tunelab cache per device, thread
count and torch version (`hardware.json`), so a run pays for it once per machine.

`precision: auto` chooses bf16 autocast where it is worth it, fp32 elsewhere:
- a CUDA GPU with bf16 support: bf16;
- a CPU whose measured bf16 matmul is at least BF16_GAIN times its fp32 (AVX512-BF16 / AMX cores);
- models below MIN_BF16_PARAMS parameters stay fp32: a tiny model's step is overhead, not matmuls,
  and bf16 rounding would only move its loss.
`model.attention: auto` picks eager attention for bf16 on a CPU with short rows (torch's CPU
flash-attention kernel is slower than eager there, measured in docs/journal.md), else the model's
default (SDPA).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tunelab.paths import cache_dir

if TYPE_CHECKING:
    from tunelab.config import Config

log = logging.getLogger(__name__)

BF16_GAIN = 1.3
MIN_BF16_PARAMS = 10_000_000
EAGER_MAX_LENGTH = 512


@dataclass(frozen=True)
class Peak:
    device: str  # "cpu: <model>, N threads" or the GPU's name
    fp32_flops: float  # measured matmul FLOP/s
    bf16_flops: float
    bf16_supported: bool

    def for_precision(self, precision: str) -> float:
        return self.bf16_flops if precision == "bf16" else self.fp32_flops


def device_kind() -> str:
    """Where training will run: cuda, mps or cpu (what Accelerate picks by default)."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def measured_peak(kind: str | None = None) -> Peak:
    """The matmul peak of this machine's training device, from the cache or measured now (< 1 s)."""
    kind = kind or device_kind()
    name = _device_name(kind)
    key = f"{name}|torch {torch.__version__}"
    cache = _cache_file()
    stored = _read(cache)
    if key in stored:
        return Peak(**stored[key])
    peak = _probe(kind, name)
    stored[key] = asdict(peak)
    try:
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored, indent=1))
        os.replace(tmp, cache)
    except OSError:
        pass  # an unwritable cache costs a probe next time
    return peak


def resolve_precision(config: Config, params: int) -> tuple[str, str]:
    """The precision `train.precision` means here, and why (for the log and run.json)."""
    wanted = config.train.precision
    if wanted != "auto":
        return wanted, "set in the config"
    kind = device_kind()
    if params < MIN_BF16_PARAMS:
        return "fp32", f"model has {params / 1e6:.1f}M parameters (< {MIN_BF16_PARAMS // 1_000_000}M: fp32)"
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"{torch.cuda.get_device_name()} supports bf16"
        return "fp32", f"{torch.cuda.get_device_name()} has no bf16"
    if kind != "cpu":
        return "fp32", f"{kind}: fp32"
    peak = measured_peak(kind)
    gain = peak.bf16_flops / max(peak.fp32_flops, 1.0)
    if peak.bf16_supported and gain >= BF16_GAIN:
        return "bf16", f"CPU bf16 matmul measured {gain:.2f}x fp32"
    return "fp32", f"CPU bf16 matmul measured {gain:.2f}x fp32 (< {BF16_GAIN}x)"


def resolve_attention(config: Config, precision: str) -> str | None:
    """The attn_implementation to load the model with, or None for the model's default."""
    wanted = config.model.attention
    if wanted != "auto":
        return wanted
    if device_kind() == "cpu" and precision == "bf16" and config.train.max_length <= EAGER_MAX_LENGTH:
        return "eager"
    return None


def checkpoint_parameters(folder: Path) -> int | None:
    """Parameter count read from safetensors headers (no weights loaded); None when none are there."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= int(dim)
                total += count
    return total


def _device_name(kind: str) -> str:
    if kind == "cuda":
        return torch.cuda.get_device_name()
    if kind == "mps":
        return "mps"
    return f"cpu: {_cpu_model()}, {torch.get_num_threads()} threads"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _probe(kind: str, name: str) -> Peak:
    device = torch.device(kind)
    size = 4096 if kind == "cuda" else 1024
    fp32 = _matmul_flops(device, torch.float32, size)
    supported = kind == "cuda" and torch.cuda.is_bf16_supported() or kind == "cpu"
    bf16 = _matmul_flops(device, torch.bfloat16, size) if supported else 0.0
    log.info("matmul peak of %s: fp32 %.0f GFLOP/s, bf16 %.0f GFLOP/s", name, fp32 / 1e9, bf16 / 1e9)
    return Peak(device=name, fp32_flops=fp32, bf16_flops=bf16, bf16_supported=supported)


def _matmul_flops(device: torch.device, dtype: torch.dtype, size: int) -> float:
    # Its own generator: the probe may run inside training (the first step's MFU), and drawing from the
    # global RNG there would change the run's dropout masks, so a run that probed and one that read
    # hardware.json would train to different weights (the crash suite caught it).
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        begun = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - begun)
    return 2 * size**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _cache_file() -> Path:
    return cache_dir() / "hardware.json"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}
