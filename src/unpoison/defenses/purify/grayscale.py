"""Grayscale (ISS's Gray, Liu et al. 2023): ITU-R 601 luma, replicated to every channel."""

from __future__ import annotations

import dataclasses

import numpy as np

from unpoison.config import Config
from unpoison.data.dataset import ImageDataset
from unpoison.defenses.base import Purifier, register_purifier

_CHUNK = 4096  # images per block: bounds the int32 temporaries on large sets
_WEIGHTS = np.array([299, 587, 114], dtype=np.int32)  # ITU-R 601 luma × 1000, so the arithmetic stays exact


@dataclasses.dataclass
class GrayscaleConfig(Config):
    """No parameters."""


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) → luma rounded half up, repeated to 3 channels; 1-channel images are already gray."""
    if images.shape[-1] == 1:
        return images.copy()
    out = np.empty_like(images)
    for s in range(0, len(images), _CHUNK):
        block = images[s:s + _CHUNK].astype(np.int32)
        luma = (block[..., 0] * _WEIGHTS[0] + block[..., 1] * _WEIGHTS[1] + block[..., 2] * _WEIGHTS[2]
                + 500) // 1000  # weights sum to 1000, so luma ≤ 255
        out[s:s + _CHUNK] = luma.astype(np.uint8)[..., None]
    return out


@register_purifier
class GrayscalePurifier(Purifier):
    name = "grayscale"
    config_class = GrayscaleConfig
    summary = "Grayscale conversion, ITU-R 601 luma on all channels (ISS Gray); no training"

    def purify(self, ds: ImageDataset) -> ImageDataset:
        return ds.with_images(to_grayscale(ds.images), purified=self.record())
