"""The four defense contracts, each found by name through its registry.

- :class:`Purifier`  — data → data (ECLIPSE, D-VAE, the squeezing baselines)
- :class:`Sanitizer` — data → keep mask + suspicion scores (incompatibility clustering)
- :class:`Detector`  — model → score + verdict (Pick your Poison's calibrated trigger inversion)
- :class:`Repairer`  — model → model (pivotal tuning)

Parameters live in a validated :class:`~unpoison.config.Config`; ``fit`` learns, then the method acts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch.nn as nn

from unpoison.config import Config
from unpoison.data.dataset import ImageDataset
from unpoison.errors import UnpoisonError
from unpoison.registry import Registry


class _Method(ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[Config]]
    summary: ClassVar[str] = ""
    needs_clean_data: ClassVar[bool] = False

    def __init__(self, config: Config | None = None, **params: Any) -> None:
        base = config if config is not None else self.config_class()
        if not isinstance(base, self.config_class):
            raise UnpoisonError(f"{self.name} expects a {self.config_class.__name__}")
        self.config = base.replace(**params) if params else base

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


class Purifier(_Method):
    """Learns from (poisoned) data, optionally from clean data, then rewrites images."""

    def fit(self, ds: ImageDataset, clean: ImageDataset | None = None) -> "Purifier":
        if self.needs_clean_data and clean is None:
            raise UnpoisonError(f"{self.name} needs clean data (--clean SPEC)")
        return self

    @abstractmethod
    def purify(self, ds: ImageDataset) -> ImageDataset:
        """Same samples and ground truth, purified pixels; ``meta['purified']`` records how."""

    def fit_purify(self, ds: ImageDataset, clean: ImageDataset | None = None) -> ImageDataset:
        return self.fit(ds, clean).purify(ds)

    def record(self, **extra: Any) -> dict[str, Any]:
        return {"name": self.name, "params": self.config.to_dict(), **extra}


@dataclass
class SanitizeResult:
    keep: np.ndarray  # bool (N,): True = kept as clean
    scores: np.ndarray  # float (N,): higher = more suspicious
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kept": int(self.keep.sum()), "removed": int((~self.keep).sum()), "info": self.info}


class Sanitizer(_Method):
    @abstractmethod
    def sanitize(self, ds: ImageDataset) -> SanitizeResult: ...


@dataclass
class DetectResult:
    score: float
    backdoored: bool
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Detector(_Method):
    needs_clean_data = True

    @abstractmethod
    def detect(self, model: nn.Module, trusted: ImageDataset) -> DetectResult: ...


class Repairer(_Method):
    needs_clean_data = True

    @abstractmethod
    def repair(self, model: nn.Module, trusted: ImageDataset) -> nn.Module: ...


PURIFIERS: Registry[type[Purifier]] = Registry("purifier")
SANITIZERS: Registry[type[Sanitizer]] = Registry("sanitizer")
DETECTORS: Registry[type[Detector]] = Registry("detector")
REPAIRERS: Registry[type[Repairer]] = Registry("repairer")


def register_purifier(cls: type[Purifier]) -> type[Purifier]:
    PURIFIERS.register(cls.name, cls)
    return cls


def create_purifier(name: str, config: Config | None = None, **params: Any) -> Purifier:
    return PURIFIERS.get(name)(config, **params)
