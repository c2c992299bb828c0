"""BadNets (Gu et al., 2017): a small fixed patch stamped in a corner, poisoned samples relabelled to the target.

The trigger is a ``patch_size`` × ``patch_size`` pattern (white, or a black/white checkerboard) placed at one of the
four corners. Poisoned samples are drawn uniformly from the eligible ones (not already of the target class for
all-to-one; only the ``source`` class when one is given); the count is round(poison_rate · N) of the whole set.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import numpy as np

from unpoison.attacks.base import BackdoorAttack, measure_norms, register_attack
from unpoison.attacks.labelmaps import choose_poison_indices, eligible, target_labels
from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.seed import numpy_rng


@dataclasses.dataclass
class BadNetsConfig(Config):
    target: int = 0  # target class (all2one)
    poison_rate: float = 0.1  # fraction of the whole training set; 0 gives a clean baseline
    label_mode: Literal["all2one", "all2all"] = "all2one"
    source: int = -1  # -1: any class; otherwise only this class is poisoned (source-specific)
    patch_size: int = 3
    location: Literal["bottom_right", "top_left", "bottom_left", "top_right"] = "bottom_right"
    pattern: Literal["white", "checkerboard"] = "white"

    def validate(self) -> None:
        check(self.target >= 0, f"target must be ≥ 0; got {self.target}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")
        check(self.source >= -1, f"source must be -1 (any class) or a class index; got {self.source}")
        check(not (self.label_mode == "all2one" and self.source == self.target),
              f"source and target are both {self.target}: an all2one attack has nothing to poison")
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
class BadNets(BackdoorAttack):
    name = "badnets"
    config_class = BadNetsConfig
    summary = "Corner patch trigger (white or checkerboard), poisoned labels set to the target (all2one/all2all)"

    def __init__(self, config: Config | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._pattern: np.ndarray | None = None  # set when stamping, or restored by load_artifacts
        self._loaded = False  # a restored pattern wins over the one the config would generate
        self._mask: np.ndarray | None = None  # (H, W) uint8, 1 where the patch goes, for the last image size
        self._num_classes: int | None = None  # all2all needs K; learnt in poison/poison_test or restored

    # --- trigger ------------------------------------------------------------------------------------------------
    def _pattern_for(self, channels: int) -> np.ndarray:
        if self._pattern is not None and self._pattern.shape[-1] == channels:
            return self._pattern
        if self._loaded and self._pattern is not None:
            raise UnpoisonError(f"the saved BadNets pattern has {self._pattern.shape[-1]} channels; "
                                f"the images have {channels}")
        self._pattern = make_pattern(self.config.pattern, self.config.patch_size, channels)
        return self._pattern

    def _corner(self, h: int, w: int) -> tuple[int, int]:
        p = self.config.patch_size
        if p > h or p > w:
            raise UnpoisonError(f"BadNets patch_size {p} does not fit {h}×{w} images")
        loc = self.config.location
        return (h - p if loc.startswith("bottom") else 0), (w - p if loc.endswith("right") else 0)

    def apply_trigger(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4:
            raise UnpoisonError(f"apply_trigger expects uint8 images (N, H, W, C); got {images.dtype} {images.shape}")
        _, h, w, c = images.shape
        pattern = self._pattern_for(c)
        r, s = self._corner(h, w)
        p = self.config.patch_size
        out = images.copy()
        out[:, r:r + p, s:s + p] = pattern  # broadcast over the batch
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[r:r + p, s:s + p] = 1
        self._mask = mask
        return out

    def artifacts(self) -> dict[str, np.ndarray]:
        out = {"pattern": self._pattern_for(self._pattern.shape[-1] if self._pattern is not None else 3)}
        if self._mask is not None:
            out["mask"] = self._mask
        if self._num_classes is not None:
            out["num_classes"] = np.asarray(self._num_classes, dtype=np.int64)
        return out

    def load_artifacts(self, artifacts: dict[str, np.ndarray]) -> None:
        if "pattern" in artifacts:
            pat = np.asarray(artifacts["pattern"])
            p = self.config.patch_size
            if pat.dtype != np.uint8 or pat.ndim != 3 or pat.shape[:2] != (p, p) or pat.shape[2] not in (1, 3):
                raise UnpoisonError(f"saved BadNets pattern has shape {pat.shape} and dtype {pat.dtype}; "
                                    f"expected uint8 ({p}, {p}, 1 or 3)")
            self._pattern, self._loaded = pat.copy(), True
        if "mask" in artifacts:
            self._mask = np.asarray(artifacts["mask"], dtype=np.uint8).copy()
        if "num_classes" in artifacts:
            self._num_classes = int(np.asarray(artifacts["num_classes"]))

    # --- labels -------------------------------------------------------------------------------------------------
    def target_labels(self, labels: np.ndarray) -> np.ndarray:
        if self.config.label_mode == "all2all" and self._num_classes is None:
            raise UnpoisonError("all2all BadNets needs the number of classes: poison a dataset first, "
                                "or rebuild the attack with BackdoorAttack.from_poisoned")
        return target_labels(labels, self.config.label_mode, self.config.target, self._num_classes or 0)

    def source_mask(self, labels: np.ndarray) -> np.ndarray:
        # A source-specific attack is only meant to fire on its source class, so ASR counts only those.
        return eligible(labels, self.config.label_mode, self.config.target, self.config.source)

    def _check_classes(self, num_classes: int) -> None:
        cfg = self.config
        if cfg.label_mode == "all2one" and cfg.target >= num_classes:
            raise UnpoisonError(f"target {cfg.target} is out of range for {num_classes} classes")
        if cfg.source >= num_classes:
            raise UnpoisonError(f"source {cfg.source} is out of range for {num_classes} classes")
        self._num_classes = num_classes

    def poison_test(self, test: ImageDataset) -> PoisonedDataset:
        if self._num_classes is None:
            self._check_classes(test.num_classes)
        elif self._num_classes != test.num_classes:
            raise UnpoisonError(f"the attack was built for {self._num_classes} classes; the test set has "
                                f"{test.num_classes}")
        return super().poison_test(test)

    # --- poisoning ----------------------------------------------------------------------------------------------
    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        cfg = self.config
        self._check_classes(ds.num_classes)
        n = len(ds)
        ok = eligible(ds.labels, cfg.label_mode, cfg.target, cfg.source)
        chosen = choose_poison_indices(ok, cfg.poison_rate, n, numpy_rng("badnets", seed))
        is_poison = np.zeros(n, dtype=bool)
        is_poison[chosen] = True

        images = ds.images.copy()
        labels = ds.labels.copy()
        # Stamp an empty batch too when nothing is poisoned, so the pattern and mask artifacts always exist.
        images[chosen] = self.apply_trigger(ds.images[chosen])
        labels[chosen] = self.target_labels(ds.labels[chosen])
        norms = np.zeros(n, dtype=np.float32)
        if len(chosen):
            norms[chosen] = measure_norms(images[chosen], ds.images[chosen], "l0")

        return PoisonedDataset(
            images, labels, ds.class_names, source=ds.source, indices=ds.indices, meta=copy.deepcopy(ds.meta),
            is_poison=is_poison, original_labels=ds.labels.copy(), clean_images=ds.images, poison_norms=norms,
            attack=self.metadata(norm="l0", budget=cfg.patch_size**2, seed=seed), artifacts=self.artifacts(),
        )
