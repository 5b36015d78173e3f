"""VGG (Simonyan & Zisserman, 2015): stacks of 3×3 convolutions between 2×2 max-pools."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Classifier, check_dropout, init_weights
from .registry import register_model

MAX_POOL = "M"

# Configuration D of the paper: output channels of each 3×3 convolution, "M" for a pool.
VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, MAX_POOL,
    128, 128, MAX_POOL,
    256, 256, 256, MAX_POOL,
    512, 512, 512, MAX_POOL,
    512, 512, 512, MAX_POOL,
)  # fmt: skip


class VGG(Classifier):
    """A VGG feature stack from a layer list, then a 7×7 adaptive pool and a dropout MLP.

    ``batch_norm`` inserts BatchNorm after every convolution (the "_bn" variants).
    Each 2×2 pool halves the input, so the input must be at least 2**pools pixels.
    """

    def __init__(
        self,
        layers: Sequence[int | str],
        in_channels: int = 1,
        num_classes: int = 10,
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, num_classes, width)
        dropout = check_dropout(dropout)
        self.min_input_size = 2 ** sum(layer == MAX_POOL for layer in layers)
        self.features = self._make_features(layers, bool(batch_norm))
        last_channels = self.channels([c for c in layers if c != MAX_POOL][-1])
        hidden = self.channels(4096)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(last_channels * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, self.num_classes),
        )
        init_weights(self)

    def _make_features(self, layers: Sequence[int | str], batch_norm: bool) -> nn.Sequential:
        modules: list[nn.Module] = []
        channels = self.in_channels
        for layer in layers:
            if layer == MAX_POOL:
                modules.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_channels = self.channels(int(layer))
            modules.append(nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))
            if batch_norm:
                modules.append(nn.BatchNorm2d(out_channels))
            modules.append(nn.ReLU(inplace=True))
            channels = out_channels
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model
def vgg16(*, batch_norm: bool = False, dropout: float = 0.5, **kwargs) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters at 3 channels, 1000 classes, width 1."""
    return VGG(VGG16_LAYERS, batch_norm=batch_norm, dropout=dropout, **kwargs)


__all__ = ["VGG", "VGG16_LAYERS", "vgg16"]
