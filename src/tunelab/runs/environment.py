"""What the run ran on: packages, threads, hardware, git commit. Written to environment.json."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any

import torch

import tunelab


def collect_environment() -> dict[str, Any]:
    return {
        "tunelab": tunelab.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "memory_gb": _memory_gb(),
        "git_commit": _git_commit(),
        "packages": _packages(),
    }


def _packages() -> dict[str, str]:
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name.lower()] = dist.version
    return dict(sorted(found.items()))


def _memory_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def _git_commit() -> str | None:
    """The commit of the tunelab source tree, when it is a git checkout (editable installs)."""
    here = os.path.dirname(os.path.abspath(tunelab.__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "-C", here, "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
