"""Training-time batch transforms that a defense attaches to the data it returns.

A purified dataset may carry ``meta["train_transform"] = {"name": ..., "params": {...}}`` (ECLIPSE's corruption
compensation, for example). :func:`resolve_train_transform` turns that into a callable the trainer applies to every
batch, afresh every epoch. Defenses register their transforms here; this module knows none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from unpoison.registry import Registry


class BatchTransform(Protocol):
    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x: float images in [0, 1], (B, C, H, W); returns the same shape."""


TRAIN_TRANSFORMS: Registry[Callable[..., BatchTransform]] = Registry("training transform")


def resolve_train_transform(spec: dict[str, Any] | None) -> BatchTransform | None:
    if not spec:
        return None
    if spec["name"] not in TRAIN_TRANSFORMS:  # defenses register theirs on import; a saved dataset may come first
        import unpoison.defenses  # noqa: F401
    return TRAIN_TRANSFORMS.get(spec["name"])(**spec.get("params", {}))
