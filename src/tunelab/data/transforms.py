"""Image preprocessing in Pillow + numpy: the model's own resize/crop/normalize for evaluation, and
configurable augmentation (random resized crop, flip, colour jitter) for training only.

Written here rather than taken from torchvision: PyPI's torchvision does not load beside the CPU
torch build we pin, and these few operations follow torchvision's definitions.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from tunelab.config.schema import AugmentConfig

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
            "nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """How a model expects its input: square `size`, crop fraction, interpolation, normalization."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def evaluate(self, image: Image.Image) -> torch.Tensor:
        """Resize the shorter side to size / crop_pct, center-crop `size` (timm's eval transform)."""
        scale = int(math.floor(self.size / self.crop_pct))
        image = _resize_shorter(image, scale, self._resample)
        return self.to_tensor(_center_crop(image, self.size))

    def train(self, image: Image.Image, augment: AugmentConfig, rng: random.Random) -> torch.Tensor:
        if augment.random_resized_crop:
            image = random_resized_crop(image, self.size, augment.crop_scale, rng, self._resample)
        else:
            image = _center_crop(_resize_shorter(image, int(math.floor(self.size / self.crop_pct)), self._resample),
                                 self.size)
        if augment.horizontal_flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if augment.color_jitter:
            image = color_jitter(image, augment.color_jitter, rng)
        return self.to_tensor(image)

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(array.transpose(2, 0, 1).copy())

    @property
    def _resample(self) -> Image.Resampling:
        return RESAMPLE.get(self.interpolation, Image.Resampling.BICUBIC)


def _resize_shorter(image: Image.Image, size: int, resample: Image.Resampling) -> Image.Image:
    width, height = image.size
    if min(width, height) == size:
        return image
    if width <= height:
        return image.resize((size, max(1, round(height * size / width))), resample)
    return image.resize((max(1, round(width * size / height)), size), resample)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    left, top = max(0, (width - size) // 2), max(0, (height - size) // 2)
    cropped = image.crop((left, top, left + size, top + size))
    return cropped if cropped.size == (size, size) else cropped.resize((size, size))


def random_resized_crop(
    image: Image.Image, size: int, scale: tuple[float, float], rng: random.Random,
    resample: Image.Resampling = Image.Resampling.BICUBIC, ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """A crop of random area (fraction `scale` of the image) and aspect ratio, resized to `size`
    (torchvision's RandomResizedCrop: 10 tries, then a center crop)."""
    width, height = image.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            left, top = rng.randint(0, width - w), rng.randint(0, height - h)
            return image.resize((size, size), resample, box=(left, top, left + w, top + h))
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((size, size), resample, box=(left, top, left + side, top + side))


def color_jitter(image: Image.Image, strength: float, rng: random.Random) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s], random order."""
    enhancers = [ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color]
    rng.shuffle(enhancers)
    for enhancer in enhancers:
        image = enhancer(image).enhance(rng.uniform(max(0.0, 1 - strength), 1 + strength))
    return image
