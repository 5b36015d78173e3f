"""Schema checks of the JSON files stages read: types and value ranges, one line naming the file and key.

A checksum (:mod:`advaudio.store.sealed`) catches a file changed after it was written;
a schema check catches a value no writer makes — an accuracy of 7.5, a string where a
rate belongs, a manifest whose ``shards`` is not a list — whether the file has a
checksum or not (files of earlier releases have none). Readers check the keys they
use and leave the others alone, so a newer writer's extra keys are no error.

>>> Fields({"test": {"accuracy": 7.5}}, path="run/metrics.json", what="metrics file").mapping("test").rate("accuracy")
Traceback (most recent call last):
...
advaudio.errors.DamagedFileError: metrics file run/metrics.json is damaged: test.accuracy must be a number in [0, 1], got 7.5
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

from advaudio.errors import DamagedFileError

__all__ = ["Fields", "MISSING"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: What :meth:`Fields.get` returns for an absent key.
MISSING: Any = _Missing()
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" in [{low:g}, {high:g}]"
    if low is not None:
        return f" >= {low:g}"
    if high is not None:
        return f" <= {high:g}"
    return ""


class Fields:
    """The values of one JSON object of a file, checked key by key.

    Every check returns the value (``None`` for an allowed null, the ``default``
    for an absent optional key) or raises a :class:`~advaudio.errors.DamagedFileError`
    naming ``what``, ``path`` and the key's dotted position in the file.

    Parameters
    ----------
    data : the object (a dict; anything else is itself an error)
    path : the file, for messages
    what : the kind of file, for messages (``"metrics file"``)
    prefix : the object's position in the file (``"attacks[2]"``), for messages
    """

    def __init__(self, data: Any, *, path: str | os.PathLike, what: str, prefix: str = ""):
        self.path, self.what, self.prefix = path, what, prefix
        if not isinstance(data, Mapping):
            self.fail(None, f"must be a JSON object, got {_shown(data)}")
        self.data = data

    # ----------------------------------------------------------------- plumbing
    def name(self, key: str | None) -> str:
        if key is None:
            return self.prefix or "the file"
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str | None, problem: str) -> None:
        raise DamagedFileError(f"{self.what} {self.path} is damaged: {self.name(key)} {problem}")

    def get(self, key: str) -> Any:
        return self.data.get(key, MISSING)

    def _present(self, key: str, *, optional: bool, nullable: bool, default: Any) -> tuple[bool, Any]:
        """(check it?, value): absent optional keys and allowed nulls are not checked further."""
        value = self.get(key)
        if value is MISSING:
            if optional:
                return False, default
            self.fail(key, "is missing")
        if value is None:
            if nullable:
                return False, None
            self.fail(key, "must not be null")
        return True, value

    # ----------------------------------------------------------------- checks
    def number(self, key: str, *, low: float | None = None, high: float | None = None, integer: bool = False,
               optional: bool = False, nullable: bool = False, default: Any = None, nan: bool = False) -> Any:
        """A finite number (``integer``: an integer) within ``[low, high]``; ``nan``: NaN too (an HDF5
        attribute can hold it, JSON cannot: there null says "no value")."""
        check, value = self._present(key, optional=optional, nullable=nullable, default=default)
        if not check:
            return value
        kind = "an integer" if integer else "a number"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if nan and number and math.isnan(value):
            return value
        ok = number and math.isfinite(value) and (not integer or isinstance(value, int) or float(value).is_integer())
        ok = ok and (low is None or value >= low) and (high is None or value <= high)
        if not ok:
            self.fail(key, f"must be {kind}{_range_text(low, high)}, got {_shown(value)}")
        return int(value) if integer else value

    def count(self, key: str, **kw: Any) -> Any:
        """An integer >= 0 (clips, queries, epochs)."""
        return self.number(key, low=0, integer=True, **kw)

    def rate(self, key: str, **kw: Any) -> Any:
        """A fraction in [0, 1] (an accuracy, a fooling rate)."""
        return self.number(key, low=0.0, high=1.0, **kw)

    def seconds(self, key: str, **kw: Any) -> Any:
        """A duration, >= 0."""
        return self.number(key, low=0.0, **kw)

    def boolean(self, key: str, *, optional: bool = False, nullable: bool = False, default: Any = None) -> Any:
        check, value = self._present(key, optional=optional, nullable=nullable, default=default)
        if check and not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_shown(value)}")
        return value

    def string(self, key: str, *, choices: tuple[str, ...] | None = None, optional: bool = False,
               nullable: bool = False, default: Any = None, nonempty: bool = False) -> Any:
        check, value = self._present(key, optional=optional, nullable=nullable, default=default)
        if not check:
            return value
        if not isinstance(value, str) or (nonempty and not value):
            self.fail(key, f"must be a {'non-empty ' if nonempty else ''}string, got {_shown(value)}")
        if choices is not None and value not in choices:
            self.fail(key, f"must be one of {', '.join(choices)}, got {_shown(value)}")
        return value

    def sha256(self, key: str, **kw: Any) -> Any:
        """A sha256 in hex (64 lower-case digits)."""
        value = self.string(key, **kw)
        if isinstance(value, str) and not _HEX64.fullmatch(value):
            self.fail(key, f"must be a sha256 (64 hex digits), got {_shown(value)}")
        return value

    def mapping(self, key: str, *, optional: bool = False, nullable: bool = False) -> Fields | None:
        """The object at ``key`` as Fields (None when absent and optional, or an allowed null)."""
        check, value = self._present(key, optional=optional, nullable=nullable, default=None)
        if not check:
            return None
        if not isinstance(value, Mapping):
            self.fail(key, f"must be a JSON object, got {_shown(value)}")
        return Fields(value, path=self.path, what=self.what, prefix=self.name(key))

    def items(self, key: str, *, optional: bool = False, nullable: bool = False) -> list[Any] | None:
        """The list at ``key`` (None when absent and optional, or an allowed null)."""
        check, value = self._present(key, optional=optional, nullable=nullable, default=None)
        if not check:
            return None
        if not isinstance(value, list):
            self.fail(key, f"must be a list, got {_shown(value)}")
        return value

    def objects(self, key: str, **kw: Any) -> list[Fields]:
        """The list at ``key``, each item an object, as Fields named ``key[i]``."""
        values = self.items(key, **kw) or []
        out = []
        for i, value in enumerate(values):
            if not isinstance(value, Mapping):
                self.fail(f"{key}[{i}]", f"must be a JSON object, got {_shown(value)}")
            out.append(Fields(value, path=self.path, what=self.what, prefix=f"{self.name(key)}[{i}]"))
        return out


def _shown(value: Any) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
