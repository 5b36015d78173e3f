"""The one door to Foolbox 3 (and eagerpy): imported lazily, on the first attack run.

``import advaudio.attacks`` and the CLI stay cheap, and Foolbox's pinned, dormant
stack never spreads through the code: only the spec modules' ``execute`` methods
and the engine touch the module object returned here.
"""

from __future__ import annotations

import warnings
from typing import Any


def foolbox() -> Any:
    """Import Foolbox lazily (≈1 s, pulls in scipy.ndimage) with its noise silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox  # noqa: PLC0415

    return foolbox


def foolbox_version() -> str:
    """Foolbox's version, for provenance records (imports it)."""
    return str(foolbox().__version__)
