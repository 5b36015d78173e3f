"""Packages whose names are imported from their modules on first use (PEP 562).

A package ``__init__`` that imports its heavy modules (torch, librosa, h5py) makes every
module of the package heavy: Python runs the ``__init__`` before any submodule. The light
modules (configuration classes, option declarations, built-in names) must be importable
without them, so that ``advaudio COMMAND --help`` and ``advaudio path`` stay fast; a
package therefore declares what it exports and where each name lives, and the name is
imported when it is first looked up::

    __getattr__, __dir__ = exports(__name__, {".loop": ["train"], ".config": ["TrainConfig"]})

``from advaudio.training import train`` and ``advaudio.training.train`` work as before.
A name is never exported under the name of one of the package's own submodules: importing
that submodule would replace the attribute.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def exports(package: str, modules: Mapping[str, Iterable[str]], *,
            first: Iterable[str] = ()) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for package ``package``.

    Parameters
    ----------
    package : the package's ``__name__``
    modules : module (relative to the package, e.g. ``".loop"``) → the names it defines that the
        package exports
    first : modules imported before any name is looked up (e.g. those whose import registers
        the built-in entries of a registry)
    """
    where = {name: module for module, names in modules.items() for name in names}
    first = tuple(first)

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        for m in first:
            importlib.import_module(m, package)
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)  # asked once: the next lookup finds it
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__


def names(modules: Mapping[str, Iterable[str]]) -> list[str]:
    """Every exported name of ``modules`` (a package's ``__all__``)."""
    return [name for group in modules.values() for name in group]
