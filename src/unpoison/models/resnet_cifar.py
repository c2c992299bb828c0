"""He et al. (2016) CIFAR ResNets: 3 stages of 16/32/64 channels · width, 6n+2 layers."""

from __future__ import annotations

from collections.abc import Sequence

from unpoison.models.registry import register_model
from unpoison.models.resnet import ResNet

# The paper uses option A (zero-padded identity) shortcuts; we use option B (1×1 conv + BN projection) for
# simplicity and to share BasicBlock with ResNet-18. It adds ~1% parameters and trains the same or slightly better.
_CHANNELS = (16, 32, 64)


@register_model
def resnet20(num_classes: int = 10, in_channels: int = 3, *, width: float = 1.0,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ResNet:
    """ResNet-20: n=3 BasicBlocks per stage."""
    return ResNet(num_classes, in_channels, _CHANNELS, (3, 3, 3), width=width, mean=mean, std=std)


@register_model
def resnet32(num_classes: int = 10, in_channels: int = 3, *, width: float = 1.0,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ResNet:
    """ResNet-32: n=5 BasicBlocks per stage."""
    return ResNet(num_classes, in_channels, _CHANNELS, (5, 5, 5), width=width, mean=mean, std=std)
