"""What every architecture shares: argument checks, channel scaling, input checks, init."""

from __future__ import annotations

import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ParameterError


def scaled(channels: int, width: float) -> int:
    """``channels`` multiplied by ``width``, rounded half up, at least 1."""
    return max(1, int(channels * width + 0.5))


def _as_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ParameterError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ParameterError(f"{name} must be at least {minimum}, got {number}")
    return number


def _as_width(value: object) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"width must be a positive number, got {value!r}")
    try:
        width = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParameterError(f"width must be a positive number, got {value!r}") from None
    if not math.isfinite(width) or width <= 0:
        raise ParameterError(f"width must be a positive number, got {value!r}")
    return width


def check_dropout(value: float) -> float:
    """``value`` as a float, if it is a probability a dropout layer can use."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ParameterError(f"dropout must be a probability in [0, 1), got {value!r}")
    return float(value)


class Classifier(nn.Module):
    """Base of every architecture: a CNN mapping ``(N, C, H, W)`` spectrograms to logits.

    It validates the constructor arguments once, so each architecture only builds
    layers, and checks inputs in :meth:`check_input`, so that an input the
    architecture cannot take fails with a :class:`ParameterError` naming the minimum
    size instead of a pooling error deep inside torch. An architecture whose training
    output is more than logits (GoogLeNet's auxiliary heads) overrides
    :meth:`main_logits` and :meth:`training_loss`, so the trainer never asks which
    model it has.

    Attributes:
        in_channels: channels of the input (1 for a single spectrogram).
        num_classes: length of the logit vector.
        width: multiplier applied to every hidden channel count.
        min_input_size: smallest height and width the layers can take.
    """

    min_input_size: int = 1

    def __init__(self, in_channels: int, num_classes: int, width: float) -> None:
        super().__init__()
        self.in_channels = _as_int("in_channels", in_channels, 1)
        self.num_classes = _as_int("num_classes", num_classes, 2)
        self.width = _as_width(width)

    def channels(self, base: int) -> int:
        """A published channel count scaled by this model's width."""
        return scaled(base, self.width)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ParameterError unless ``x`` is a batch this model can classify."""
        name = type(self).__name__
        if x.ndim != 4:
            raise ParameterError(
                f"{name} expects a batch shaped (N, C, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ParameterError(
                f"{name} was built for {self.in_channels} input channel(s), got {x.shape[1]}"
            )
        height, width = x.shape[-2:]
        if height < self.min_input_size or width < self.min_input_size:
            raise ParameterError(
                f"{name} needs inputs of at least {self.min_input_size}×{self.min_input_size} "
                f"(height × width), got {height}×{width}"
            )

    def main_logits(self, output) -> torch.Tensor:
        """The logits that classify, from what :meth:`forward` returned (here: the output itself)."""
        return output

    def training_loss(
        self, output, target: torch.Tensor, *, label_smoothing: float = 0.0, denominator: float | None = None
    ) -> torch.Tensor:
        """The loss to minimise for ``output = self(x)`` in training mode: cross-entropy.

        Args:
            output: what :meth:`forward` returned for the batch.
            target: class indices, shape ``(N,)``, or class probabilities, shape ``(N, classes)``
                (mixed samples' soft labels: mixup, between-class mixing). An override must
                take both; ``F.cross_entropy`` does.
            label_smoothing: cross-entropy label smoothing (0: none).
            denominator: None for the mean over the batch; otherwise the summed loss
                divided by it (a share of a larger batch whose mean is wanted).
        """
        return cross_entropy(output, target, label_smoothing=label_smoothing, denominator=denominator)


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, label_smoothing: float = 0.0, denominator: float | None = None
) -> torch.Tensor:
    """Cross-entropy of one head: the batch mean, or with ``denominator`` the sum divided by it.
    ``target``: class indices or class probabilities (soft labels)."""
    if denominator is None:
        return F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing, reduction="sum") / denominator


def init_weights(model: nn.Module) -> None:
    """Initialise layers the way torchvision does for VGG and ResNet.

    Kaiming-normal (fan-out, ReLU gain) convolutions keep activation variance stable
    through deep ReLU stacks; normalisation layers start as the identity; linear
    layers start small, N(0, 0.01), so initial logits are near zero.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
