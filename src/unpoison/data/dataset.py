"""The two dataset objects every part of unpoison passes around.

:class:`ImageDataset` holds uint8 images (N, H, W, C), integer labels and class names, plus provenance (which source
split and which index in it each image came from). :class:`PoisonedDataset` adds the ground truth an attack knows:
which samples are poisoned, their original labels, the clean images, the measured perturbation norms, and the
attack's metadata and artifacts (e.g. a trigger pattern) so that a backdoor can be re-applied to a test split.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from unpoison.errors import UnpoisonError


def _as_images(images: Any, what: str = "images") -> np.ndarray:
    """Validate and normalise an image array to uint8 (N, H, W, C) with C in {1, 3}."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if not isinstance(images, np.ndarray):
        raise UnpoisonError(f"{what} must be an array; got {type(images).__name__}")
    if images.dtype == object:
        raise UnpoisonError(f"{what} has dtype object; expected uint8")
    if images.ndim == 3:  # grayscale without a channel axis
        images = images[..., None]
    if images.ndim != 4:
        raise UnpoisonError(f"{what} must have shape (N, H, W, C); got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        raise UnpoisonError(f"{what} must have 1 or 3 channels in the last axis (N, H, W, C); got shape {images.shape}")
    if images.dtype == np.uint8:
        return np.ascontiguousarray(images)
    if np.issubdtype(images.dtype, np.floating):
        if not np.isfinite(images).all():
            raise UnpoisonError(f"{what} contain NaN or Inf values")
        lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
        if lo < 0.0 or hi > 1.0:
            raise UnpoisonError(f"float {what} must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]")
        return np.round(images * 255.0).astype(np.uint8)
    raise UnpoisonError(f"{what} have dtype {images.dtype}; expected uint8 (or float in [0, 1])")


def _as_labels(labels: Any, n: int, num_classes: int, what: str = "labels") -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.dtype == object or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        if (np.issubdtype(labels.dtype, np.floating) and np.isfinite(labels).all()
                and (labels == np.round(labels)).all()):
            labels = labels.astype(np.int64)
        else:
            raise UnpoisonError(f"{what} must be integers; got dtype {labels.dtype}")
    if labels.ndim != 1:
        raise UnpoisonError(f"{what} must be one-dimensional; got shape {labels.shape}")
    if len(labels) != n:
        raise UnpoisonError(f"{what} has length {len(labels)} but there are {n} images")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise UnpoisonError(
            f"{what} out of range: values in [{labels.min()}, {labels.max()}] but there are {num_classes} classes"
        )
    return labels


@dataclass(eq=False, repr=False)
class ImageDataset:
    """Images, labels, class names and provenance. Immutable by convention: methods return new objects."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""
    indices: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.images = _as_images(self.images)
        n = len(self.images)
        if n == 0:
            raise UnpoisonError("the dataset is empty")
        self.class_names = tuple(str(c) for c in self.class_names)
        if len(self.class_names) == 0:
            raise UnpoisonError("the dataset has no class names")
        self.labels = _as_labels(self.labels, n, len(self.class_names))
        if self.indices is None:
            self.indices = np.arange(n, dtype=np.int64)
        else:
            self.indices = np.asarray(self.indices, dtype=np.int64)
            if self.indices.shape != (n,):
                raise UnpoisonError(f"indices has shape {self.indices.shape}; expected ({n},)")
        self.meta = dict(self.meta)

    # --- basic facts -------------------------------------------------------------------------------------------
    def __repr__(self) -> str:
        extra = f", poisoned={int(self.is_poison.sum())}" if isinstance(self, PoisonedDataset) else ""  # type: ignore[union-attr]
        return (f"{type(self).__name__}(n={len(self)}, shape={self.image_shape}, classes={self.num_classes}, "
                f"source={self.source!r}{extra})")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def split(self) -> str:
        """The split part of ``source`` ('train', 'test', ...) or '' when unknown."""
        return self.source.split(":", 1)[1] if ":" in self.source else ""

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    @property
    def is_poisoned(self) -> bool:
        return False

    # --- derived datasets ---------------------------------------------------------------------------------------
    def _per_sample_fields(self) -> list[str]:
        return ["images", "labels", "indices"]

    def subset(self, idx: np.ndarray | list[int]) -> "ImageDataset":
        """A new dataset holding rows ``idx`` (integer positions or a boolean mask); provenance is kept."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise UnpoisonError(f"mask has shape {idx.shape}; expected ({len(self)},)")
            idx = np.flatnonzero(idx)
        if len(idx) == 0:
            raise UnpoisonError("the selection is empty")
        changes = {}
        for name in self._per_sample_fields():
            arr = getattr(self, name)
            changes[name] = None if arr is None else arr[idx]
        return dataclasses.replace(self, meta=copy.deepcopy(self.meta), **changes)

    def with_images(self, images: np.ndarray, **meta_updates: Any) -> "ImageDataset":
        """Same samples and ground truth, new pixels (what a purifier returns)."""
        images = _as_images(images)
        if images.shape != self.images.shape:
            raise UnpoisonError(f"new images have shape {images.shape}; expected {self.images.shape}")
        meta = copy.deepcopy(self.meta)
        meta.update(meta_updates)
        return dataclasses.replace(self, images=images, meta=meta)

    def as_clean(self) -> "ImageDataset":
        return ImageDataset(self.images, self.labels, self.class_names, self.source, self.indices,
                            copy.deepcopy(self.meta))

    # --- tensors ------------------------------------------------------------------------------------------------
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images as (N, C, H, W) and int64 labels; no copy of the pixel data beyond the permute."""
        x = torch.from_numpy(self.images).permute(0, 3, 1, 2)
        return x, torch.from_numpy(self.labels)

    def summary(self) -> dict[str, Any]:
        h, w, c = self.image_shape
        out: dict[str, Any] = {
            "source": self.source,
            "size": len(self),
            "shape": [h, w, c],
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "class_counts": self.class_counts().tolist(),
            "poisoned": self.is_poisoned,
        }
        if "train_transform" in self.meta:
            out["train_transform"] = self.meta["train_transform"]
        return out


@dataclass(eq=False, repr=False)
class PoisonedDataset(ImageDataset):
    """An :class:`ImageDataset` that carries the attack's ground truth."""

    is_poison: np.ndarray | None = None
    original_labels: np.ndarray | None = None
    clean_images: np.ndarray | None = None
    poison_norms: np.ndarray | None = None
    is_cover: np.ndarray | None = None  # bool (N,): perturbed like a poison but correctly labelled (not poison)
    attack: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self)
        if self.is_poison is None:
            self.is_poison = np.zeros(n, dtype=bool)
        self.is_poison = np.asarray(self.is_poison)
        if self.is_poison.shape != (n,):
            raise UnpoisonError(f"is_poison has shape {self.is_poison.shape}; expected ({n},)")
        self.is_poison = self.is_poison.astype(bool)
        if self.original_labels is None:
            self.original_labels = self.labels.copy()
        self.original_labels = _as_labels(self.original_labels, n, self.num_classes, "original_labels")
        if self.clean_images is not None:
            self.clean_images = _as_images(self.clean_images, "clean_images")
            if self.clean_images.shape != self.images.shape:
                raise UnpoisonError(f"clean_images has shape {self.clean_images.shape}; expected {self.images.shape}")
        if self.poison_norms is not None:
            self.poison_norms = np.asarray(self.poison_norms, dtype=np.float32)
            if self.poison_norms.shape != (n,):
                raise UnpoisonError(f"poison_norms has shape {self.poison_norms.shape}; expected ({n},)")
        if self.is_cover is not None:
            self.is_cover = np.asarray(self.is_cover)
            if self.is_cover.shape != (n,):
                raise UnpoisonError(f"is_cover has shape {self.is_cover.shape}; expected ({n},)")
            self.is_cover = self.is_cover.astype(bool)
            if (self.is_cover & self.is_poison).any():
                raise UnpoisonError("a sample cannot be both poison and cover")
        self.attack = dict(self.attack)
        self.artifacts = {k: np.asarray(v) for k, v in self.artifacts.items()}

    @property
    def is_poisoned(self) -> bool:
        return True

    @property
    def original_index(self) -> np.ndarray:
        assert self.indices is not None
        return self.indices

    @property
    def poison_rate(self) -> float:
        assert self.is_poison is not None
        return float(self.is_poison.mean())

    def _per_sample_fields(self) -> list[str]:
        return super()._per_sample_fields() + ["is_poison", "original_labels", "clean_images", "poison_norms",
                                              "is_cover"]

    def perturbation(self) -> np.ndarray | None:
        """poisoned − clean as int16 (N, H, W, C), when the clean images are known."""
        if self.clean_images is None:
            return None
        return self.images.astype(np.int16) - self.clean_images.astype(np.int16)

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        assert self.is_poison is not None and self.original_labels is not None
        out["poison_count"] = int(self.is_poison.sum())
        out["poison_rate"] = round(self.poison_rate, 6)
        out["relabelled"] = int((self.labels != self.original_labels).sum())
        if self.is_cover is not None:
            out["cover_count"] = int(self.is_cover.sum())
        out["attack"] = ({k: v for k, v in self.attack.items() if k != "params"}
                         | {"params": self.attack.get("params", {})})
        if self.poison_norms is not None and self.is_poison.any():
            norms = self.poison_norms[self.is_poison]
            out["measured_norm"] = {"max": float(norms.max()), "mean": float(norms.mean())}
        return out
