"""Representations: pure functions from a waveform to a float32 ``[bands, frames]`` array.

=========  ======================================================  ====================
name       what                                                    bands (defaults)
=========  ======================================================  ====================
stft       log-magnitude STFT, dB re 1.0                           1 + n_fft // 2 = 513
dwt        wavelet-packet log-energy per band, dB re 1.0           2 ** level = 128
chroma     CQT chromagram, librosa.feature.chroma_cqt's values    n_chroma = 12
tonnetz    tonal centroids of that chromagram                      6
=========  ======================================================  ====================

Every representation uses centered frames on one hop, so a waveform of ``n``
samples gives ``1 + n // hop_length`` frames in all of them and frame ``t`` is
centered on sample ``t * hop_length``.

:func:`compute_features` computes the configured set for one clip, sharing the
chromagram between ``chroma`` and ``tonnetz``; :func:`feature_shapes` gives the
shapes without computing anything; :data:`REPRESENTATIONS` is the registry (the
built-ins, then plugins of the entry-point group ``advaudio.representations``: a
:class:`Representation` computed from the waveform and the :class:`FeatureConfig`;
the store records their distribution and version, so its fingerprint changes with them);
:func:`provenance` is what, besides the configuration, decides the numbers
(recorded in every store's fingerprint).

Modules:

* :mod:`~advaudio.features.config` -- :class:`FeatureConfig`, every parameter;
* :mod:`~advaudio.features.spectral` -- :func:`stft`, :func:`dwt` (absolute dB, and why);
* :mod:`~advaudio.features.tonal` -- :func:`chroma`, :func:`tonnetz`;
* :mod:`~advaudio.features._librosa_cqt` -- the cached-filter copy of librosa 0.11's
  chromagram that :mod:`~advaudio.features.tonal` uses on that librosa version;
* :mod:`~advaudio.features.numba_cache` -- librosa's numba kernels loaded under an
  inter-process lock, so that workers starting together cannot corrupt their cache.
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
from advaudio.features.tonal import C1_HZ, IMPLEMENTATION, N_TONNETZ, chroma, tonnetz
from advaudio.plugins import PluginInfo, Registry
from advaudio.validation import integer

# The librosa modules whose numba kernels the transforms reach, compiled (first use of an
# install) or loaded now, under the lock that keeps parallel workers from corrupting the cache.
for _module in ("librosa.util.utils",) + (() if _librosa_cqt.ACTIVE else ("librosa.feature",)):
    import_librosa_module(_module)

__all__ = [
    "FeatureConfig",
    "Representation",
    "REPRESENTATIONS",
    "BUILTIN_REPRESENTATIONS",
    "representation_plugins",
    "TRANSFORM_VERSION",
    "IMPLEMENTATION",
    "C1_HZ",
    "N_TONNETZ",
    "stft",
    "dwt",
    "chroma",
    "tonnetz",
    "compute_features",
    "feature_shapes",
    "n_frames",
    "provenance",
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
