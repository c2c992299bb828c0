"""CIFAR-style ResNet-18 and PreAct-ResNet-18 (3×3 stride-1 stem, no max-pool), with a width multiplier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from unpoison.models.base import ImageClassifier, check_width, scaled
from unpoison.models.registry import register_model


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def kaiming_init(module: nn.Module) -> None:
    """torchvision's ResNet/VGG init: He-normal (fan_out) convs, BN γ=1 β=0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """Two 3×3 convs with BN; 1×1 conv + BN projection shortcut when the shape changes (option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b): BN-ReLU before each conv; the 1×1 shortcut sees the activated input."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = conv3x3(c_in, c_out, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = conv3x3(c_out, c_out)
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


def _stages(block: type[nn.Module], c_in: int, channels: Sequence[int], blocks: Sequence[int]) -> nn.Sequential:
    """Stages of ``blocks[i]`` blocks with ``channels[i]`` channels; every stage after the first halves H and W."""
    stages = []
    for i, (c, n) in enumerate(zip(channels, blocks, strict=True)):
        layers = []
        for j in range(n):
            layers.append(block(c_in, c, 2 if (i > 0 and j == 0) else 1))
            c_in = c
        stages.append(nn.Sequential(*layers))
    return nn.Sequential(*stages)


class _ResNetFamily(ImageClassifier):
    """Stem, stages of ``block``, global average pooling, linear head; the two variants differ in stem and block."""

    block: ClassVar[type[nn.Module]]

    def __init__(self, num_classes: int, in_channels: int, channels: Sequence[int], blocks: Sequence[int], *,
                 width: float = 1.0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__(num_classes, in_channels, mean=mean, std=std)
        width = check_width(width)
        chans = [scaled(c, width) for c in channels]
        self.stem = self._stem(in_channels, chans[0])
        self.stages = _stages(self.block, chans[0], chans, blocks)
        self.feature_dim = chans[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(self.feature_dim, num_classes)
        kaiming_init(self)

    def _stem(self, c_in: int, c_out: int) -> nn.Module:
        raise NotImplementedError

    def _forward_map(self, z: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(z))


class ResNet(_ResNetFamily):
    """Post-activation ResNet with a 3×3 stride-1 stem and BasicBlocks; global average pooling; linear head."""

    block = BasicBlock

    def _stem(self, c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(conv3x3(c_in, c_out), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class PreActResNet(_ResNetFamily):
    """Pre-activation ResNet as in BackdoorBench: bare conv stem, PreActBlocks, no final BN-ReLU before pooling."""

    block = PreActBlock

    def _stem(self, c_in: int, c_out: int) -> nn.Module:
        return conv3x3(c_in, c_out)


@register_model
def resnet18(num_classes: int = 10, in_channels: int = 3, *, width: float = 1.0,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> ResNet:
    """ResNet-18 for 32×32 images: BasicBlocks [2,2,2,2], channels 64/128/256/512 · width."""
    return ResNet(num_classes, in_channels, (64, 128, 256, 512), (2, 2, 2, 2), width=width, mean=mean, std=std)


@register_model
def preact_resnet18(num_classes: int = 10, in_channels: int = 3, *, width: float = 1.0,
                    mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> PreActResNet:
    """PreAct-ResNet-18 (the usual backdoor-benchmark model): [2,2,2,2] blocks, 64/128/256/512 · width."""
    return PreActResNet(num_classes, in_channels, (64, 128, 256, 512), (2, 2, 2, 2), width=width, mean=mean, std=std)
