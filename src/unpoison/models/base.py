"""The contract every classifier in the toolkit follows: [0,1] images in, normalization inside, a linear head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from unpoison.config import check
from unpoison.errors import UnpoisonError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
GRAY_MEAN = (0.5,)
GRAY_STD = (0.25,)


def scaled(channels: int, width: float) -> int:
    """``channels · width`` rounded, at least 1 (the width multiplier shared by every family)."""
    return max(1, round(channels * width))


def check_io(num_classes: int, in_channels: int) -> None:
    """One-line errors for a class count below 2 or a channel count other than 1 (gray) or 3 (RGB)."""
    check(isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes >= 2,
          f"num_classes must be an integer >= 2; got {num_classes!r}")
    check(in_channels in (1, 3) and not isinstance(in_channels, bool),
          f"in_channels must be 1 or 3; got {in_channels!r}")


def check_width(width: float) -> float:
    """The validated width multiplier, as a float."""
    check(isinstance(width, (int, float)) and not isinstance(width, bool) and math.isfinite(width) and width > 0,
          f"width must be a number > 0; got {width!r}")
    return float(width)


def _stats(values: Sequence[float] | None, default: tuple[float, ...], name: str,
           in_channels: int) -> tuple[float, ...]:
    if values is None:
        return default
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise UnpoisonError(f"{name} must be a list of {in_channels} numbers; got {values!r}") from None
    check(len(out) == in_channels and all(math.isfinite(v) for v in out),
          f"{name} must be {in_channels} finite number(s), one per channel; got {list(out)}")
    return out


class ImageClassifier(nn.Module):
    """Base class: ``forward(x) = head(features(x))`` for images ``x`` in [0,1] of shape (N, C, H, W).

    Subclasses build their layers, set ``feature_dim``, ``self.pool`` and ``self.head`` (an ``nn.Linear``), and
    implement :meth:`_forward_map` on normalized input. Normalization is the model's first step, so attacks,
    purifiers and defenses all work in [0,1] pixel space. ``arch`` and ``kwargs`` are filled in by
    :func:`~unpoison.models.create_model` and are what :func:`~unpoison.models.save_model` records.
    """

    head: nn.Linear
    pool: nn.Module
    feature_dim: int

    def __init__(self, num_classes: int, in_channels: int = 3, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        check_io(num_classes, in_channels)
        gray = in_channels == 1
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.mean = _stats(mean, GRAY_MEAN if gray else CIFAR10_MEAN, "mean", in_channels)
        self.std = _stats(std, GRAY_STD if gray else CIFAR10_STD, "std", in_channels)
        check(all(s > 0 for s in self.std), f"std must be > 0 for every channel; got {list(self.std)}")
        self.arch = type(self).__name__.lower()
        self.kwargs: dict[str, Any] = {}
        # Not persistent: the tuples above (saved in the model file's metadata) are the one source of truth, and
        # state dicts stay pure weights.
        self.register_buffer("norm_mean", torch.tensor(self.mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("norm_std", torch.tensor(self.std).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel; rejects tensors that cannot be images for this model."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or not x.is_floating_point():
            raise UnpoisonError(f"{self.arch} expects float images in [0,1] of shape (N, {self.in_channels}, H, W); "
                                f"got {x.dtype} of shape {tuple(x.shape)}")
        return (x - self.norm_mean) / self.norm_std

    def _forward_map(self, z: torch.Tensor) -> torch.Tensor:
        """Normalized images → last activation map (N, feature_dim, h, w)."""
        raise NotImplementedError

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0,1] → last activation map before global pooling, (N, feature_dim, h, w)."""
        return self._forward_map(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [0,1] → penultimate features after global pooling, (N, feature_dim)."""
        return self.pool(self.feature_map(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, num_classes={self.num_classes}, in_channels={self.in_channels}"
