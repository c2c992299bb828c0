"""BadNets (Gu et al., 2017): a small fixed patch stamped in a corner, poisoned samples relabelled to the target.

The trigger is a ``patch_size`` × ``patch_size`` pattern (white, or a black/white checkerboard) placed at one of the
four corners. Poisoned samples are drawn uniformly from the eligible ones (not already of the target class for
all-to-one; only the ``source`` class when one is given); the count is round(poison_rate · N) of the whole set.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from unpoison.attacks.backdoor.common import BackdoorConfig, TriggerBackdoor
from unpoison.attacks.base import register_attack
from unpoison.config import check
from unpoison.errors import UnpoisonError


@dataclasses.dataclass
class BadNetsConfig(BackdoorConfig):
    patch_size: int = 3
    location: Literal["bottom_right", "top_left", "bottom_left", "top_right"] = "bottom_right"
    pattern: Literal["white", "checkerboard"] = "white"

    def validate(self) -> None:
        super().validate()
        check(self.patch_size >= 1, f"patch_size must be ≥ 1; got {self.patch_size}")


def make_pattern(kind: str, size: int, channels: int) -> np.ndarray:
    """uint8 (size, size, channels): all 255, or a checkerboard with 255 in the top-left cell."""
    if kind == "white":
        cells = np.ones((size, size), dtype=bool)
    elif kind == "checkerboard":
        cells = (np.add.outer(np.arange(size), np.arange(size)) % 2) == 0
    else:
        raise UnpoisonError(f"unknown BadNets pattern {kind!r}; known: white, checkerboard")
    return np.repeat((cells * 255).astype(np.uint8)[..., None], channels, axis=2)


@register_attack
class BadNets(TriggerBackdoor):
    name = "badnets"
    config_class = BadNetsConfig
    summary = "Corner patch trigger (white or checkerboard), poisoned labels set to the target (all2one/all2all)"
    trigger_keys = ("pattern", "mask")
    norm = "l0"  # pixels changed

    def make_trigger(self, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        h, w, c = shape
        p = self.config.patch_size
        if p > h or p > w:
            raise UnpoisonError(f"BadNets patch_size {p} does not fit {h}×{w} images")
        loc = self.config.location
        r, s = (h - p if loc.startswith("bottom") else 0), (w - p if loc.endswith("right") else 0)
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[r:r + p, s:s + p] = 1
        return {"pattern": make_pattern(self.config.pattern, p, c), "mask": mask}

    def check_trigger(self, trigger: dict[str, np.ndarray], shape: tuple[int, int, int]) -> None:
        pat, mask, p = trigger["pattern"], trigger["mask"], self.config.patch_size
        if pat.dtype != np.uint8 or pat.shape != (p, p, shape[2]):
            raise UnpoisonError(f"saved BadNets pattern has shape {pat.shape} and dtype {pat.dtype}; "
                                f"expected uint8 ({p}, {p}, {shape[2]})")
        if mask.shape != shape[:2] or int(mask.sum()) != p * p:
            raise UnpoisonError(f"saved BadNets mask has shape {mask.shape} and {int(mask.sum())} pixels set; "
                                f"expected {shape[:2]} with {p * p}")

    def stamp(self, images: np.ndarray, trigger: dict[str, np.ndarray]) -> np.ndarray:
        out = images.copy()
        rows, cols = np.nonzero(trigger["mask"])  # the mask is one p×p square, row-major like the pattern
        out[:, rows, cols] = trigger["pattern"].reshape(-1, images.shape[-1])
        return out

    def budget(self) -> float:
        return float(self.config.patch_size**2)
