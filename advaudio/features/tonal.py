"""The tonal representations: constant-Q chromagram and tonal centroids (tonnetz).

Both are librosa's (``librosa.feature.chroma_cqt`` and ``librosa.feature.tonnetz``
with the same arguments); :data:`IMPLEMENTATION` says whether librosa's own
functions or advaudio's cached-filter copy of them (librosa 0.11 only, see
:mod:`advaudio.features._librosa_cqt`) compute them, and the store records it.
"""

from __future__ import annotations

import warnings

import librosa
import numpy as np

from advaudio.errors import ParameterError
from advaudio.features import _librosa_cqt
from advaudio.features.spectral import check_waveform

__all__ = ["chroma", "tonnetz", "floored_normalize", "check_cqt_range", "C1_HZ", "N_TONNETZ", "IMPLEMENTATION"]

#: C1 in Hz (MIDI 24), librosa's default lowest CQT frequency.
C1_HZ = float(librosa.note_to_hz("C1"))

#: Number of tonal-centroid dimensions (fifths, minor thirds, major thirds; x and y each).
N_TONNETZ = 6

#: What computes :func:`chroma` and :func:`tonnetz` with the installed librosa.
IMPLEMENTATION = (
    f"advaudio copy of librosa {'.'.join(map(str, _librosa_cqt.COPIED_VERSION))}"
    if _librosa_cqt.ACTIVE
    else "librosa"
)


def check_cqt_range(
    *, sr: float, fmin: float, tuning: float | None, n_bins: int, bins_per_octave: int
) -> None:
    """Raise ParameterError when the CQT's top filter would reach above Nyquist."""
    # Worst case of an estimated tuning is +0.5 bin (estimate_tuning's range is [-0.5, 0.5)).
    worst_tuning = 0.5 if tuning is None else max(tuning, 0.0)
    freqs = librosa.interval_frequencies(
        n_bins=n_bins,
        fmin=fmin * 2.0 ** (worst_tuning / bins_per_octave),
        intervals="equal",
        bins_per_octave=bins_per_octave,
        sort=True,
    )
    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, gamma=0)  # the CQT's bandwidths
    if cutoff > sr / 2:
        raise ParameterError(
            f"CQT of {n_bins // bins_per_octave} octaves above fmin={fmin:.2f} Hz reaches "
            f"{cutoff:.0f} Hz, above the Nyquist frequency {sr / 2:.0f} Hz; lower n_octaves or fmin"
        )


def chroma(
    y: np.ndarray,
    *,
    sr: int = 22050,
    hop_length: int = 512,
    n_chroma: int = 12,
    bins_per_octave: int = 36,
    n_octaves: int = 7,
    fmin: float = C1_HZ,
    tuning: float | None = None,
    floor_db: float | None = None,
) -> np.ndarray:
    """Constant-Q chromagram: ``librosa.feature.chroma_cqt`` with the same arguments, faster.

    Each frame is normalised to a maximum of 1 (librosa's ``norm=np.inf``), or
    with ``floor_db``, to ``max(frame maximum, floor)`` (see :func:`floored_normalize`).

    On librosa 0.11 this is :mod:`advaudio.features._librosa_cqt`, librosa's
    statements with the filter bank cached: 3 times faster, equal to ~1e-6
    except in frames of near digital silence (up to ~1e-3); on any other
    librosa version it is librosa's own function (see :data:`IMPLEMENTATION`).

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono waveform.
    sr : int
        Sample rate in Hz.
    hop_length : int
        Samples between frames.
    n_chroma : int
        Chroma bins.
    bins_per_octave : int
        CQT bins per octave (a multiple of ``n_chroma``).
    n_octaves : int
        CQT octaves above ``fmin``.
    fmin : float
        Lowest CQT frequency in Hz (C1 ~= 32.70 Hz).
    tuning : float or None
        Deviation from A440 in fractions of a CQT bin; None estimates it from ``y``.
    floor_db : float or None
        None: librosa's per-frame normalisation. A number: frames more than
        ``floor_db`` dB below the clip's loudest frame are not brought up to 1
        (:class:`~advaudio.features.FeatureConfig` ``chroma_floor_db`` says why).

    Returns
    -------
    np.ndarray [shape=(n_chroma, 1 + n // hop_length), dtype=float32]
    """
    y = check_waveform(y)
    if bins_per_octave % n_chroma:
        raise ParameterError(
            f"bins_per_octave={bins_per_octave} must be a multiple of n_chroma={n_chroma}"
        )
    try:
        with warnings.catch_warnings():
            # librosa warns when the lowest, most downsampled octaves of a short
            # clip are shorter than their filters; the result is still defined.
            warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
            chroma_cqt = _librosa_cqt.chroma_cqt if _librosa_cqt.ACTIVE else librosa.feature.chroma_cqt
            result = chroma_cqt(
                y=y, sr=sr, hop_length=hop_length, fmin=fmin, n_chroma=n_chroma,
                n_octaves=n_octaves, bins_per_octave=bins_per_octave, tuning=tuning,
                norm=np.inf if floor_db is None else None,
            )
    except librosa.util.exceptions.ParameterError as exc:  # e.g. a clip too short for the CQT
        raise ParameterError(f"chroma: {exc}") from None
    if floor_db is not None:
        result = floored_normalize(result, floor_db=floor_db)
    return result.astype(np.float32)


def floored_normalize(chroma: np.ndarray, *, floor_db: float) -> np.ndarray:
    """Divide each frame of an unnormalised ``[n_chroma, frames]`` chromagram by ``max(frame max, floor)``.

    ``floor = 10 ** (-floor_db / 20)`` times the clip's largest value (the CQT
    is an amplitude): frames within ``floor_db`` of the loudest are librosa's
    max-normalised frames, quieter ones keep their level relative to the
    floor. Continuous in the chromagram, and invariant to the clip's gain like
    librosa's normalisation. A clip of zeros stays zeros.
    """
    frame_max = np.max(chroma, axis=-2, keepdims=True)
    length = np.maximum(frame_max, np.max(frame_max) * 10.0 ** (-floor_db / 20.0))
    length[length < np.finfo(chroma.dtype).tiny] = 1.0  # librosa.util.normalize's threshold
    return chroma / length


def tonnetz(*, chroma: np.ndarray, floored: bool = False) -> np.ndarray:
    """Tonal centroid features (Harte et al. 2006) of an already computed chromagram.

    Equal to ``librosa.feature.tonnetz(chroma=chroma)``; taking the chromagram
    instead of the waveform means the CQT is never computed twice.

    Parameters
    ----------
    chroma : np.ndarray [shape=(n_chroma, frames)]
        Chromagram, e.g. from :func:`chroma`.
    floored : bool
        The chromagram was computed with ``floor_db``: frames are divided by
        ``max(L1 norm, 1)`` instead of their L1 norm, so the floored (quiet)
        frames, the only ones whose chroma sums to less than 1, are not scaled
        back up (librosa's values everywhere else).

    Returns
    -------
    np.ndarray [shape=(6, frames), dtype=float32]
        Rows: fifths x, y; minor thirds x, y; major thirds x, y.
    """
    chroma = np.asarray(chroma)
    if chroma.ndim != 2 or chroma.shape[0] == 0:
        raise ParameterError(
            f"chroma must be a 2-D [n_chroma, frames] array, got shape {chroma.shape}"
        )
    if not np.isfinite(chroma).all():
        raise ParameterError("chroma contains NaN or infinite values")
    if floored:
        # librosa divides by the L1 norm; max(L1, 1) is the same for every frame that peaks
        # at 1 and leaves the floored frames at their level.
        normalized = chroma / np.maximum(np.sum(np.abs(chroma), axis=-2, keepdims=True), 1.0)
        basis = _librosa_cqt._tonnetz_basis(chroma.shape[-2])
        return np.einsum("pc,ci->pi", basis, normalized, optimize=True).astype(np.float32)
    if _librosa_cqt.ACTIVE:
        return _librosa_cqt.tonnetz(chroma).astype(np.float32)
    return librosa.feature.tonnetz(chroma=chroma).astype(np.float32)
