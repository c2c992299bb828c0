"""The 1-, 3- and 5-pixel dirty-label triggers of incompatibility clustering (Jin et al., ICLR 2023).

As in the official code (``charlesjin/compatibility_clustering`` ``data/poison.py``, ``data/cifar10_backdoor.py``,
itself adapted from ``MadryLab/backdoor_data_poisoning``), one source→target pair is attacked:

- ``num_pixels=1`` ("pixel"): one pixel at a random position, rows and columns drawn from [0, H−1) × [0, W−1);
- ``num_pixels=3`` ("ell"): an L — the anchor, the pixel below it and the pixel right of it; anchor in [0, H−2);
- ``num_pixels=5`` ("pattern"): an X — the anchor and its four diagonal neighbours; anchor in [1, H−2);
- all trigger pixels get one random RGB colour, each channel drawn from [0, 255) (the reference's ``randint(255)``).

Position and colour come from ``trigger_seed`` (the paper draws them per scenario seed; vary ``trigger_seed`` to do
the same). Stamped source-class training images are relabelled to the target; at test time every source-class image
is stamped. The paper's pairs are (0,2), (1,3), (3,5), (7,4), (2,5), (8,6), (9,2), (3,7) with ε ∈ {0.05, 0.10, 0.20}
of the source class; the defaults are the first pair and ε = 0.1, i.e. poison_rate 0.01 of a 10-class balanced set
(500 of CIFAR-10's 50,000). ``source_fraction`` states ε directly and overrides poison_rate.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from unpoison.attacks.backdoor.common import BackdoorConfig, TriggerBackdoor
from unpoison.attacks.base import register_attack
from unpoison.config import check
from unpoison.errors import UnpoisonError

# Offsets (row, col) from the anchor, and the anchor's [low, high − margin) range, per trigger size (reference code).
SHAPES: dict[int, tuple[list[tuple[int, int]], int, int]] = {
    1: ([(0, 0)], 0, 1),  # "pixel": randint(31) on 32 px
    3: ([(0, 0), (1, 0), (0, 1)], 0, 2),  # "ell": randint(0, 30)
    5: ([(0, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)], 1, 2),  # "pattern": randint(1, 30)
}


@dataclasses.dataclass
class PixelConfig(BackdoorConfig):
    target: int = 2  # first source→target pair of the paper, (0, 2)
    source: int = 0  # required: the attack is source-specific
    poison_rate: float = 0.01  # = ε 0.1 of one class of a balanced 10-class set; see source_fraction
    source_fraction: float | None = None  # ε, the fraction of the source class poisoned; overrides poison_rate
    num_pixels: Literal[1, 3, 5] = 1  # 1 = single pixel, 3 = L shape, 5 = X shape (reference: pixel/ell/pattern)
    trigger_seed: int = 0  # seeds the position and colour (independent of the poisoning seed)

    def validate(self) -> None:
        super().validate()
        check(self.source >= 0, f"the pixel attack is source-specific: source must be a class index; got {self.source}")
        check(self.source_fraction is None or 0.0 <= self.source_fraction <= 1.0,
              f"source_fraction must be in [0, 1] or unset; got {self.source_fraction}")


@register_attack
class Pixel(TriggerBackdoor):
    name = "pixel"
    config_class = PixelConfig
    summary = "1/3/5-pixel source→target trigger with seeded position and colour (incompatibility clustering)"
    trigger_keys = ("positions", "color")
    norm = "l0"  # pixels changed

    def make_trigger(self, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        h, w, c = shape
        offsets, low, margin = SHAPES[self.config.num_pixels]
        if h - margin <= low or w - margin <= low:
            raise UnpoisonError(f"a {self.config.num_pixels}-pixel trigger does not fit {h}×{w} images")
        anchor = rng.integers([low, low], [h - margin, w - margin])
        positions = (anchor[None, :] + np.asarray(offsets)).astype(np.int64)
        color = rng.integers(0, 255, size=c).astype(np.uint8)
        return {"positions": positions, "color": color}

    def check_trigger(self, trigger: dict[str, np.ndarray], shape: tuple[int, int, int]) -> None:
        pos, color = trigger["positions"], trigger["color"]
        k = self.config.num_pixels
        ok = (pos.shape == (k, 2) and np.issubdtype(pos.dtype, np.integer) and color.dtype == np.uint8
              and color.shape == (shape[2],) and (pos >= 0).all() and (pos[:, 0] < shape[0]).all()
              and (pos[:, 1] < shape[1]).all())
        if not ok:
            raise UnpoisonError(f"saved pixel trigger (positions {pos.shape}, color {color.shape} {color.dtype}) does "
                                f"not fit {k} pixels on {shape} images")

    def stamp(self, images: np.ndarray, trigger: dict[str, np.ndarray]) -> np.ndarray:
        out = images.copy()
        pos = trigger["positions"]
        out[:, pos[:, 0], pos[:, 1]] = trigger["color"]  # (N, k, C) ← (C,)
        return out

    def poison_count(self, labels: np.ndarray) -> int:
        if self.config.source_fraction is None:
            return super().poison_count(labels)
        return int(round(self.config.source_fraction * int((labels == self.config.source).sum())))

    def budget(self) -> float:
        return float(self.config.num_pixels)
