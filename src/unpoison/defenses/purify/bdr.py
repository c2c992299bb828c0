"""Bit-depth reduction: keep the top ``bits`` bits of every channel (torchvision ``RandomPosterize(bits)``, p=1)."""

from __future__ import annotations

import dataclasses

import numpy as np

from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset
from unpoison.defenses.base import Purifier, register_purifier


@dataclasses.dataclass
class BDRConfig(Config):
    bits: int = 2  # bits kept per channel (APBench's BDR baseline uses 2)

    def validate(self) -> None:
        check(1 <= self.bits <= 8, f"bits must be in [1, 8]; got {self.bits}")


def reduce_bit_depth(images: np.ndarray, bits: int) -> np.ndarray:
    """x & ~(2**(8-bits) - 1) on uint8 images: values become multiples of 2**(8-bits)."""
    return images & np.uint8(0xFF & ~(2 ** (8 - bits) - 1))


@register_purifier
class BDRPurifier(Purifier):
    name = "bdr"
    config_class = BDRConfig
    summary = "Bit-depth reduction to the top `bits` bits per channel (posterize); no training"

    def purify(self, ds: ImageDataset) -> ImageDataset:
        return ds.with_images(reduce_bit_depth(ds.images, self.config.bits), purified=self.record())
