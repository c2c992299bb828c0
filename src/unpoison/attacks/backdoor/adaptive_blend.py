"""Adaptive-Blend (Qi et al., ICLR 2023, "Revisiting the Assumption of Latent Separability for Backdoor Defenses").

The blend pattern is cut into ``pieces`` equal blocks (a √pieces × √pieces grid). Each poisoned training sample is
blended, with weight ``alpha``, on a random subset of round(pieces_kept · pieces) blocks only, and relabelled; each
"cover" sample gets the same kind of partial trigger but keeps its label (it is not poison). Partial triggers and
covers weaken the latent separation between poisoned and clean samples that many defenses rely on. At test time the
full pattern is blended with the stronger ``test_alpha``.

Defaults follow backdoor-toolbox (``create_poisoned_set.py -poison_type adaptive_blend``): poison_rate 0.003,
cover_rate 0.003, alpha 0.15, test_alpha 0.2, 16 pieces with half of them masked per sample (exactly that many, as
its ``get_trigger_mask`` does). Pick-your-Poison instead uses 4 pieces, each dropped with probability 0.5: set
``pieces=4`` for the closest match. backdoor-toolbox blends a Hello-Kitty image; unpoison uses a seeded noise
pattern (no downloads), as :mod:`~unpoison.attacks.backdoor.blend` does. Grids that do not divide the image evenly
get blocks whose edges are at floor(i · H / √pieces), so any image size works.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from unpoison.attacks.backdoor.blend import Blend, BlendConfig, blend
from unpoison.attacks.base import register_attack
from unpoison.config import check
from unpoison.errors import UnpoisonError


@dataclasses.dataclass
class AdaptiveBlendConfig(BlendConfig):
    poison_rate: float = 0.003  # backdoor-toolbox
    alpha: float = 0.15  # training-time blend weight (backdoor-toolbox)
    test_alpha: float | None = 0.2  # test-time blend weight, stronger than alpha (backdoor-toolbox)
    cover_rate: float = 0.003  # fraction of the training set stamped with a partial trigger but correctly labelled
    pieces: int = 16  # blocks the pattern is cut into; a perfect square
    pieces_kept: float = 0.5  # fraction of the blocks blended into each training sample

    def validate(self) -> None:
        super().validate()
        check(0.0 <= self.cover_rate <= 1.0, f"cover_rate must be in [0, 1]; got {self.cover_rate}")
        check(self.pieces >= 1 and math.isqrt(self.pieces) ** 2 == self.pieces,
              f"pieces must be a perfect square (4, 9, 16, …); got {self.pieces}")
        check(0.0 < self.pieces_kept <= 1.0, f"pieces_kept must be in (0, 1]; got {self.pieces_kept}")
        check(round(self.pieces_kept * self.pieces) >= 1,
              f"pieces_kept {self.pieces_kept} of {self.pieces} pieces keeps no piece")


def piece_map(h: int, w: int, pieces: int) -> np.ndarray:
    """(H, W) int: the index (row-major) of the grid block each pixel belongs to."""
    g = math.isqrt(pieces)
    if g > h or g > w:
        raise UnpoisonError(f"{pieces} pieces do not fit {h}×{w} images")
    rows = (np.arange(h) * g) // h
    cols = (np.arange(w) * g) // w
    return rows[:, None] * g + cols[None, :]


@register_attack
class AdaptiveBlend(Blend):
    name = "adaptive_blend"
    config_class = AdaptiveBlendConfig
    summary = "Blend trigger split into pieces, random half per training sample, plus cover samples (Qi et al. 2023)"
    has_cover = True

    def _partial(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        cfg = self.config
        n, h, w, _ = images.shape
        kept = int(round(cfg.pieces_kept * cfg.pieces))
        # A random subset of `kept` pieces per sample: the first `kept` of a random permutation of each row.
        order = rng.random((n, cfg.pieces)).argsort(axis=1)
        keep = np.zeros((n, cfg.pieces), dtype=bool)
        np.put_along_axis(keep, order[:, :kept], True, axis=1)
        mask = keep[:, piece_map(h, w, cfg.pieces)]  # (N, H, W)
        return blend(images, trigger["pattern"], cfg.alpha, mask)

    def stamp_poison(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return self._partial(images, trigger, rng)

    def stamp_cover(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return self._partial(images, trigger, rng)
