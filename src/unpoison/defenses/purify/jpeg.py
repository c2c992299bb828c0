"""JPEG compression (ISS's JPEG-10, Liu et al. 2023): re-encode every image at a low quality, in memory."""

from __future__ import annotations

import dataclasses
import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset
from unpoison.defenses.base import Purifier, register_purifier

_CHUNK = 256  # images per task: enough work per task to hide the pool's overhead


@dataclasses.dataclass
class JPEGConfig(Config):
    quality: int = 10  # PIL JPEG quality, 1 (worst) .. 95 (best useful)
    workers: int = 0  # threads for the codec; 0 = min(4, CPU count)

    def validate(self) -> None:
        check(1 <= self.quality <= 100, f"quality must be in [1, 100]; got {self.quality}")
        check(self.workers >= 0, f"workers must be ≥ 0; got {self.workers}")


def jpeg_compress(images: np.ndarray, quality: int, workers: int = 0) -> np.ndarray:
    """JPEG-encode and decode uint8 images (N, H, W, C) with PIL's defaults (4:2:0 chroma subsampling for RGB)."""
    out = np.empty_like(images)
    gray = images.shape[-1] == 1

    def run(start: int) -> None:
        for i in range(start, min(start + _CHUNK, len(images))):  # the codec itself is per image
            buf = io.BytesIO()
            Image.fromarray(images[i, ..., 0] if gray else images[i]).save(buf, format="JPEG", quality=quality)
            buf.seek(0)
            with Image.open(buf) as im:
                arr = np.asarray(im)
            out[i] = arr[..., None] if gray else arr

    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(n_workers) as pool:  # PIL releases the GIL while encoding and decoding
        list(pool.map(run, range(0, len(images), _CHUNK)))
    return out


@register_purifier
class JPEGPurifier(Purifier):
    name = "jpeg"
    config_class = JPEGConfig
    summary = "JPEG re-compression at low quality (ISS JPEG-10); no training, no clean data"

    def purify(self, ds: ImageDataset) -> ImageDataset:
        new = jpeg_compress(ds.images, self.config.quality, self.config.workers)
        return ds.with_images(new, purified=self.record())
