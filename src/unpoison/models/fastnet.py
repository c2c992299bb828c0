"""FastNet: a small, fast CNN for CPU work, after the network of Keller Jordan's airbench94."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from unpoison.config import check
from unpoison.models.base import ImageClassifier, check_width, scaled
from unpoison.models.registry import register_model


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)


class FastNet(ImageClassifier):
    """Stem conv, three conv-pool-conv blocks (each halves H and W), global max-pool, bias-free head.

    Logits are scaled by ``logit_scale`` (airbench uses 1/9: it tempers the head's effective learning rate).
    The head has no bias, so the scale is applied to the features: ``head(s·f) = s·head(f)``, which keeps
    ``forward(x) == head(features(x))`` for defenses that refit the head.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, *, width: float = 1.0,
                 widths: Sequence[int] = (64, 256, 256), logit_scale: float = 1 / 9, bn_momentum: float = 0.1,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(num_classes, in_channels, mean=mean, std=std)
        width = check_width(width)
        check(isinstance(widths, Sequence) and len(widths) == 3
              and all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths),
              f"widths must be 3 positive integers; got {widths!r}")
        check(isinstance(logit_scale, (int, float)) and math.isfinite(logit_scale) and logit_scale > 0,
              f"logit_scale must be a number > 0; got {logit_scale!r}")
        check(isinstance(bn_momentum, (int, float)) and 0 < bn_momentum <= 1,
              f"bn_momentum must be in (0, 1] (PyTorch convention); got {bn_momentum!r}")
        self.logit_scale = float(logit_scale)

        def bn(c: int) -> nn.BatchNorm2d:
            return nn.BatchNorm2d(c, momentum=bn_momentum)

        c = scaled(32, width)
        self.stem = nn.Sequential(_conv(in_channels, c), bn(c), nn.GELU())
        blocks = []
        for w in widths:
            c_out = scaled(w, width)
            blocks.append(nn.Sequential(_conv(c, c_out), nn.MaxPool2d(2), bn(c_out), nn.GELU(),
                                        _conv(c_out, c_out), bn(c_out), nn.GELU()))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = c
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(c, num_classes, bias=False)

    def _forward_map(self, z: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(z))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return super().features(x) * self.logit_scale


@register_model
def fastnet(num_classes: int = 10, in_channels: int = 3, *, width: float = 1.0,
            widths: Sequence[int] = (64, 256, 256), logit_scale: float = 1 / 9, bn_momentum: float = 0.1,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> FastNet:
    """FastNet for images ≥ 8×8: stem 32·width channels, blocks ``widths``·width, logits × ``logit_scale``."""
    return FastNet(num_classes, in_channels, width=width, widths=widths, logit_scale=logit_scale,
                   bn_momentum=bn_momentum, mean=mean, std=std)
