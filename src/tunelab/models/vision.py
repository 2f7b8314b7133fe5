"""Vision models: timm-layout folders (config.json with "architecture") and their preprocessing.

Two folder layouts hold image classifiers:

- timm's hub layout: config.json {"architecture", "num_classes", "pretrained_cfg": {input_size, mean,
  std, interpolation, crop_pct, ...}} + model.safetensors (or pytorch_model.bin). timm builds any
  architecture; without timm (it needs torchvision, which not every torch build has) only the ones
  implemented here load: EfficientNet-Lite0 (`efficientnet_lite0`, `tf_efficientnet_lite0`).
- Hugging Face: config.json with "model_type" (ViT, ...) + preprocessor_config.json; transformers
  loads those (see the tiny-random-vit catalog model built here).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunelab.errors import ModelError
from tunelab.models.cache import build_atomically, models_dir
from tunelab.models.tiny import save_seeded

if TYPE_CHECKING:
    from torch import nn

TINY_VIT_NAME = "tiny-random-vit"
TINY_VIT_VERSION = "v1"  # bump when the builder changes what it writes
TINY_VIT_SIZE = 32

# timm's resolve_data_config defaults, for a timm folder whose pretrained_cfg leaves a key out.
TIMM_DEFAULTS: dict[str, Any] = {
    "input_size": [3, 224, 224],
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "interpolation": "bilinear",
    "crop_pct": 0.875,
}
# PIL resample codes, as Hugging Face image processors store them.
PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
HF_STANDARD_MEAN = [0.5, 0.5, 0.5]  # transformers' IMAGENET_STANDARD_MEAN/STD: ViTImageProcessor's defaults
HF_STANDARD_STD = [0.5, 0.5, 0.5]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot read {path} ({err})", fix="restore the model folder's config files") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object", fix="restore the model folder's config files")
    return data


def is_timm_folder(path: Path) -> bool:
    """config.json names a timm "architecture" and no transformers "model_type"."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return False
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "architecture" in config and "model_type" not in config


def timm_available() -> bool:
    """timm imports only beside a matching torchvision; find_spec alone cannot tell, so import it."""
    if importlib.util.find_spec("timm") is None:
        return False
    try:
        import timm  # noqa: F401
    except Exception:  # noqa: BLE001 - a torchvision built for another torch fails with RuntimeError
        return False
    return True


# --------------------------------------------------------------------------- timm-layout backbones


def create_vision_backbone(path: Path, num_classes: int) -> tuple[nn.Module, list[str]]:
    """The timm-layout model in `path` with its weights, and a fresh `num_classes` classifier when the
    stored one has another size. Returns (model, state-dict keys that were re-initialized)."""
    path = Path(path)
    config = _read_json(path / "config.json")
    architecture = config.get("architecture")
    if not isinstance(architecture, str):
        raise ModelError(f"{path / 'config.json'} names no \"architecture\"", fix="use a timm model folder")
    stored = int(config.get("num_classes", config.get("pretrained_cfg", {}).get("num_classes", 1000)))
    model = _build(architecture, stored, config)
    _load_weights(model, path, architecture)
    if num_classes == stored:
        return model, []
    model.reset_classifier(num_classes)
    return model, _classifier_keys(model)


def _build(architecture: str, num_classes: int, config: dict[str, Any]) -> nn.Module:
    if timm_available():
        import timm

        kwargs = dict(config.get("model_args") or {})
        if "global_pool" in config:
            kwargs.setdefault("global_pool", config["global_pool"])
        try:
            return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **kwargs)
        except (RuntimeError, ValueError, TypeError) as err:
            raise ModelError(f"timm cannot build architecture {architecture!r} ({err})",
                             fix="upgrade timm, or use a model folder of an architecture it knows") from None
    from tunelab.models import efficientnet_lite  # imports torch: only when an EfficientNet is built

    if architecture in efficientnet_lite.VARIANTS:
        return efficientnet_lite.build_model(architecture, num_classes)
    raise ModelError(f"architecture {architecture!r} needs timm",
                     fix="pip install timm torchvision (matching your torch), or use efficientnet-lite0")


def _load_weights(model: nn.Module, path: Path, architecture: str) -> None:
    import torch

    file = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if file is None:
        raise ModelError(f"model folder {path} has no {' or '.join(WEIGHT_FILES)}", fix="restore its weights file")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(file), device="cpu")
    else:
        state = torch.load(file, weights_only=True, map_location="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ModelError(f"{file} does not fit architecture {architecture!r} ({first})",
                         fix="check config.json's architecture and num_classes against the weights") from None


def _classifier_keys(model: nn.Module) -> list[str]:
    """State-dict keys of the module `get_classifier()` returns (timm's and ours)."""
    classifier = model.get_classifier()
    prefix = next(name for name, module in model.named_modules() if module is classifier)
    return [f"{prefix}.{key}" for key in classifier.state_dict()]


# --------------------------------------------------------------------------- preprocessing


def vision_data_config(path: Path) -> dict[str, Any]:
    """{"input_size": [3, H, W], "mean", "std", "interpolation", "crop_pct"} for evaluation transforms:
    resize the shorter side to H / crop_pct, then center-crop H x W (crop_pct 1.0: no crop)."""
    path = Path(path)
    if is_timm_folder(path):
        pretrained = _read_json(path / "config.json").get("pretrained_cfg") or {}
        out = {key: pretrained.get(key, default) for key, default in TIMM_DEFAULTS.items()}
        return _normalized(out)
    processor = path / "preprocessor_config.json"
    if processor.is_file():
        return _normalized(_from_image_processor(_read_json(processor)))
    raise ModelError(f"model folder {path} has no preprocessing settings (no timm pretrained_cfg and no "
                     "preprocessor_config.json)", fix="add the image processor's preprocessor_config.json")


def _from_image_processor(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same settings from a Hugging Face image processor (ViTImageProcessor, ConvNext, CLIP, ...)."""
    size = cfg.get("size") or {"height": 224, "width": 224}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop = cfg.get("crop_size") if cfg.get("do_center_crop") else None
    if isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    short = size.get("shortest_edge")
    if crop:
        height, width = crop["height"], crop["width"]
        crop_pct = cfg.get("crop_pct") or (height / short if short else 1.0)
    elif short:
        height = width = short
        crop_pct = cfg.get("crop_pct") or 1.0  # ConvNext: crop_pct with shortest_edge; else no crop
    else:
        height, width, crop_pct = size["height"], size["width"], 1.0  # ViT: resize straight to H x W
    normalize = cfg.get("do_normalize", True)
    return {
        "input_size": [3, int(height), int(width)],
        "mean": cfg.get("image_mean", HF_STANDARD_MEAN) if normalize else [0.0, 0.0, 0.0],
        "std": cfg.get("image_std", HF_STANDARD_STD) if normalize else [1.0, 1.0, 1.0],
        "interpolation": PIL_RESAMPLE.get(cfg.get("resample", 2), "bilinear"),
        "crop_pct": float(crop_pct),
    }


def _normalized(out: dict[str, Any]) -> dict[str, Any]:
    """Lists of floats (a single mean/std value means all three channels)."""
    for key in ("mean", "std"):
        value = out[key]
        out[key] = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    out["input_size"] = [int(v) for v in out["input_size"]]
    out["crop_pct"] = float(out["crop_pct"])
    return out


# --------------------------------------------------------------------------- tiny-random-vit


def _build_tiny_vit(folder: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(
        image_size=TINY_VIT_SIZE,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    processor = ViTImageProcessor(
        size={"height": TINY_VIT_SIZE, "width": TINY_VIT_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    # save_seeded saves its "tokenizer" with save_pretrained: the image processor writes preprocessor_config.json.
    save_seeded(ViTForImageClassification, config, processor, folder)


def tiny_vit_folder() -> Path:
    """The cached tiny ViT folder (random seeded weights, 32x32 input, patch 8), built on first use."""
    return build_atomically(models_dir() / f"{TINY_VIT_NAME}-{TINY_VIT_VERSION}", _build_tiny_vit)
