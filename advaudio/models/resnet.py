"""Residual networks (He et al., 2016) with basic blocks: ImageNet and CIFAR layouts."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError
from .base import Classifier, init_weights
from .registry import register_model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution that keeps the size at stride 1; no bias, BatchNorm follows."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut (the paper's option A).

    Subsamples by ``stride`` and appends zero channels, so a block that widens and
    downsamples adds nothing to the parameter count.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1×1 convolution + BatchNorm shortcut (the paper's option B)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


SHORTCUTS = {"A": ZeroPadShortcut, "B": projection_shortcut}


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers plus a shortcut, then ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "B"
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = SHORTCUTS[shortcut](in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(Classifier):
    """Basic-block ResNet: a stem, stages of blocks, global average pool, linear layer.

    Args:
        blocks: number of blocks per stage.
        stage_channels: channels of each stage (before ``width`` scaling); every stage
            after the first halves the resolution in its first block.
        stem: ``"imagenet"`` (7×7/2 convolution and 3×3/2 max-pool, 4× downsampling)
            or ``"cifar"`` (one 3×3 convolution, full resolution).
        shortcut: ``"B"`` (projection) or ``"A"`` (zero-padding) where a block changes
            shape.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        stage_channels: Sequence[int],
        in_channels: int = 1,
        num_classes: int = 10,
        width: float = 1.0,
        stem: str = "imagenet",
        shortcut: str = "B",
    ) -> None:
        super().__init__(in_channels, num_classes, width)
        if shortcut not in SHORTCUTS:
            raise ParameterError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        if len(blocks) != len(stage_channels):
            raise ValueError("blocks and stage_channels need one entry per stage")
        channels = [self.channels(c) for c in stage_channels]
        self.stem = self._make_stem(stem, channels[0])
        stages = []
        in_stage = channels[0]
        for index, (count, out_stage) in enumerate(zip(blocks, channels)):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(in_stage, out_stage, stride, shortcut)]
            stage += [BasicBlock(out_stage, out_stage, 1, shortcut) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            in_stage = out_stage
        self.stages = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[-1], self.num_classes)
        init_weights(self)

    def _make_stem(self, stem: str, out_channels: int) -> nn.Sequential:
        if stem == "imagenet":
            return nn.Sequential(
                nn.Conv2d(self.in_channels, out_channels, 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        if stem == "cifar":
            return nn.Sequential(
                conv3x3(self.in_channels, out_channels),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
        raise ParameterError(f"stem must be 'imagenet' or 'cifar', got {stem!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.avgpool(self.stages(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


IMAGENET_CHANNELS = (64, 128, 256, 512)
CIFAR_CHANNELS = (16, 32, 64)


@register_model
def resnet18(**kwargs) -> ResNet:
    """ResNet-18: 11,689,512 parameters at 3 channels, 1000 classes, width 1."""
    return ResNet((2, 2, 2, 2), IMAGENET_CHANNELS, **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    """ResNet-34: 21,797,672 parameters at 3 channels, 1000 classes, width 1."""
    return ResNet((3, 4, 6, 3), IMAGENET_CHANNELS, **kwargs)


@register_model
def resnet56(*, shortcut: str = "A", **kwargs) -> ResNet:
    """CIFAR ResNet-56 (6n+2, n=9): 0.85 M parameters at 10 classes with option-A shortcuts."""
    return ResNet((9, 9, 9), CIFAR_CHANNELS, stem="cifar", shortcut=shortcut, **kwargs)


__all__ = ["BasicBlock", "ResNet", "ZeroPadShortcut", "resnet18", "resnet34", "resnet56"]
