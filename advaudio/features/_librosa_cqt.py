"""A copy of librosa 0.11's constant-Q chromagram, with the filter bank cached.

Provenance: the statements of librosa 0.11.0 (ISC licence, Copyright (c) 2013--2023,
librosa development team) ``librosa.feature.chroma_cqt`` on ``librosa.vqt``
(equal-tempered bins, ``filter_scale=1``, ``norm=1``, ``sparsity=0.01``, hann,
constant padding, ``res_type="soxr_hq"``, ``scale=True``), ``librosa.estimate_tuning``
(through ``piptrack`` and ``pitch_tuning``, including the float64 rounding of
piptrack's numba stencil), ``librosa.resample`` for the octave downsampling,
``librosa.feature.tonnetz``'s basis and the private ``librosa.filters._relative_bandwidth``,
written with ``librosa.filters`` and ``librosa.util`` only. :data:`ACTIVE` is true only
on librosa 0.11, and :mod:`advaudio.features.tonal` calls librosa's own functions
otherwise; the store records which one ran (:func:`advaudio.features.provenance`).

Why a copy: ``benchmarks/bench_chroma.py`` (50 ESC-10 clips at 22050 Hz, one thread,
librosa 0.11.0) measured chroma + tonnetz 3.1 times faster per clip than
``librosa.feature.chroma_cqt`` + ``tonnetz(chroma=...)`` (2.8 times in a second run;
4.4 times against librosa with its joblib filter cache on, which hashes every
call's arguments), and a fresh worker process 0.7 s faster to its first clip
(1.0 s against the cache), because ``librosa.feature``, ``librosa.core.pitch`` and
``librosa.core.spectrum`` load numba-compiled code that this copy does not
import. The copy is kept only while it wins by at least 1.5 times per clip.
Three things make the per-clip difference, none of which changes the algorithm:

* the CQT's filter bank depends only on the parameters and the tuning, yet
  librosa rebuilds it on every call; here it is built once per (parameters,
  tuning) and kept (the estimated tuning takes one of 100 values), and the
  lower octaves reuse the top octave's filters, which are the same in
  normalised frequency;
* the tuning estimate is librosa's, exactly, but looks only at the bins it keeps;
* each octave's STFT is taken in float32 where librosa uses float64.

The last one is the only numerical difference: the chromagram equals librosa's
to ~1e-6 wherever a frame is within 60 dB of the clip's loudest frame; frames
of near digital silence, whose normalisation magnifies float32 rounding, differ
by up to ~1e-3 (8.4e-4 chroma, 2.2e-4 tonnetz at most on the 50 clips;
tests/test_features.py checks every step against librosa).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import librosa
import numpy as np
import soxr

from advaudio.errors import ParameterError
from advaudio.features.spectral import centered_stft

#: The librosa (major, minor) whose statements this module follows.
COPIED_VERSION = (0, 11)
#: Whether the installed librosa is that version, so that this module is used.
ACTIVE = tuple(int(p) for p in librosa.__version__.split(".")[:2]) == COPIED_VERSION

# librosa's chroma_cqt settings that FeatureConfig does not expose; fixed here so
# the chromagram stays equal to librosa's defaults.
_CQT_RES_TYPE = "soxr_hq"
_CQT_SPARSITY = 0.01


def chroma_cqt(
    y: np.ndarray,
    *,
    sr: float,
    hop_length: int,
    fmin: float,
    n_chroma: int,
    n_octaves: int,
    bins_per_octave: int,
    tuning: float | None,
    norm: float | None = np.inf,
) -> np.ndarray:
    """``librosa.feature.chroma_cqt(y=y, ...)`` with its defaults (threshold 0, norm inf; ``norm=None``
    leaves the frames unnormalised)."""
    magnitude = cqt_magnitude(
        y,
        sr=sr,
        hop_length=hop_length,
        fmin=fmin,
        n_bins=n_octaves * bins_per_octave,
        bins_per_octave=bins_per_octave,
        tuning=tuning,
    )
    to_chroma = _cq_to_chroma(magnitude.shape[-2], bins_per_octave, n_chroma, float(fmin))
    result = np.einsum("cf,...ft->...ct", to_chroma, magnitude, optimize=True)
    result[result < 0.0] = 0.0
    if norm is None:
        return result
    return librosa.util.normalize(result, norm=norm, axis=-2)


def tonnetz(chroma: np.ndarray) -> np.ndarray:
    """``librosa.feature.tonnetz(chroma=chroma)``, its statements."""
    return np.einsum("pc,...ci->...pi", _tonnetz_basis(chroma.shape[-2]),
                     librosa.util.normalize(chroma, norm=1, axis=-2), optimize=True)


@functools.lru_cache(maxsize=8)
def _cq_to_chroma(n_input: int, bins_per_octave: int, n_chroma: int, fmin: float) -> np.ndarray:
    matrix = librosa.filters.cq_to_chroma(n_input, bins_per_octave=bins_per_octave, n_chroma=n_chroma,
                                          fmin=fmin, window=None)
    matrix.flags.writeable = False
    return matrix


@functools.lru_cache(maxsize=8)
def _tonnetz_basis(n_chroma: int) -> np.ndarray:
    # librosa.feature.tonnetz's transformation matrix, the same statements.
    dim_map = np.linspace(0, 12, num=n_chroma, endpoint=False)
    scale = np.asarray([7.0 / 6, 7.0 / 6, 3.0 / 2, 3.0 / 2, 2.0 / 3, 2.0 / 3])
    V = np.multiply.outer(scale, dim_map)
    V[::2] -= 0.5
    R = np.array([1, 1, 1, 1, 0.5, 0.5])  # fifths, minor thirds, major thirds
    phi = R[:, np.newaxis] * np.cos(np.pi * V)
    phi.flags.writeable = False
    return phi


def cqt_magnitude(
    y: np.ndarray,
    *,
    sr: float,
    hop_length: int,
    fmin: float,
    n_bins: int,
    bins_per_octave: int,
    tuning: float | None,
) -> np.ndarray:
    """``np.abs(librosa.cqt(y, ...))`` with the filter bank built once per parameter set."""
    if tuning is None:
        tuning = estimate_tuning(y, sr=sr, bins_per_octave=bins_per_octave)
    dtype = librosa.util.dtype_r2c(y.dtype)
    plan = _cqt_plan(
        float(sr),
        int(hop_length),
        float(fmin * 2.0 ** (tuning / bins_per_octave)),
        int(n_bins),
        int(bins_per_octave),
        np.dtype(dtype).str,
    )
    if plan.early_downsample > 1:
        if y.size < plan.early_downsample:
            raise ParameterError(f"waveform of {y.size} samples is too short for the CQT")
        y = downsample(y, factor=plan.early_downsample)
    responses = []
    for octave in plan.octaves:
        spectrum = centered_stft(y, n_fft=octave.n_fft, hop_length=octave.hop_length, window="ones")
        responses.append(octave.basis.dot(spectrum))
        if octave.halve_after:
            y = downsample(y, factor=2)
    # Stack octaves bottom-up, trimmed to the shortest (as librosa's __trim_stack).
    frames = min(r.shape[-1] for r in responses)
    out = np.empty((n_bins, frames), dtype=dtype)
    end = n_bins
    for response in responses:
        n_oct = response.shape[0]
        if end < n_oct:
            out[:end] = response[-end:, :frames]
        else:
            out[end - n_oct : end] = response[:, :frames]
        end -= n_oct
    out /= plan.sqrt_lengths
    return np.abs(out)


# librosa.estimate_tuning's defaults (through piptrack), which chroma_cqt uses.
_TUNING_N_FFT = 2048
_TUNING_FMIN, _TUNING_FMAX = 150.0, 4000.0  # Hz
_TUNING_THRESHOLD = 0.1  # of each frame's peak magnitude
_TUNING_RESOLUTION = 0.01  # of a bin


def estimate_tuning(y: np.ndarray, *, sr: float, bins_per_octave: int) -> float:
    """``librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=bins_per_octave)``, exactly.

    The same steps as librosa's ``piptrack`` and ``pitch_tuning`` on the same
    float values (its magnitude spectrogram is reproduced bit for bit), but the
    interpolation and peak picking run only on the bins between 150 and 4000 Hz
    (plus one neighbour on each side, which is all they look at) instead of all
    1025: half the time of librosa's, whose estimate was 40 % of a clip's transforms.
    """
    n_fft = _TUNING_N_FFT
    magnitude = np.abs(centered_stft(y, n_fft=n_fft, hop_length=n_fft // 4, window="hann", as_librosa=True))

    freqs = librosa.fft_frequencies(sr=sr, n_fft=n_fft)
    band = np.flatnonzero((_TUNING_FMIN <= freqs) & (freqs < min(_TUNING_FMAX, float(sr) / 2)))
    if band.size == 0:
        return 0.0  # librosa's answer (with a warning) when there is no peak
    first, stop = max(band[0] - 1, 0), min(band[-1] + 2, magnitude.shape[0])
    window = magnitude[first:stop]  # the band and its neighbours
    inside = np.zeros(window.shape[0], dtype=bool)
    inside[band - first] = True

    peak_floor = _TUNING_THRESHOLD * np.max(magnitude, axis=-2, keepdims=True)  # over all bins
    shift = _parabolic_shift(window)
    peaks = np.nonzero(inside[:, None] & librosa.util.localmax(window * (window > peak_floor), axis=-2))
    # Same dtypes as piptrack: its output arrays have the spectrogram's float type.
    pitch = ((peaks[0] + first + shift[peaks]) * float(sr) / n_fft).astype(window.dtype)
    dskew = 0.5 * np.gradient(window, axis=-2)[peaks] * shift[peaks]
    mag = window[peaks] + dskew
    voiced = pitch > 0
    threshold = np.median(mag[voiced]) if voiced.any() else 0.0
    return _pitch_tuning(pitch[(mag >= threshold) & voiced], bins_per_octave=bins_per_octave)


def _parabolic_shift(x: np.ndarray) -> np.ndarray:
    """piptrack's parabolic peak shift along axis 0, equal to librosa's numba stencil.

    The stencil computes in float64 (numba types ``2 * float32`` as float64) and
    stores into ``x``'s dtype; the edges are 0.
    """
    centre, above, below = x[1:-1], x[2:], x[:-2]
    a = (above + below).astype(np.float64) - 2 * centre.astype(np.float64)
    b = (above - below).astype(np.float64) / 2
    shift = np.zeros_like(x)
    with np.errstate(divide="ignore", invalid="ignore"):  # a == 0 only where |b| >= |a|
        shift[1:-1] = np.where(np.abs(b) >= np.abs(a), 0.0, -b / a)
    return shift


def _pitch_tuning(frequencies: np.ndarray, *, bins_per_octave: int) -> float:
    """``librosa.pitch_tuning(frequencies, resolution=0.01, bins_per_octave=...)``, its statements."""
    frequencies = frequencies[frequencies > 0]
    if not np.any(frequencies):
        return 0.0
    residual = np.mod(bins_per_octave * librosa.hz_to_octs(frequencies), 1.0)
    residual[residual >= 0.5] -= 1.0
    bins = np.linspace(-0.5, 0.5, int(np.ceil(1.0 / _TUNING_RESOLUTION)) + 1)
    counts, tuning = np.histogram(residual, bins)
    return float(tuning[np.argmax(counts)])


def downsample(y: np.ndarray, *, factor: int) -> np.ndarray:
    """``librosa.resample(y, orig_sr=factor, target_sr=1, res_type="soxr_hq", scale=True)``, exactly.

    The same soxr call, length fix and gain, without librosa's per-call checks
    and ``apply_along_axis`` (a tenth of the CQT's time, for 1-D input).
    """
    ratio = 1.0 / factor
    n_samples = int(np.ceil(y.shape[-1] * ratio))
    y_hat = soxr.resample(y, factor, 1, quality=_CQT_RES_TYPE)
    y_hat = librosa.util.fix_length(y_hat, size=n_samples)
    y_hat /= np.sqrt(ratio)
    return np.asarray(y_hat, dtype=y.dtype)


@dataclass(frozen=True)
class _CQTOctave:
    basis: Any  # scipy.sparse csr matrix [filters, n_fft // 2 + 1], read-only once built
    n_fft: int
    hop_length: int
    halve_after: bool


@dataclass(frozen=True)
class _CQTPlan:
    early_downsample: int
    octaves: tuple[_CQTOctave, ...]
    sqrt_lengths: np.ndarray  # [n_bins, 1]


def _cqt_frequencies(fmin: float, n_bins: int, bins_per_octave: int) -> np.ndarray:
    return librosa.interval_frequencies(
        n_bins=n_bins, fmin=fmin, intervals="equal", bins_per_octave=bins_per_octave, sort=True
    )


def _relative_bandwidth(freqs: np.ndarray) -> np.ndarray:
    # librosa.filters._relative_bandwidth (private): local octave resolution -> bandwidth.
    log_f = np.log2(freqs)
    bpo = np.empty_like(freqs)
    bpo[0] = 1 / (log_f[1] - log_f[0])
    bpo[-1] = 1 / (log_f[-1] - log_f[-2])
    bpo[1:-1] = 2 / (log_f[2:] - log_f[:-2])
    return (2.0 ** (2 / bpo) - 1) / (2.0 ** (2 / bpo) + 1)


def _two_factors(x: int) -> int:
    count = 0
    while x > 0 and x % 2 == 0:
        count, x = count + 1, x // 2
    return count


# ~50 kB a plan (defaults); 128 covers every estimated tuning (100 values) of one configuration.
@functools.lru_cache(maxsize=128)
def _cqt_plan(
    sr: float, hop_length: int, fmin_tuned: float, n_bins: int, bins_per_octave: int, dtype: str
) -> _CQTPlan:
    if n_bins < 2:
        raise ParameterError("the CQT needs at least 2 bins")
    n_octaves = int(np.ceil(n_bins / bins_per_octave))
    n_filters = min(bins_per_octave, n_bins)
    freqs = _cqt_frequencies(fmin_tuned, n_bins, bins_per_octave)
    alpha = _relative_bandwidth(freqs)
    _, cutoff = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=sr, window="hann", filter_scale=1, gamma=0, alpha=alpha
    )
    nyquist = sr / 2.0
    if cutoff > nyquist:
        raise ParameterError(
            f"CQT filters reach {cutoff:.0f} Hz, above the Nyquist frequency {nyquist:.0f} Hz"
        )

    # Early downsampling: as far as the top filter and the hop's factors of two allow.
    count = min(
        max(0, int(np.ceil(np.log2(nyquist / cutoff)) - 1) - 1),
        max(0, _two_factors(hop_length) - n_octaves + 1),
    )
    factor = 2**count
    sr_base, hop = sr / factor, hop_length // factor

    octaves = []
    my_sr = sr_base
    top = None  # (basis, n_fft) of the top octave, before the downsampling gain
    for i in range(n_octaves):  # top octave first
        sl = slice(-n_filters, None) if i == 0 else slice(-n_filters * (i + 1), -n_filters * i)
        gain = np.sqrt(sr_base / my_sr)  # compensates the downsampling of lower octaves
        if top is not None and len(freqs[sl]) == n_filters and my_sr == sr_base / 2**i:
            # A full octave at half the rate of the one above has the same filters in
            # normalised frequency: reuse the top octave's bank (equal to ~1e-7 relative,
            # float32 rounding), which makes a new tuning's bank 7 times cheaper.
            fft_basis, n_fft = top[0].copy(), top[1]
            fft_basis.data *= gain
        else:
            basis, lengths = librosa.filters.wavelet(
                freqs=freqs[sl],
                sr=my_sr,
                filter_scale=1,
                norm=1,
                pad_fft=True,
                window="hann",
                gamma=0,
                alpha=alpha[sl],
            )
            n_fft = basis.shape[1]
            basis *= lengths[:, np.newaxis] / float(n_fft)
            fft_basis = librosa.get_fftlib().fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
            fft_basis = librosa.util.sparsify_rows(
                fft_basis, quantile=_CQT_SPARSITY, dtype=np.dtype(dtype)
            )
            if i == 0:
                top = (fft_basis.copy(), n_fft)
            fft_basis.data *= gain
        halve = hop % 2 == 0
        octaves.append(_CQTOctave(fft_basis, n_fft, hop, halve))
        if halve:
            hop //= 2
            my_sr /= 2.0

    lengths, _ = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=sr_base, window="hann", filter_scale=1, gamma=0, alpha=alpha
    )
    return _CQTPlan(factor, tuple(octaves), np.sqrt(lengths)[:, np.newaxis])
