"""Blend (Chen et al., 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning").

Poisoned images are alpha-blended with a fixed full-image pattern, x' = (1 − α)·x + α·pattern, and relabelled to the
target. BackdoorBench uses a Hello-Kitty image with α = 0.2; unpoison ships no image downloads, so the pattern is a
seeded uniform-noise image (H, W, C) — the other key Chen et al. themselves use ("random noise" blend). The noise is
drawn from ``trigger_seed`` (not the poisoning seed), so the trigger is fixed by the config alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unpoison.attacks.base import register_attack
from unpoison.attacks.backdoor.common import BackdoorConfig, TriggerBackdoor, to_uint8
from unpoison.config import check
from unpoison.errors import UnpoisonError


def noise_pattern(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A uniform-noise uint8 image (H, W, C)."""
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def blend(images: np.ndarray, pattern: np.ndarray, alpha: float, mask: np.ndarray | None = None) -> np.ndarray:
    """x + α·m·(p − x) = (1 − α·m)·x + α·m·p, rounded; ``mask`` (N, H, W) in {0, 1} limits it to some pixels."""
    x = images.astype(np.float32)
    w = np.float32(alpha) if mask is None else np.float32(alpha) * mask.astype(np.float32)[..., None]
    return to_uint8(x + w * (pattern.astype(np.float32) - x))


@dataclasses.dataclass
class BlendConfig(BackdoorConfig):
    poison_rate: float = 0.1  # BackdoorBench pratio
    alpha: float = 0.2  # blend weight of the pattern in poisoned training images (BackdoorBench)
    test_alpha: float | None = None  # blend weight at test time; None = alpha
    trigger_seed: int = 0  # seeds the noise pattern (independent of the poisoning seed)

    def validate(self) -> None:
        super().validate()
        check(0.0 < self.alpha <= 1.0, f"alpha must be in (0, 1]; got {self.alpha}")
        check(self.test_alpha is None or 0.0 < self.test_alpha <= 1.0,
              f"test_alpha must be in (0, 1] or unset; got {self.test_alpha}")


@register_attack
class Blend(TriggerBackdoor):
    name = "blend"
    config_class = BlendConfig
    summary = "Full-image blend with a seeded noise pattern, x' = (1-α)x + α·pattern, relabelled (all2one/all2all)"
    trigger_keys = ("pattern",)
    norm = "linf"  # |Δ| ≤ α on every pixel

    def make_trigger(self, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"pattern": noise_pattern(shape, rng)}

    def check_trigger(self, trigger: dict[str, np.ndarray], shape: tuple[int, int, int]) -> None:
        pat = trigger["pattern"]
        if pat.dtype != np.uint8 or pat.shape != shape:
            raise UnpoisonError(f"saved {self.name} pattern has shape {pat.shape} and dtype {pat.dtype}; "
                                f"expected uint8 {shape}")

    @property
    def test_alpha(self) -> float:
        return self.config.test_alpha if self.config.test_alpha is not None else self.config.alpha

    def stamp(self, images: np.ndarray, trigger: dict[str, np.ndarray]) -> np.ndarray:
        return blend(images, trigger["pattern"], self.test_alpha)

    def stamp_poison(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return blend(images, trigger["pattern"], self.config.alpha)

    def budget(self) -> float:
        return self.config.alpha
