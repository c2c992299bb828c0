"""LSP: linearly separable synthetic perturbations (Yu et al., KDD 2022, "Availability Attacks Create Shortcuts").

Model-free. One point per class is drawn from well-separated Gaussian clusters (``sklearn`` ``make_classification``,
as the original does) in a space with one dimension per colour channel and patch-grid cell. Each point becomes a
block-constant image (every ``patch_size`` × ``patch_size`` block holds one value per channel), scaled to an L2
budget, and is added to every poisoned image of its class. Labels are unchanged (clean-label).

The class pattern is quantised to the uint8 grid *before* it is added, with the largest scale whose rounded pattern
still fits the budget. Adding an integer pattern to uint8 images needs no further rounding, and clipping to [0, 255]
only shrinks each pixel's change, so every measured norm is ≤ the budget by construction.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.datasets import make_classification

from unpoison.attacks.base import Attack, clean_label_result, measure_norms, quantise_l2, register_attack
from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.data.splits import stratified_indices
from unpoison.errors import UnpoisonError
from unpoison.utils.seed import derive_seed

_CHUNK = 4096  # images per block when measuring norms: bounds the float32 copies measure_norms makes


@dataclasses.dataclass
class LSPConfig(Config):
    patch_size: int = 8  # side of the constant blocks; image height and width must be multiples of it
    budget: float = 1.30  # L2 norm on the [0, 1] scale over the whole image (≈ 6/255 L∞ spread over 3,072 dims)
    poison_rate: float = 1.0  # fraction of the training set poisoned (class-stratified)
    class_sep: float = 10.0  # cluster separation passed to make_classification (the original's value)

    def validate(self) -> None:
        check(self.patch_size >= 1, f"patch_size must be ≥ 1; got {self.patch_size}")
        check(self.budget > 0, f"budget must be > 0; got {self.budget}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")
        check(self.class_sep > 0, f"class_sep must be > 0; got {self.class_sep}")


@register_attack
class LSP(Attack):
    name = "lsp"
    kind = "availability"
    config_class = LSPConfig
    summary = "Linearly separable class-wise block patches (model-free, L2 ≤ budget, clean-label)"

    def patterns(self, num_classes: int, image_shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
        """Float class patterns (K, H, W, C) with L2 = budget each, before quantisation."""
        h, w, c = image_shape
        p = self.config.patch_size
        if h % p or w % p:
            raise UnpoisonError(f"image size {h}×{w} is not divisible by LSP patch_size {p}")
        gh, gw = h // p, w // p
        dim = c * gh * gw
        # make_classification puts cluster centres on distinct hypercube vertices: it needs 2**dim ≥ K.
        if 2**dim < num_classes:
            raise UnpoisonError(f"LSP with patch_size {p} on {h}×{w}×{c} images has only {dim} free values, too few "
                                f"for {num_classes} classes; use a smaller patch_size")
        x, y = make_classification(
            n_samples=num_classes, n_features=dim, n_informative=dim, n_redundant=0, n_repeated=0,
            n_classes=num_classes, n_clusters_per_class=1, class_sep=self.config.class_sep, flip_y=0.0,
            random_state=derive_seed("lsp", "patterns", seed) % 2**32,
        )
        # One sample per cluster, so y is a permutation of the classes: order the points by class.
        if not np.array_equal(np.sort(y), np.arange(num_classes)):  # guards against a change in sklearn
            raise UnpoisonError("make_classification did not return one point per class")
        x = x[np.argsort(y, kind="stable")].reshape(num_classes, c, gh, gw).transpose(0, 2, 3, 1)
        up = np.kron(x, np.ones((1, p, p, 1)))  # every grid cell becomes a p × p block
        norms = np.sqrt((up.reshape(num_classes, -1) ** 2).sum(axis=1))
        return (up * (self.config.budget / norms)[:, None, None, None]).astype(np.float32)

    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        cfg = self.config
        n, k = len(ds), ds.num_classes
        q = quantise_l2(self.patterns(k, ds.image_shape, seed).astype(np.float64), cfg.budget, iters=40)

        count = int(round(cfg.poison_rate * n))
        chosen = (stratified_indices(ds.labels, total=count, seed=derive_seed("lsp", "select", seed), num_classes=k)
                  if count else np.zeros(0, dtype=np.int64))
        is_poison = np.zeros(n, dtype=bool)
        is_poison[chosen] = True

        images = ds.images.copy()
        for cls in np.unique(ds.labels[chosen]):  # one pass per class, not per image
            sel = chosen[ds.labels[chosen] == cls]
            images[sel] = np.clip(images[sel].astype(np.int16) + q[cls], 0, 255).astype(np.uint8)

        norms = np.zeros(n, dtype=np.float32)
        for s in range(0, len(chosen), _CHUNK):
            part = chosen[s:s + _CHUNK]
            norms[part] = measure_norms(images[part], ds.images[part], "l2")

        attack = self.metadata(norm="l2", budget=cfg.budget, seed=seed)
        return clean_label_result(ds, images, is_poison, norms, attack, {"patterns": (q / 255.0).astype(np.float32)})
