"""The attack contract: data → poisoned data, found by name through :data:`ATTACKS`.

An attack is a small estimator: parameters in a validated :class:`~unpoison.config.Config`, then
``poison(dataset, seed)``. Backdoor attacks also re-apply their trigger to any images (``apply_trigger``), and can be
rebuilt from a saved :class:`PoisonedDataset` alone (``from_poisoned``), so a test split can be stamped later.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import numpy as np

from unpoison.config import Config
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.registry import Registry


class Attack(ABC):
    name: ClassVar[str]
    kind: ClassVar[Literal["availability", "backdoor"]]
    config_class: ClassVar[type[Config]]
    summary: ClassVar[str] = ""

    def __init__(self, config: Config | None = None, **params: Any) -> None:
        base = config if config is not None else self.config_class()
        if not isinstance(base, self.config_class):
            raise UnpoisonError(f"{self.name} expects a {self.config_class.__name__}")
        self.config = base.replace(**params) if params else base

    @abstractmethod
    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        """Return a poisoned copy of ``ds`` with complete ground truth."""

    def metadata(self, **extra: Any) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "params": self.config.to_dict(), **extra}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


class BackdoorAttack(Attack):
    kind = "backdoor"

    @abstractmethod
    def apply_trigger(self, images: np.ndarray) -> np.ndarray:
        """Stamp the trigger on uint8 images (N, H, W, C); returns new uint8 images."""

    def artifacts(self) -> dict[str, np.ndarray]:
        """Arrays needed to re-apply the trigger (stored in the poisoned dataset)."""
        return {}

    def load_artifacts(self, artifacts: dict[str, np.ndarray]) -> None:
        """Restore state saved by :meth:`artifacts`."""

    @classmethod
    def from_poisoned(cls, pds: PoisonedDataset) -> "BackdoorAttack":
        attack = pds.attack
        if attack.get("kind") != "backdoor":
            raise UnpoisonError(f"dataset was poisoned by {attack.get('name', 'an unknown attack')!r}, not a backdoor")
        acls = ATTACKS.get(attack["name"])
        obj = acls(acls.config_class.from_dict(attack.get("params", {})))
        assert isinstance(obj, BackdoorAttack)
        obj.load_artifacts(pds.artifacts)
        return obj

    def trigger_metadata(self) -> dict[str, Any]:
        """Norm and budget of the trigger, recorded with the triggered test split too."""
        return {}

    @abstractmethod
    def target_labels(self, labels: np.ndarray) -> np.ndarray:
        """The label a triggered image of true class ``labels`` should be predicted as."""

    def source_mask(self, labels: np.ndarray) -> np.ndarray:
        """Which test images count for ASR: those whose attack target differs from the true class."""
        return self.target_labels(labels) != labels

    def poison_test(self, test: ImageDataset) -> PoisonedDataset:
        """Triggered copies of the test images that count for ASR, labelled with the attack's target.

        ``original_labels`` keeps the true classes, so the same object gives ASR (vs. labels) and robust accuracy
        (vs. original_labels).
        """
        keep = self.source_mask(test.labels)
        if not keep.any():
            raise UnpoisonError("no test image is eligible for the attack (all are of the target class)")
        sub = test.subset(keep)
        triggered = self.apply_trigger(sub.images)
        return PoisonedDataset(triggered, self.target_labels(sub.labels), sub.class_names, source=sub.source,
                               indices=sub.indices, is_poison=np.ones(len(sub), bool), original_labels=sub.labels,
                               clean_images=sub.images, attack=self.metadata(**self.trigger_metadata()),
                               artifacts=self.artifacts())


ATTACKS: Registry[type[Attack]] = Registry("attack")


def register_attack(cls: type[Attack]) -> type[Attack]:
    ATTACKS.register(cls.name, cls)
    return cls


def create_attack(name: str, config: Config | None = None, **params: Any) -> Attack:
    return ATTACKS.get(name)(config, **params)


def clean_label_result(ds: ImageDataset, images: np.ndarray, is_poison: np.ndarray, norms: np.ndarray,
                       attack: dict[str, Any], artifacts: dict[str, np.ndarray] | None = None) -> PoisonedDataset:
    """The closing of the clean-label attacks that make their own images (availability attacks, LC): ``ds`` with
    ``images`` swapped in, labels kept, the clean originals, per-sample norms and the attack record attached."""
    return PoisonedDataset(
        images, ds.labels.copy(), ds.class_names, source=ds.source, indices=ds.indices,
        meta=copy.deepcopy(ds.meta), is_poison=is_poison, original_labels=ds.labels.copy(),
        clean_images=ds.images, poison_norms=norms, attack=attack, artifacts=artifacts or {})


def quantise_l2(delta: np.ndarray, budget: float, iters: int) -> np.ndarray:
    """Integer perturbations (n, ...) in 1/255 units: round(s·255·δ) with the largest s per row whose L2 ≤ budget,
    for δ with L2 = budget per row (LSP's class patterns, AR's per-image noise).

    ||round(s·v)|| never decreases as s grows, so a bisection per row (vectorised over rows) finds that s; s = 2
    always overshoots (rounding moves each value by ≤ 0.5). Computed in ``delta``'s dtype. Beyond ±255 a value only
    saturates after clipping, so the cap keeps int16 safe and never raises the norm.
    """
    n = len(delta)
    v = delta.reshape(n, -1) * 255.0
    limit = (budget * 255.0) ** 2 * (1 - 1e-6)  # a hair of slack for float32 norm measurement
    lo, hi = np.zeros(n), np.full(n, 2.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        fits = (np.rint(v * mid[:, None]) ** 2).sum(axis=1) <= limit
        lo = np.where(fits, mid, lo)
        hi = np.where(fits, hi, mid)
    return np.clip(np.rint(v * lo[:, None]), -255, 255).astype(np.int16).reshape(delta.shape)


def measure_norms(poisoned: np.ndarray, clean: np.ndarray, norm: str, chunk: int = 4096) -> np.ndarray:
    """Per-sample perturbation norm on the [0, 1] scale: 'linf', 'l2' or 'l0' (pixels changed).

    Works block by block so the float copy stays bounded (50,000 CIFAR images would need 600 MB at once).
    """
    if norm not in ("linf", "l2", "l0"):
        raise UnpoisonError(f"unknown norm {norm!r}")
    out = np.empty(len(poisoned), dtype=np.float32)
    for i in range(0, len(poisoned), chunk):
        p, c = poisoned[i:i + chunk], clean[i:i + chunk]
        if norm == "l0":
            px = (p != c).any(axis=-1)
            out[i:i + chunk] = px.reshape(len(px), -1).sum(axis=1)
            continue
        d = ((p.astype(np.float32) - c.astype(np.float32)) / 255.0).reshape(len(p), -1)
        out[i:i + chunk] = np.abs(d).max(axis=1) if norm == "linf" else np.sqrt((d * d).sum(axis=1))
    return out
