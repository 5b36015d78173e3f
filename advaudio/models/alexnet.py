"""AlexNet (Krizhevsky et al., 2012), single-tower form as in torchvision."""

from __future__ import annotations

import torch
from torch import nn

from .base import Classifier, check_dropout, init_weights
from .registry import register_model


class AlexNet(Classifier):
    """Five convolutions, three max-pools, then a three-layer dropout classifier.

    An adaptive average pool to 6×6 in front of the classifier lets any input of at
    least 63×63 through; the classifier's 4096 hidden units scale with ``width``
    like the convolutions do.
    """

    min_input_size = 63  # the stride-4 stem and three 3×3/2 pools leave 1×1 at 63

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        width: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, num_classes, width)
        dropout = check_dropout(dropout)
        c1, c2, c3, c4, c5 = (self.channels(c) for c in (64, 192, 384, 256, 256))
        hidden = self.channels(4096)
        self.features = nn.Sequential(
            nn.Conv2d(self.in_channels, c1, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(c5 * 6 * 6, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, self.num_classes),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model
def alexnet(*, dropout: float = 0.5, **kwargs) -> AlexNet:
    """AlexNet: 61,100,840 parameters at 3 channels, 1000 classes, width 1."""
    return AlexNet(dropout=dropout, **kwargs)


__all__ = ["AlexNet", "alexnet"]
