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

* :mod:`~advaudio.features.config` -- :class:`FeatureConfig`, every parameter (imports no
  transform library: option listings read its defaults);
* :mod:`~advaudio.features.representations` -- the registry and :func:`compute_features`;
* :mod:`~advaudio.features.spectral` -- :func:`stft`, :func:`dwt` (absolute dB, and why);
* :mod:`~advaudio.features.tonal` -- :func:`chroma`, :func:`tonnetz`;
* :mod:`~advaudio.features._librosa_cqt` -- the cached-filter copy of librosa 0.11's
  chromagram that :mod:`~advaudio.features.tonal` uses on that librosa version;
* :mod:`~advaudio.features.numba_cache` -- librosa's numba kernels loaded under an
  inter-process lock, so that workers starting together cannot corrupt their cache.
"""

from advaudio.lazy import exports, names

# Imported on first use (advaudio.lazy): FeatureConfig (its defaults, in --help) without librosa.
# The transforms come through .representations, whose import loads librosa's kernels under the lock.
_EXPORTS = {
    ".config": ["FeatureConfig"],
    ".representations": ["Representation", "REPRESENTATIONS", "BUILTIN_REPRESENTATIONS", "representation",
                         "representation_plugins", "TRANSFORM_VERSION", "compute_features", "feature_shapes",
                         "provenance", "stft", "dwt", "n_frames", "IMPLEMENTATION", "C1_HZ", "N_TONNETZ",
                         "chroma", "tonnetz"],
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)
__all__ = names(_EXPORTS)
