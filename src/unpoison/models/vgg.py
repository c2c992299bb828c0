"""VGG-16 with batch norm for CIFAR: 13 conv-BN-ReLU layers, global average pooling, one linear layer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from unpoison.models.base import ImageClassifier, check_width, scaled
from unpoison.models.registry import register_model
from unpoison.models.resnet import kaiming_init

# Channels per conv; "M" is a 2×2 max-pool. Five pools take 32×32 to 1×1.
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                    512, 512, 512, "M")


class VGG(ImageClassifier):
    """VGG with BN; average pooling before the head (instead of a fixed-size classifier) so any H, W ≥ 32 works."""

    def __init__(self, num_classes: int, in_channels: int, cfg: Sequence[int | str], *, width: float = 1.0,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(num_classes, in_channels, mean=mean, std=std)
        width = check_width(width)
        layers: list[nn.Module] = []
        c_in = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                c = scaled(int(v), width)
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
        self.body = nn.Sequential(*layers)
        self.feature_dim = c_in
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.feature_dim, num_classes)
        kaiming_init(self)

    def _forward_map(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


@register_model
def vgg16_bn(num_classes: int = 10, in_channels: int = 3, *, width: float = 1.0,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> VGG:
    """VGG-16-BN for 32×32 images, channels 64…512 · width."""
    return VGG(num_classes, in_channels, VGG16_CFG, width=width, mean=mean, std=std)
