"""The datasets' names, without decoding libraries: option choices and ``--help`` read them here."""

from __future__ import annotations

from advaudio import plugins

#: The built-in readers, in the order listings show them (:data:`advaudio.datasets.DATASETS` checks it).
BUILTIN_DATASETS = ("esc50", "urbansound8k", "esc10", "folder", "synthetic")


def dataset_names() -> list[str]:
    """Built-in and installed plugin datasets (as ``list(DATASETS)``), from metadata only."""
    return plugins.names("advaudio.datasets", BUILTIN_DATASETS)
