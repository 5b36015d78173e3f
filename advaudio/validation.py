"""Checks of scalar parameters, each raising :class:`~advaudio.errors.ParameterError` in one wording.

Every check takes the parameter's name (as the user wrote it: ``"hop_length"``,
``"cluster jobs"``) and its value, and returns the value normalised (``int``,
``float``), so a frozen configuration can store the canonical form:

>>> integer("hop_length", 512)
512
>>> integer("hop_length", 0)
Traceback (most recent call last):
...
advaudio.errors.ParameterError: hop_length must be a positive integer, got 0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from typing import Any, TypeVar

from advaudio.errors import ParameterError

__all__ = ["integer", "finite_float", "choice", "device"]

T = TypeVar("T")


def integer(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` that is at least ``minimum`` (default 1: a positive integer).

    ``bool`` is refused although it is an ``int`` subclass: ``True`` as a hop
    length is a mistake, not 1. numpy integers are accepted.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            minimum, f"an integer >= {minimum}"
        )
        raise ParameterError(f"{name} must be {what}, got {value!r}")
    return int(value)


def finite_float(name: str, value: Any, *, positive: bool = False, minimum: float | None = None) -> float:
    """``value`` as a finite ``float``; ``positive=True``: also > 0; ``minimum``: also >= it.

    Defaults: any finite number.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ParameterError(f"{name} must be positive, got {value!r}")
    if minimum is not None and value < minimum:
        raise ParameterError(f"{name} must be >= {minimum}, got {value!r}")
    return float(value)


def choice(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices`` (listed in the message otherwise)."""
    if value not in tuple(choices):
        raise ParameterError(
            f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}"
        )
    return value


def device(name: str, value: Any) -> str:
    """``value`` if it names a device a stage can ask torch for: ``auto``, ``cpu`` or ``cuda[:N]``
    (checked as text, without torch; whether a GPU is there is the stage's question)."""
    text = str(value).strip().lower()
    kind, sep, index = text.partition(":")
    if kind not in ("auto", "cpu", "cuda") or (sep and (kind == "auto" or not index.isdigit())):
        raise ParameterError(f"{name} must be auto, cpu or cuda[:N], got {value!r}")
    return text
