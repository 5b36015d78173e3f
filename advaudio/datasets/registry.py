"""The dataset registry: name → reader, the built-ins then plugins; :func:`read_dataset`, :func:`load_clip`."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from advaudio.datasets import audio
from advaudio.datasets.readers import (
    read_esc10,
    read_esc50,
    read_folder,
    read_synthetic,
    read_urbansound8k,
)
from advaudio.datasets.synthetic import synthesize
from advaudio.datasets.table import Clip, ClipTable
from advaudio.errors import ParameterError, PluginError
from advaudio.plugins import PluginInfo, Registry

__all__ = ["DATASETS", "load_clip", "read_dataset"]



def _plugin_reader(obj, info: PluginInfo) -> Callable[..., ClipTable]:
    if not callable(obj):
        raise PluginError(f"dataset {info.name!r} from {info.describe()} is {type(obj).__name__}, not a reader "
                          "reader(root, **options) -> ClipTable")
    return obj


#: Dataset name → reader ``reader(root, **options) -> ClipTable``: the built-ins, then installed plugins.
DATASETS: Registry[Callable[..., ClipTable]] = Registry("advaudio.datasets", {
    "esc50": read_esc50,
    "urbansound8k": read_urbansound8k,
    "esc10": read_esc10,
    "folder": read_folder,
    "synthetic": read_synthetic,
}, what="dataset", adapt=_plugin_reader)


def read_dataset(name: str, *, root=None, **options) -> ClipTable:
    """Read dataset ``name`` (a key of :data:`DATASETS`) with reader ``options``.

    Raises
    ------
    ParameterError
        Unknown name (the message lists the known ones), an option the reader does
        not take, or a missing root for a dataset on disk.
    DatasetError
        The tree or its metadata is missing or malformed.
    """
    try:
        reader = DATASETS[name]
    except (KeyError, TypeError):
        raise ParameterError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None
    sig = inspect.signature(reader)
    try:
        sig.bind(root, **options)
    except TypeError:
        accepted = [p for p in sig.parameters if p != "root"]
        raise ParameterError(
            f"dataset {name!r} takes option(s) {', '.join(accepted) or '(none)'}; "
            f"got {', '.join(sorted(options))}"
        ) from None
    table = reader(root, **options)
    if not isinstance(table, ClipTable):  # a plugin's mistake, named in one line
        raise ParameterError(f"dataset {name!r}: its reader returned {type(table).__name__}, not a ClipTable")
    return table


def load_clip(table: ClipTable, clip: Clip, *, sr: int) -> np.ndarray:
    """Waveform of one clip of ``table`` at ``sr`` Hz, cropped/padded to ``table.duration``.

    The single entry point the featurizer calls. Synthetic clips are generated at the
    table's ``sr`` option and resampled with soxr when ``sr`` differs (so the content
    does not depend on the featurizer's rate); file clips go through
    :func:`advaudio.datasets.audio.load_audio`.

    Returns
    -------
    np.ndarray, float32, shape (round(sr * table.duration),)

    Raises
    ------
    AudioError
        The file cannot be used (the message is the reason to record).
    """
    if clip.is_synthetic:
        opts = table.options
        native = int(opts.get("sr", sr))
        y = synthesize(clip, sr=native, duration=table.duration, seed=int(opts.get("seed", 0)))
        if native != sr:
            y = audio.fix_length(
                audio.resample(y, orig_sr=native, target_sr=int(sr)),
                size=int(round(sr * table.duration)),
            )
        return y
    return audio.load_audio(clip.path, sr=sr, duration=table.duration)
