"""GoogLeNet / Inception v1 (Szegedy et al., 2015), with BatchNorm as in torchvision."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .base import Classifier, check_dropout, cross_entropy, init_weights, scaled
from .registry import register_model

AUX_LOSS_WEIGHT = 0.3  # of each auxiliary head's loss in training (Szegedy et al., 2015)


class ConvBNReLU(nn.Sequential):
    """Convolution without bias, BatchNorm, ReLU: GoogLeNet's only convolution unit."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs),
            nn.BatchNorm2d(out_channels, eps=0.001),
            nn.ReLU(inplace=True),
        )


class Inception(nn.Module):
    """Four parallel branches concatenated along channels.

    Branches: 1×1; 1×1 → 3×3; 1×1 → 3×3 (the paper's 5×5 branch, with the 3×3
    kernel torchvision uses, which the published 6.6 M parameter count assumes);
    3×3 max-pool → 1×1.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = ConvBNReLU(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            ConvBNReLU(in_channels, ch3x3_reduce, kernel_size=1),
            ConvBNReLU(ch3x3_reduce, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            ConvBNReLU(in_channels, ch5x5_reduce, kernel_size=1),
            ConvBNReLU(ch5x5_reduce, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            ConvBNReLU(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1, self.branch2, self.branch3, self.branch4)
        return torch.cat([branch(x) for branch in branches], dim=1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on an intermediate map: a training-time gradient shortcut."""

    def __init__(self, in_channels: int, num_classes: int, width: float) -> None:
        super().__init__()
        reduced, hidden = scaled(128, width), scaled(1024, width)
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = ConvBNReLU(in_channels, reduced, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Linear(reduced * 4 * 4, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.7),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.avgpool(x))
        return self.classifier(torch.flatten(x, 1))


class GoogLeNetOutputs(NamedTuple):
    """Training-mode output when auxiliary heads are on (:meth:`GoogLeNet.training_loss` weighs them)."""

    logits: torch.Tensor
    aux1: torch.Tensor  # head on inception 4a
    aux2: torch.Tensor  # head on inception 4d


# Branch widths of each Inception module (Table 1 of the paper):
# 1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool projection.
INCEPTION_WIDTHS = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(Classifier):
    """Stem, nine Inception modules in three groups, global average pool, dropout, linear.

    With ``aux_logits`` two auxiliary heads are built; in training mode forward then
    returns :class:`GoogLeNetOutputs`, in eval mode always the main logits only.
    """

    min_input_size = 15  # below, the third 3×3/2 pool gets a 1×1 map and has no output

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: float = 1.0,
        aux_logits: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(in_channels, num_classes, width)
        dropout = check_dropout(dropout)
        c64, c192 = self.channels(64), self.channels(192)
        self.conv1 = ConvBNReLU(self.in_channels, c64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvBNReLU(c64, c64, kernel_size=1)
        self.conv3 = ConvBNReLU(c64, c192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        channels = c192
        for name, widths in INCEPTION_WIDTHS.items():
            module = Inception(channels, *(self.channels(c) for c in widths))
            setattr(self, f"inception{name}", module)
            channels = module.out_channels
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.aux_logits = bool(aux_logits)
        if self.aux_logits:
            self.aux1 = InceptionAux(self.inception4a.out_channels, self.num_classes, width)
            self.aux2 = InceptionAux(self.inception4d.out_channels, self.num_classes, width)
        else:
            self.aux1 = self.aux2 = None

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, self.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        self.check_input(x)
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.inception3b(self.inception3a(x))
        x = self.maxpool3(x)
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.avgpool(x)
        logits = self.fc(self.dropout(torch.flatten(x, 1)))
        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(logits, aux1, aux2)
        return logits

    def main_logits(self, output: torch.Tensor | GoogLeNetOutputs) -> torch.Tensor:
        return output.logits if isinstance(output, GoogLeNetOutputs) else output

    def training_loss(
        self,
        output: torch.Tensor | GoogLeNetOutputs,
        target: torch.Tensor,
        *,
        label_smoothing: float = 0.0,
        denominator: float | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of the main head plus 0.3 × that of each auxiliary head (the paper's weight)."""
        if not isinstance(output, GoogLeNetOutputs):
            return super().training_loss(output, target, label_smoothing=label_smoothing, denominator=denominator)

        def ce(logits: torch.Tensor) -> torch.Tensor:
            return cross_entropy(logits, target, label_smoothing=label_smoothing, denominator=denominator)

        return ce(output.logits) + AUX_LOSS_WEIGHT * (ce(output.aux1) + ce(output.aux2))


@register_model
def googlenet(*, aux_logits: bool = False, dropout: float = 0.2, **kwargs) -> GoogLeNet:
    """GoogLeNet: 6,624,904 parameters at 3 channels, 1000 classes, width 1, no aux heads."""
    return GoogLeNet(aux_logits=aux_logits, dropout=dropout, **kwargs)


__all__ = ["GoogLeNet", "GoogLeNetOutputs", "Inception", "googlenet"]
