"""``tiny``: a plain torch module (advaudio wraps it as a Classifier)."""

from __future__ import annotations

from torch import nn


class TinyNet(nn.Module):
    """Two convolutions and a linear head; ``min_input_size`` tells advaudio the smallest input."""

    min_input_size = 4

    def __init__(self, in_channels: int, num_classes: int, channels: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Linear(8 * channels, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def tiny(*, in_channels: int, num_classes: int, width: float, hidden: int = 16) -> nn.Module:
    """The factory advaudio calls: its own option is ``hidden`` (channels at width 1)."""
    return TinyNet(in_channels, num_classes, max(1, int(hidden * width + 0.5)))
