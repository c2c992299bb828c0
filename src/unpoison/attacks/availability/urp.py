"""URP: class-wise universal random noise (the random-noise baseline of Huang et al., ICLR 2021, "Unlearnable
Examples"; called URP in ECLIPSE and elsewhere).

Model-free and clean-label. Every class owns one noise pattern drawn i.i.d. uniformly from [−ε, ε] per pixel and
channel (ε = ``budget``, L∞, default 8/255), added to every poisoned image of the class.

The pattern is quantised once, to the uint8 grid: q = clip(round(255 · δ), −m, m) with m = ⌊255 · ε⌋, the
largest whole grey level within the budget (for 255 · ε whole, q is uniform over −m + 1 … m − 1 with half weight at
±m). Adding an integer pattern needs no further rounding and clipping to [0, 255] only shrinks a change, so the
measured L∞ is ≤ ε by construction, and equals m / 255 (= ε for 8/255) unless clipping removes every extreme value.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from unpoison.attacks.base import Attack, clean_label_result, measure_norms, register_attack
from unpoison.attacks.labelmaps import choose_poison_indices
from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.utils.seed import numpy_rng

_CHUNK = 4096  # images per block when measuring norms


@dataclasses.dataclass
class URPConfig(Config):
    budget: float = 8 / 255  # L∞ bound ε on the [0, 1] scale
    poison_rate: float = 1.0  # fraction of the training set poisoned

    def validate(self) -> None:
        # Below one grey level the quantised pattern would be all zero.
        check(1 / 255 - 1e-9 <= self.budget <= 1.0, f"budget must be in [1/255, 1]; got {self.budget}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")


@register_attack
class URP(Attack):
    name = "urp"
    kind = "availability"
    config_class = URPConfig
    summary = "Class-wise uniform random noise in ±budget (model-free, L∞ ≤ budget, clean-label)"

    def patterns(self, num_classes: int, image_shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
        """Integer class patterns (K, H, W, C) in 1/255 units, |value| ≤ ⌊255 · budget⌋."""
        eps = self.config.budget
        m = math.floor(eps * 255 + 1e-6)  # tolerance: 8/255 · 255 may come out as 7.999…
        out = np.empty((num_classes, *image_shape), dtype=np.int16)
        for k in range(num_classes):  # each class from its own stream: its pattern does not depend on K
            delta = numpy_rng("urp", "pattern", seed, k).uniform(-eps, eps, size=image_shape)
            out[k] = np.clip(np.rint(delta * 255), -m, m)
        return out

    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        cfg = self.config
        n = len(ds)
        q = self.patterns(ds.num_classes, ds.image_shape, seed)

        chosen = choose_poison_indices(np.ones(n, dtype=bool), cfg.poison_rate, n, numpy_rng("urp", "select", seed))
        is_poison = np.zeros(n, dtype=bool)
        is_poison[chosen] = True

        images = ds.images.copy()
        norms = np.zeros(n, dtype=np.float32)
        for s in range(0, len(chosen), _CHUNK):  # blocks bound the int16 copy; q[labels] is one gather
            part = chosen[s:s + _CHUNK]
            images[part] = np.clip(ds.images[part].astype(np.int16) + q[ds.labels[part]], 0, 255).astype(np.uint8)
            norms[part] = measure_norms(images[part], ds.images[part], "linf")

        attack = self.metadata(norm="linf", budget=cfg.budget, seed=seed)
        return clean_label_result(ds, images, is_poison, norms, attack, {"patterns": (q / 255.0).astype(np.float32)})
