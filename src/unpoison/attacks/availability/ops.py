"""OPS: one-pixel shortcut (Wu et al., ICLR 2023, "One-Pixel Shortcut: on the Learning Preference of Deep Neural
Networks").

Model-free and clean-label. For every class, a search over all pixel positions (h, w) and all 2**C "bit" colours (each
channel 0 or 255: 8 colours for RGB, black/white for grayscale) picks the one pixel whose value would be both far
from and stable across the class's clean images; that pixel is then set to that colour in every poisoned image of
the class (an L0 perturbation of one pixel, whatever its L∞ size).

Score, with pixel values x on the [0, 1] scale, colour bits b ∈ {0, 1}^C, and statistics over the class's images
(all of them in the dataset, poisoned or not; std with ddof = 0)::

    score(b, h, w) = mean_c( mean_n |b_c − x[n, h, w, c]| ) / ( mean_c( std_n x[n, h, w, c] ) + SCORE_EPS )

Since x ∈ [0, 1], mean_n |b_c − x| is mean_n x for b_c = 0 and 1 − mean_n x for b_c = 1, so the whole (2**C, H, W)
score tensor comes from per-pixel means and stds. The original (APBench ``pixel_search``) divides by the std of
|b − x| pooled over images *and* channels (no eps); for a per-channel std the two agree, the pooled one also counts
colour differences between channels. SCORE_EPS keeps (near-)constant pixels finite.

As in the original, a (position, colour) pair already taken by an earlier class is excluded, so no two classes share
a shortcut; classes may pick different positions (usually do) or the same position with different colours. The
original code hard-codes 10 classes and 3 channels; this works for any class count, image size and 1 or 3 channels.
A class with no images gets position (−1, −1) and a NaN score.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unpoison.attacks.base import Attack, clean_label_result, measure_norms, register_attack
from unpoison.attacks.labelmaps import choose_poison_indices
from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.seed import numpy_rng

SCORE_EPS = 1e-3  # added to the std: pixel stds of natural images are ~0.1–0.3 on the [0, 1] scale
_CHUNK = 4096  # images per block when computing statistics and norms


@dataclasses.dataclass
class OPSConfig(Config):
    poison_rate: float = 1.0  # fraction of the training set poisoned

    def validate(self) -> None:
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")


def colour_bits(channels: int) -> np.ndarray:
    """All 2**C colours as bits (2**C, C): colour v has channel c = bit C−1−c of v (the original's order)."""
    v = np.arange(2**channels)[:, None]
    return (v >> (channels - 1 - np.arange(channels))[None, :]) & 1


def ops_scores(images: np.ndarray) -> np.ndarray:
    """The OPS score (2**C, H, W) of every (colour, position) for one class's uint8 images (n, H, W, C)."""
    n, h, w, c = images.shape
    s1 = np.zeros((h, w, c))
    s2 = np.zeros((h, w, c))
    for s in range(0, n, _CHUNK):  # float copies in blocks
        x = images[s:s + _CHUNK].astype(np.float64) / 255.0
        s1 += x.sum(axis=0)
        s2 += (x * x).sum(axis=0)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    bits = colour_bits(c)[:, None, None, :]  # (2**C, 1, 1, C)
    far = np.where(bits == 1, 1.0 - mean, mean).mean(axis=-1)  # mean |b − x| per channel, averaged over channels
    return far / (std.mean(axis=-1) + SCORE_EPS)


@register_attack
class OPS(Attack):
    name = "ops"
    kind = "availability"
    config_class = OPSConfig
    summary = "One-pixel shortcut: per class, the most deviating pixel set to a 3-bit colour (model-free, L0 = 1)"

    def search(self, ds: ImageDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class: position (K, 2) as (h, w), colour (K, C) uint8 in {0, 255}, and the score it reached (K,)."""
        h, w, c = ds.image_shape
        k = ds.num_classes
        if k > h * w * 2**c:
            raise UnpoisonError(f"OPS needs a distinct (pixel, colour) per class: {k} classes but only {h * w * 2**c}")
        bits = colour_bits(c)
        positions = np.full((k, 2), -1, dtype=np.int64)
        colours = np.zeros((k, c), dtype=np.uint8)
        best = np.full(k, np.nan, dtype=np.float32)
        taken = np.zeros((2**c, h, w), dtype=bool)
        for cls in range(k):
            members = np.flatnonzero(ds.labels == cls)
            if not len(members):
                continue
            score = np.where(taken, -np.inf, ops_scores(ds.images[members]))
            v, ph, pw = np.unravel_index(int(np.argmax(score)), score.shape)
            taken[v, ph, pw] = True
            positions[cls] = (ph, pw)
            colours[cls] = bits[v] * 255
            best[cls] = score[v, ph, pw]
        return positions, colours, best

    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        cfg = self.config
        n = len(ds)
        positions, colours, scores = self.search(ds)  # deterministic: the seed only picks which samples

        chosen = choose_poison_indices(np.ones(n, dtype=bool), cfg.poison_rate, n, numpy_rng("ops", "select", seed))
        is_poison = np.zeros(n, dtype=bool)
        is_poison[chosen] = True

        images = ds.images.copy()
        lab = ds.labels[chosen]
        images[chosen, positions[lab, 0], positions[lab, 1], :] = colours[lab]  # one fancy assignment for all

        norms = np.zeros(n, dtype=np.float32)
        for s in range(0, len(chosen), _CHUNK):
            part = chosen[s:s + _CHUNK]
            norms[part] = measure_norms(images[part], ds.images[part], "l0")

        attack = self.metadata(norm="l0", budget=1, seed=seed)
        arts = {"positions": positions, "colours": colours, "scores": scores}
        return clean_label_result(ds, images, is_poison, norms, attack, arts)
