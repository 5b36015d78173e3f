"""The representations' registry: name → how to compute it from a clip; :func:`compute_features`.

Importing this module loads librosa's numba kernels under the lock of
:mod:`~advaudio.features.numba_cache` (before any transform runs in this process).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np

from advaudio.errors import PluginError
from advaudio.features import _librosa_cqt
from advaudio.features.config import FeatureConfig
from advaudio.features.numba_cache import import_librosa_module
from advaudio.features.spectral import check_waveform, dwt, n_frames, stft
from advaudio.features.tonal import C1_HZ, IMPLEMENTATION, N_TONNETZ, chroma, tonnetz  # noqa: F401  (the package's)
from advaudio.plugins import PluginInfo, Registry
from advaudio.validation import integer

# The librosa modules whose numba kernels the transforms reach, compiled (first use of an
# install) or loaded now, under the lock that keeps parallel workers from corrupting the cache.
for _module in ("librosa.util.utils",) + (() if _librosa_cqt.ACTIVE else ("librosa.feature",)):
    import_librosa_module(_module)

__all__ = [
    "BUILTIN_REPRESENTATIONS",
    "REPRESENTATIONS",
    "Representation",
    "TRANSFORM_VERSION",
    "compute_features",
    "feature_shapes",
    "provenance",
    "representation",
    "representation_plugins",
]

# Bumped whenever a transform changes its output: part of every store fingerprint.
TRANSFORM_VERSION = 2


def provenance() -> dict[str, Any]:
    """What decides the transforms' numbers besides :class:`FeatureConfig`, for the store's fingerprint.

    ``transform_version`` (:data:`TRANSFORM_VERSION`), ``librosa_version`` and
    ``chroma_implementation`` (:data:`advaudio.features.tonal.IMPLEMENTATION`):
    stores built under another librosa or the other chromagram path get
    another fingerprint, so their tensors never mix.
    """
    return {
        "transform_version": TRANSFORM_VERSION,
        "librosa_version": librosa.__version__,
        "chroma_implementation": IMPLEMENTATION,
    }


@dataclass(frozen=True)
class Representation:
    """One registry entry: how to compute a representation from a clip, and its band count.

    ``compute(y, config, shared)`` returns the float32 ``[bands, frames]`` array;
    ``shared`` is a per-clip dict where intermediate results (the chromagram)
    are kept so that representations built on them do not recompute them.
    Calling the entry, ``REPRESENTATIONS[name](y, config)``, computes it alone.
    """

    compute: Callable[[np.ndarray, FeatureConfig, dict[str, np.ndarray]], np.ndarray]
    n_bands: Callable[[FeatureConfig], int]

    def __call__(self, y: np.ndarray, config: FeatureConfig) -> np.ndarray:
        return self.compute(y, config, {})


def _shared_chroma(y: np.ndarray, c: FeatureConfig, shared: dict[str, np.ndarray]) -> np.ndarray:
    if "chroma" not in shared:
        shared["chroma"] = chroma(
            y,
            sr=c.sr,
            hop_length=c.hop_length,
            n_chroma=c.n_chroma,
            bins_per_octave=c.bins_per_octave,
            n_octaves=c.n_octaves,
            fmin=c.fmin,
            tuning=c.tuning,
            floor_db=c.chroma_floor_db,
        )
    return shared["chroma"]


#: The built-in representations; adding one is a function and an entry here.
BUILTIN_REPRESENTATIONS: dict[str, Representation] = {
    "stft": Representation(
        lambda y, c, shared: stft(
            y,
            sr=c.sr,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            window=c.window,
            top_db=c.top_db,
            amin=c.amin,
        ),
        lambda c: 1 + c.n_fft // 2,
    ),
    "dwt": Representation(
        lambda y, c, shared: dwt(
            y,
            wavelet=c.wavelet,
            level=c.dwt_level,
            mode=c.dwt_mode,
            hop_length=c.hop_length,
            top_db=c.top_db,
            amin=c.amin,
        ),
        lambda c: 2**c.dwt_level,
    ),
    "chroma": Representation(_shared_chroma, lambda c: c.n_chroma),
    "tonnetz": Representation(
        lambda y, c, shared: tonnetz(chroma=_shared_chroma(y, c, shared), floored=c.chroma_floor_db is not None),
        lambda c: N_TONNETZ,
    ),
}


def _plugin_representation(obj: Any, info: PluginInfo) -> Representation:
    """A :class:`Representation`, or any object with ``compute(y, config, shared)`` and ``n_bands(config)``."""
    if isinstance(obj, Representation):
        return obj
    compute, n_bands = getattr(obj, "compute", None), getattr(obj, "n_bands", None)
    if not (callable(compute) and callable(n_bands)):
        raise PluginError(f"representation {info.name!r} from {info.describe()} has no compute(y, config, shared) "
                          "and n_bands(config)")
    return Representation(compute, n_bands)


#: Registry name -> :class:`Representation`: the built-ins, then the installed plugins
#: (entry-point group ``advaudio.representations``, :mod:`advaudio.plugins`). A Dask worker
#: looks a plugin up itself, on its first clip: nothing about it is shipped with the tasks.
REPRESENTATIONS: Registry[Representation] = Registry(
    "advaudio.representations", BUILTIN_REPRESENTATIONS, what="representation", adapt=_plugin_representation)


def representation(name: str) -> Representation:
    """The registry entry ``name``; a name this process does not know is one line saying where
    (a Dask worker or cluster job whose environment lacks a plugin the client has)."""
    try:
        return REPRESENTATIONS[name]
    except KeyError:
        import socket
        import sys

        raise PluginError(f"unknown representation {name!r} in the Python of {socket.gethostname()} "
                          f"({sys.executable}); known there: {', '.join(REPRESENTATIONS)}") from None


def representation_plugins(names) -> list[dict[str, str]]:
    """The plugin records (group, name, distribution, version) of the plugin representations among ``names``."""
    return [info.record() for info in (REPRESENTATIONS.plugin(n) for n in names) if info is not None]


def compute_features(y: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """All of ``config.representations`` for one clip.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono waveform already at ``config.sr``; computed in float32 (cast if needed).
    config : FeatureConfig

    Returns
    -------
    dict name -> np.ndarray [shape=(bands, 1 + n // hop_length), dtype=float32, C-contiguous]
        In ``config.representations`` order; shapes as :func:`feature_shapes`.
    """
    y = check_waveform(y).astype(np.float32, copy=False)
    shared: dict[str, np.ndarray] = {}
    expected = feature_shapes(config, y.size)
    out = {}
    for name in config.representations:
        array = np.ascontiguousarray(
            representation(name).compute(y, config, shared), dtype=np.float32
        )
        if array.shape != expected[name]:  # the store preallocates from feature_shapes
            raise RuntimeError(
                f"{name} has shape {array.shape}, feature_shapes says {expected[name]}"
            )
        out[name] = array
    return out


def feature_shapes(config: FeatureConfig, n_samples: int) -> dict[str, tuple[int, int]]:
    """``(bands, frames)`` of each configured representation for ``n_samples`` samples.

    Computes nothing: the store preallocates its arrays from this.
    """
    n_samples = integer("n_samples", n_samples)
    frames = n_frames(n_samples, config.hop_length)
    return {
        name: (representation(name).n_bands(config), frames) for name in config.representations
    }
