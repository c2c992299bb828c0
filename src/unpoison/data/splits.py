"""Seeded, stratified subsets and splits, the trusted clean set, and the ``cpu`` benchmark profile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unpoison.data.dataset import ImageDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.seed import numpy_rng


def _quotas(counts: np.ndarray, total: int) -> np.ndarray:
    """Per-class sizes proportional to ``counts`` summing exactly to ``total`` (largest remainder)."""
    exact = counts * (total / counts.sum())
    q = np.floor(exact).astype(np.int64)
    rest = total - q.sum()
    if rest > 0:
        order = np.argsort(-(exact - q), kind="stable")
        q[order[:rest]] += 1
    return np.minimum(q, counts)


def stratified_indices(labels: np.ndarray, *, per_class: int | None = None, total: int | None = None,
                       fraction: float | None = None, seed: int = 0, num_classes: int | None = None) -> np.ndarray:
    """Sorted positions of a class-stratified random subset; exactly one of per_class, total, fraction."""
    if sum(v is not None for v in (per_class, total, fraction)) != 1:
        raise UnpoisonError("give exactly one of per_class, total or fraction")
    labels = np.asarray(labels)
    n = len(labels)
    counts = np.bincount(labels, minlength=num_classes or 0)
    if per_class is not None:
        if per_class < 1:
            raise UnpoisonError(f"per_class must be ≥ 1; got {per_class}")
        short = np.flatnonzero((counts > 0) & (counts < per_class))
        if len(short):
            raise UnpoisonError(f"class {int(short[0])} has only {int(counts[short[0]])} images; "
                                f"cannot take {per_class} per class")
        quotas = np.where(counts > 0, per_class, 0)
    else:
        if fraction is not None:
            if not 0.0 < fraction <= 1.0:
                raise UnpoisonError(f"fraction must be in (0, 1]; got {fraction}")
            total = int(round(fraction * n))
        assert total is not None
        if not 1 <= total <= n:
            raise UnpoisonError(f"subset size must be between 1 and {n}; got {total}")
        quotas = _quotas(counts, total)
    rng = numpy_rng("stratified", seed)
    perm = rng.permutation(n)
    grouped = perm[np.argsort(labels[perm], kind="stable")]  # by class, random order within each class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    take = np.concatenate([grouped[s:s + q] for s, q in zip(starts, quotas, strict=True)])
    return np.sort(take)


def stratified_subset(ds: ImageDataset, *, per_class: int | None = None, total: int | None = None,
                      fraction: float | None = None, seed: int = 0) -> ImageDataset:
    idx = stratified_indices(ds.labels, per_class=per_class, total=total, fraction=fraction, seed=seed,
                             num_classes=ds.num_classes)
    return ds.subset(idx)


def stratified_split(ds: ImageDataset, *, fraction: float | None = None, per_class: int | None = None,
                     total: int | None = None, seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """(selected, rest): a stratified selection and its complement."""
    idx = stratified_indices(ds.labels, per_class=per_class, total=total, fraction=fraction, seed=seed,
                             num_classes=ds.num_classes)
    mask = np.zeros(len(ds), dtype=bool)
    mask[idx] = True
    if mask.all():
        raise UnpoisonError("the split leaves nothing on the other side")
    return ds.subset(mask), ds.subset(~mask)


def carve_trusted(ds: ImageDataset, *, fraction: float | None = None, per_class: int | None = None,
                  seed: int = 0) -> tuple[ImageDataset, ImageDataset]:
    """(trusted, rest): a clean set for defenses that need one. Never taken from a test split."""
    if ds.split == "test":
        raise UnpoisonError(f"refusing to carve trusted data out of a test split ({ds.source}); use training data")
    trusted, rest = stratified_split(ds, fraction=fraction, per_class=per_class, seed=seed)
    trusted.meta["trusted"] = {"fraction": fraction, "per_class": per_class, "seed": seed, "size": len(trusted)}
    return trusted, rest


@dataclass(frozen=True)
class Profile:
    """A benchmark scale: which part of a training split is poisoned, and which part clean data may come from."""

    name: str
    poison_fraction: float  # of the training split; the rest is the clean pool
    seed: int = 0

    def poison_pool_indices(self, labels: np.ndarray, num_classes: int) -> np.ndarray:
        return stratified_indices(labels, fraction=self.poison_fraction, seed=self.seed, num_classes=num_classes)


# The ``cpu`` profile: 20,000 of CIFAR-10's 50,000 training images (40%) are the (to-be-)poisoned set; the other
# 30,000 are the only place clean data for defenses (ECLIPSE's sparse set, trusted sets) comes from.
PROFILES: dict[str, Profile] = {"cpu": Profile("cpu", 0.4, seed=0)}


def profile_split(train: ImageDataset, profile: str) -> tuple[ImageDataset, ImageDataset]:
    """(poison pool, clean pool) of a training split under a named profile."""
    if profile not in PROFILES:
        raise UnpoisonError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    if train.split == "test":
        raise UnpoisonError("profiles split a training split, not a test split")
    p = PROFILES[profile]
    idx = p.poison_pool_indices(train.labels, train.num_classes)
    mask = np.zeros(len(train), dtype=bool)
    mask[idx] = True
    return train.subset(mask), train.subset(~mask)
