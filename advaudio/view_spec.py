"""A view's name and the model's input size as a configuration writes them, parsed without torch.

:class:`~advaudio.training.TrainConfig` normalises both when it is built, and the Python
API and ``advaudio train --help`` build or describe one without loading a tensor library;
the views themselves (reading, normalising, resizing) are :mod:`advaudio.views`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

from advaudio.errors import ParameterError

__all__ = ["DEFAULT_PERCENTILES", "SEPARATOR", "format_input_size", "parse_input_size", "parse_view"]

SEPARATOR = "+"
DEFAULT_PERCENTILES = (0.5, 99.5)


def parse_view(spec: Any) -> tuple[str, ...]:
    """Representation names of a view spec: ``"dwt+chroma"`` → ``("dwt", "chroma")``; a
    :class:`~advaudio.views.View` gives its own."""
    if not isinstance(spec, (str, Sequence)) and hasattr(spec, "representations"):  # a View
        return tuple(spec.representations)
    if isinstance(spec, str):
        names = tuple(part.strip() for part in spec.split(SEPARATOR))
    else:
        names = tuple(str(part).strip() for part in spec)
    if not names or any(not n for n in names):
        raise ParameterError(f"a view names representations joined by '+', e.g. 'dwt+chroma'; got {spec!r}")
    if len(set(names)) != len(names):
        raise ParameterError(f"view {spec!r} names a representation twice")
    return names


def parse_input_size(value: Any) -> tuple[int, int] | None:
    """``None``/``"none"`` (keep the store's size), ``128``, ``"128x96"``, ``(128, 96)`` → ``(H, W)``."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "native"):
            return None
        parts = text.replace("×", "x").split("x")
        try:
            sizes = [int(p) for p in parts]
        except ValueError:
            raise ParameterError(f"input size must look like 128 or 128x96 (HxW), got {value!r}") from None
    elif isinstance(value, numbers.Integral):  # numpy's integers too
        sizes = [int(value)]
    else:
        try:
            sizes = [int(v) for v in value]
        except (TypeError, ValueError):
            raise ParameterError(f"input size must be (H, W), got {value!r}") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise ParameterError(f"input size must be two positive integers (H, W), got {value!r}")
    return (sizes[0], sizes[1])


def format_input_size(size: tuple[int, int] | None) -> str:
    """``(128, 96)`` → ``"128x96"``; None → ``"none"`` (the inverse of :func:`parse_input_size`)."""
    return "none" if size is None else f"{size[0]}x{size[1]}"
