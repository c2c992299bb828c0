"""AR: autoregressive perturbations (Sandoval-Segura et al., NeurIPS 2022, "Autoregressive Perturbations for Data
Poisoning").

Model-free and clean-label. Every class owns a causal 2-D autoregressive (AR) process per colour channel: a
``window`` × ``window`` filter whose bottom-right entry (the pixel being generated) is 0. A noise image is generated
on an (H + crop) × (W + crop) canvas: the whole canvas starts as i.i.d. N(0, 1) values, then every pixel from row and
column ``window − 1`` on is overwritten, in raster order, by the filter's weighted sum of the already generated
neighbours above and to the left of it (x[i, j] = Σ_{a,b} coef[a, b] · x[i − w + 1 + a, j − w + 1 + b]). Only the
first ``window − 1`` rows and columns keep their random start; the first ``crop`` rows and columns are then dropped
(the original's 36 × 36 canvas cropped to 32 × 32), and the rest is scaled to L2 = ``budget``. Every poisoned image
gets a fresh start, so its perturbation is unique, yet all perturbations of a class obey the same linear recurrence:
the class's own filter (with −1 at the generated pixel) maps them to ~0, which a network learns as a shortcut.

Coefficients, as in the original (``ARProcessPerturb3Channel``): drawn N(0, 1) per class and channel with the
generated pixel's entry 0, then divided by their sum, so they sum to 1 (a constant image is a fixed point: the
texture neither dies out nor is dominated by the start region). Normalising the *absolute* values to 1 instead is
provably stable but makes the process decay within a few pixels, leaving nothing after the crop; a sum-to-1 draw can
instead diverge, so (like the original's parameter finder) a draw is kept only when trial generations at the actual
canvas size stay finite with an RMS ≤ ``_MAX_GAIN`` times that of the start. The original ships 10 (CIFAR-10) or 100
pre-sampled filter sets; drawing them from the seed works for any class count.

Generation is vectorised over images and channels and walks the canvas by anti-diagonals (pixels with equal i + j
depend only on earlier diagonals), i.e. H + W steps rather than H · W.

Quantisation: each image's integer perturbation is round(s · 255 · δ) with the largest s (bisection, per image)
whose L2 still fits the budget; clipping to [0, 255] afterwards only shrinks a pixel's change, so every measured
norm is ≤ the budget, and close to it except where clean pixels saturate.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unpoison.attacks.base import Attack, clean_label_result, measure_norms, quantise_l2, register_attack
from unpoison.attacks.labelmaps import choose_poison_indices
from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.seed import numpy_rng

_CHUNK = 4096  # images per block when measuring norms
_CANVAS_ELEMS = 2**23  # float64 canvas values per generation block (64 MiB): bounds memory for any image size
_MAX_GAIN = 4.0  # stability test: RMS of a generated pattern ≤ this × RMS of its N(0, 1) start
_TRIALS = 4  # random starts per candidate filter in the stability test
_PROPOSALS = 16  # candidate filters per channel drawn at once (≈ 20% pass, so one batch almost always suffices)
_MAX_ROUNDS = 200


@dataclasses.dataclass
class ARConfig(Config):
    budget: float = 1.0  # L2 norm of each perturbation on the [0, 1] scale (the paper's ε = 1.0)
    window: int = 3  # side of the causal AR window (3: 8 coefficients per channel, as in the paper)
    crop: int = 4  # rows/columns dropped from the top-left of the generated canvas (the original: 36 → 32)
    poison_rate: float = 1.0  # fraction of the training set poisoned

    def validate(self) -> None:
        check(self.budget > 0, f"budget must be > 0; got {self.budget}")
        check(self.window >= 2, f"window must be ≥ 2; got {self.window}")
        check(self.crop >= 0, f"crop must be ≥ 0; got {self.crop}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")


def ar_generate(coef: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Run the causal AR recurrence in place on ``start`` (n, C, Hc, Wc) with per-image filters (n, C, w, w).

    The bottom-right coefficient must be 0 (the generated pixel does not feed itself). Returns ``start``.
    """
    x = start
    _, _, hc, wc = x.shape
    w = coef.shape[-1]
    if hc < w or wc < w:
        raise UnpoisonError(f"AR window {w} does not fit a {hc}×{wc} canvas")
    off = np.arange(w) - (w - 1)
    for d in range(2 * (w - 1), hc + wc - 1):  # one anti-diagonal per step: its pixels are independent
        i = np.arange(max(w - 1, d - (wc - 1)), min(hc - 1, d - (w - 1)) + 1)
        j = d - i
        rows = (i[:, None, None] + off[None, :, None]).repeat(w, axis=2)
        cols = (j[:, None, None] + off[None, None, :]).repeat(w, axis=1)
        x[:, :, i, j] = np.einsum("ncpab,ncab->ncp", x[:, :, rows, cols], coef)
    return x


@register_attack
class AR(Attack):
    name = "ar"
    kind = "availability"
    config_class = ARConfig
    summary = "Class-wise autoregressive noise textures, fresh per image (model-free, L2 ≤ budget, clean-label)"

    def _canvas(self, image_shape: tuple[int, int, int]) -> tuple[int, int]:
        h, w, _ = image_shape
        hc, wc = h + self.config.crop, w + self.config.crop
        if min(hc, wc) < self.config.window:
            raise UnpoisonError(f"AR window {self.config.window} does not fit {h}×{w} images "
                                f"with crop {self.config.crop}")
        return hc, wc

    def coefficients(self, num_classes: int, image_shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
        """Stable AR filters (K, C, w, w), summing to 1 per class and channel, bottom-right entry 0."""
        hc, wc = self._canvas(image_shape)
        c, w = image_shape[2], self.config.window
        out = np.zeros((num_classes, c, w, w))
        for k in range(num_classes):  # each class from its own stream: its filter does not depend on K
            rng = numpy_rng("ar", "coefficients", seed, k)
            todo = list(range(c))
            for _ in range(_MAX_ROUNDS):
                b = rng.standard_normal((_PROPOSALS, len(todo), w, w))
                b[..., -1, -1] = 0.0
                s = b.sum(axis=(-2, -1), keepdims=True)
                ok = np.abs(s[..., 0, 0]) > 1e-3  # a near-zero sum would blow the filter up
                b = b / np.where(np.abs(s) > 1e-3, s, 1.0)
                start = rng.standard_normal((_TRIALS, _PROPOSALS, len(todo), hc, wc))
                with np.errstate(all="ignore"):  # diverging candidates overflow; they are rejected below
                    gen = ar_generate(np.broadcast_to(b, start.shape[:3] + (w, w)).reshape(-1, len(todo), w, w),
                                      start.reshape(-1, len(todo), hc, wc))
                    gen = gen.reshape(start.shape)[..., self.config.crop:, self.config.crop:]
                    rms = np.sqrt((gen**2).mean(axis=(-2, -1)))  # (trials, proposals, channels)
                    ok &= (np.isfinite(rms) & (rms <= _MAX_GAIN)).all(axis=0)
                for pos, ch in enumerate(list(todo)):
                    hits = np.flatnonzero(ok[:, pos])
                    if len(hits):
                        out[k, ch] = b[hits[0], pos]
                        todo.remove(ch)
                if not todo:
                    break
            else:
                raise UnpoisonError(f"found no stable AR filter for class {k} in {_MAX_ROUNDS} rounds")
        return out

    def perturbations(self, coef: np.ndarray, labels: np.ndarray, image_shape: tuple[int, int, int],
                      rng: np.random.Generator) -> np.ndarray:
        """Float perturbations (n, H, W, C), L2 = budget each, one fresh AR start per image."""
        h, w, c = image_shape
        hc, wc = self._canvas(image_shape)
        crop = self.config.crop
        out = np.empty((len(labels), h, w, c), dtype=np.float64)
        step = max(1, _CANVAS_ELEMS // (c * hc * wc))
        for s in range(0, len(labels), step):  # blocks bound memory; each block is fully vectorised
            lab = labels[s:s + step]
            x = ar_generate(coef[lab], rng.standard_normal((len(lab), c, hc, wc)))
            x = x[:, :, crop:, crop:].transpose(0, 2, 3, 1)
            norms = np.sqrt((x.reshape(len(lab), -1) ** 2).sum(axis=1))
            if not (np.isfinite(norms).all() and (norms > 0).all()):
                raise UnpoisonError("an AR perturbation diverged or vanished; try another seed")
            out[s:s + step] = x * (self.config.budget / norms)[:, None, None, None]
        return out

    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        cfg = self.config
        n, k = len(ds), ds.num_classes
        coef = self.coefficients(k, ds.image_shape, seed)

        chosen = choose_poison_indices(np.ones(n, dtype=bool), cfg.poison_rate, n, numpy_rng("ar", "select", seed))
        is_poison = np.zeros(n, dtype=bool)
        is_poison[chosen] = True

        images = ds.images.copy()
        norms = np.zeros(n, dtype=np.float32)
        rng = numpy_rng("ar", "starts", seed)
        for s in range(0, len(chosen), _CHUNK):
            part = chosen[s:s + _CHUNK]
            q = quantise_l2(self.perturbations(coef, ds.labels[part], ds.image_shape, rng), cfg.budget, iters=30)
            images[part] = np.clip(ds.images[part].astype(np.int16) + q, 0, 255).astype(np.uint8)
            norms[part] = measure_norms(images[part], ds.images[part], "l2")

        attack = self.metadata(norm="l2", budget=cfg.budget, seed=seed)
        return clean_label_result(ds, images, is_poison, norms, attack, {"coefficients": coef.astype(np.float32)})
