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

Level (decided here, recorded in :class:`FeatureConfig`): STFT and DWT values are
absolute dB (``ref=1.0``), not relative to the clip's own peak (``ref=np.max``).
A per-clip reference would make every clip peak at 0 dB, discarding its level:
a quiet and a loud recording of the same event would become identical inputs,
and an attacker's perturbation would be measured on a rescaled clip. With an
absolute reference, energies below ``amin`` (power, 1e-10 = -100 dB, librosa's
default) are clipped, and ``top_db`` floors each clip at ``max - top_db`` so a
near-silent tail does not stretch the dynamic range. Mapping to the model's
[0, 1] input range is done by the store's views, not here.

:func:`compute_features` computes the configured set for one clip, sharing the
chromagram between ``chroma`` and ``tonnetz``; :func:`feature_shapes` gives the
shapes without computing anything; :data:`REPRESENTATIONS` is the registry.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import librosa
import numpy as np
import pywt
import scipy.fft
import soxr

from advaudio.errors import ParameterError, check_known_fields

__all__ = [
    "FeatureConfig",
    "Representation",
    "REPRESENTATIONS",
    "stft",
    "dwt",
    "chroma",
    "tonnetz",
    "compute_features",
    "feature_shapes",
    "n_frames",
]

#: C1 in Hz (MIDI 24), librosa's default lowest CQT frequency.
C1_HZ = float(librosa.note_to_hz("C1"))

#: Number of tonal-centroid dimensions (fifths, minor thirds, major thirds; x and y each).
N_TONNETZ = 6
# Bumped whenever a transform changes its output: part of every store fingerprint.
TRANSFORM_VERSION = 2

_DEFAULT_REPRESENTATIONS = ("stft", "dwt", "chroma", "tonnetz")

# librosa's chroma_cqt settings that FeatureConfig does not expose; fixed here so
# the chromagram stays equal to librosa's defaults.
_CQT_RES_TYPE = "soxr_hq"
_CQT_SPARSITY = 0.01


# ---------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class FeatureConfig:
    """Configuration of the transforms of the featurize stage; every parameter is recorded.

    The store hashes :meth:`to_dict` into its fingerprint, so every field is a
    JSON-able scalar or a tuple of str, and numbers are normalised (``80`` and
    ``80.0`` give the same dict).

    Parameters
    ----------
    representations : tuple of str
        Names from :data:`REPRESENTATIONS`, in output order.
    sr : int
        Sample rate in Hz the waveforms are resampled to before featurization.
    n_fft : int
        STFT window length in samples (>= ``hop_length``).
    hop_length : int
        Samples between successive frames, shared by all representations.
    window : str
        STFT window name (``scipy.signal.get_window``).
    top_db : float or None
        STFT and DWT: floor at ``max - top_db`` dB per clip; None: no floor
        other than ``amin``.
    amin : float
        STFT and DWT: smallest power (squared magnitude, energy) before the log;
        1e-10 is -100 dB (librosa's ``amplitude_to_db`` default ``amin=1e-5``, squared).
    wavelet : str
        Discrete wavelet name (``pywt.wavelist(kind="discrete")``). An orthogonal
        one (db, sym, coif, haar) makes band energies sum to the signal energy.
    dwt_level : int
        Wavelet-packet depth: ``2 ** dwt_level`` bands of ``sr / 2 ** (dwt_level + 1)`` Hz.
        ``hop_length`` must be at least ``2 ** dwt_level`` (one coefficient per band and frame).
    dwt_mode : str
        PyWavelets signal extension mode; only ``"periodization"`` keeps exactly one
        coefficient per ``2 ** dwt_level`` samples, which the framing relies on.
    n_chroma : int
        Chroma bins per octave.
    bins_per_octave : int
        CQT bins per octave, a multiple of ``n_chroma``.
    n_octaves : int
        CQT octaves above ``fmin``; the top one must stay below Nyquist.
    fmin : float
        Lowest CQT frequency in Hz (default C1 ~= 32.70 Hz).
    tuning : float or None
        CQT tuning deviation from A440 in fractions of a bin; None estimates it
        per clip (librosa's default).
    """

    representations: tuple[str, ...] = _DEFAULT_REPRESENTATIONS
    sr: int = 22050
    n_fft: int = 1024
    hop_length: int = 512
    window: str = "hann"
    top_db: float | None = 80.0
    amin: float = 1e-10
    wavelet: str = "db4"
    dwt_level: int = 7
    dwt_mode: str = "periodization"
    n_chroma: int = 12
    bins_per_octave: int = 36
    n_octaves: int = 7
    fmin: float = C1_HZ
    tuning: float | None = None

    def __post_init__(self) -> None:
        reps = self.representations
        if isinstance(reps, str) or not isinstance(reps, (tuple, list)):
            raise ParameterError(f"representations must be a sequence of names, got {reps!r}")
        reps = tuple(reps)
        if not reps:
            raise ParameterError(
                "representations is empty; choose from " + ", ".join(REPRESENTATIONS)
            )
        for name in reps:
            if name not in REPRESENTATIONS:
                raise ParameterError(
                    f"unknown representation {name!r}; choose from " + ", ".join(REPRESENTATIONS)
                )
        if len(set(reps)) != len(reps):
            raise ParameterError(f"representations has duplicates: {reps}")
        # Frozen: normalise through object.__setattr__ so the dict (and hash) is canonical.
        set_ = functools.partial(object.__setattr__, self)
        set_("representations", reps)
        for name in (
            "sr",
            "n_fft",
            "hop_length",
            "dwt_level",
            "n_chroma",
            "bins_per_octave",
            "n_octaves",
        ):
            set_(name, _positive_int(name, getattr(self, name)))
        for name in ("amin", "fmin"):
            set_(name, _positive_float(name, getattr(self, name)))
        if self.top_db is not None:
            set_("top_db", _positive_float("top_db", self.top_db))
        if self.tuning is not None:
            set_("tuning", _finite_float("tuning", self.tuning))
        for name in ("window", "wavelet", "dwt_mode"):
            if not isinstance(getattr(self, name), str):
                raise ParameterError(f"{name} must be a str, got {getattr(self, name)!r}")

        if self.n_fft < self.hop_length:
            raise ParameterError(
                f"n_fft={self.n_fft} is shorter than hop_length={self.hop_length}: "
                "frames would skip samples"
            )
        _check_window(self.window, self.n_fft)
        _check_wavelet(self.wavelet, self.dwt_mode)
        if "dwt" in reps:
            _check_dwt_hop(self.hop_length, self.dwt_level)
        if self.bins_per_octave % self.n_chroma:
            raise ParameterError(
                f"bins_per_octave={self.bins_per_octave} must be a multiple of "
                f"n_chroma={self.n_chroma}"
            )
        if "chroma" in reps or "tonnetz" in reps:
            _check_cqt_range(
                sr=self.sr,
                fmin=self.fmin,
                tuning=self.tuning,
                n_bins=self.n_octaves * self.bins_per_octave,
                bins_per_octave=self.bins_per_octave,
            )

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-able dict (tuples stay tuples; ``json`` writes lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FeatureConfig":
        """Rebuild a configuration from :meth:`to_dict` output, also after a JSON round trip.

        Missing keys take their defaults; unknown keys raise :class:`ParameterError`.
        """
        check_known_fields(cls, d, "feature configuration keys")
        return cls(**d)  # __post_init__ turns JSON lists back into tuples


def _positive_int(name: str, value: Any) -> int:
    # bool is an int subclass; True as a hop length is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ParameterError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    return float(value)


def _positive_float(name: str, value: Any) -> float:
    value = _finite_float(name, value)
    if value <= 0:
        raise ParameterError(f"{name} must be positive, got {value!r}")
    return value


def _check_window(window: str, n_fft: int) -> None:
    try:
        librosa.filters.get_window(window, n_fft)
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"unknown STFT window {window!r}: {exc}") from None


def _check_wavelet(wavelet: str, mode: str) -> None:
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ParameterError(
            f"unknown discrete wavelet {wavelet!r}; see pywt.wavelist(kind='discrete')"
        )
    if mode != "periodization":
        raise ParameterError(
            f"dwt_mode={mode!r} is not supported: only 'periodization' gives one coefficient "
            "per 2**level samples, which the framing needs"
        )


def _check_dwt_hop(hop_length: int, level: int) -> None:
    if hop_length < 2**level:
        raise ParameterError(
            f"hop_length={hop_length} is shorter than 2**dwt_level={2**level} samples: "
            "a frame would hold no wavelet coefficient"
        )


def _check_cqt_range(
    *, sr: float, fmin: float, tuning: float | None, n_bins: int, bins_per_octave: int
) -> None:
    # Worst case of an estimated tuning is +0.5 bin (estimate_tuning's range is [-0.5, 0.5)).
    worst_tuning = 0.5 if tuning is None else max(tuning, 0.0)
    freqs = _cqt_frequencies(
        fmin * 2.0 ** (worst_tuning / bins_per_octave), n_bins, bins_per_octave
    )
    _, cutoff = librosa.filters.wavelet_lengths(
        freqs=freqs, sr=sr, gamma=0, alpha=_relative_bandwidth(freqs)
    )
    if cutoff > sr / 2:
        raise ParameterError(
            f"CQT of {n_bins // bins_per_octave} octaves above fmin={fmin:.2f} Hz reaches "
            f"{cutoff:.0f} Hz, above the Nyquist frequency {sr / 2:.0f} Hz; lower n_octaves or fmin"
        )


# ---------------------------------------------------------------------------
# shared helpers


def n_frames(n_samples: int, hop_length: int) -> int:
    """Number of centered frames of every representation for ``n_samples`` samples."""
    return 1 + n_samples // hop_length


def _check_waveform(y: Any) -> np.ndarray:
    """Return ``y`` as an ndarray or raise ParameterError naming what is wrong."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ParameterError(f"waveform must be mono 1-D, got shape {y.shape}")
    if y.size == 0:
        raise ParameterError("waveform is empty")
    if not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(f"waveform must be floating point, got dtype {y.dtype}")
    if not np.isfinite(y).all():
        raise ParameterError("waveform contains NaN or infinite samples")
    return y


def _to_db(power: np.ndarray, *, top_db: float | None, amin: float) -> np.ndarray:
    """``librosa.power_to_db(power, ref=1.0, amin=amin, top_db=top_db)`` as float32, exactly.

    Absolute reference (ref=1.0): see the module docstring for why not ref=np.max.
    Written out (librosa's own statements) because importing ``librosa.core.spectrum``
    costs every worker process ~1 s; see ``_LEAN_LIBROSA``.
    """
    log_spec = 10.0 * np.log10(np.maximum(amin, power))
    log_spec -= 10.0 * np.log10(np.maximum(amin, 1.0))
    if top_db is not None:
        log_spec = np.maximum(log_spec, log_spec.max() - top_db)
    return log_spec.astype(np.float32)


# ---------------------------------------------------------------------------
# stft


def stft(
    y: np.ndarray,
    *,
    sr: int = 22050,
    n_fft: int = 1024,
    hop_length: int = 512,
    window: str = "hann",
    top_db: float | None = 80.0,
    amin: float = 1e-10,
) -> np.ndarray:
    """Log-magnitude STFT spectrogram in dB re 1.0.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono waveform.
    sr : int
        Sample rate in Hz. The transform does not depend on it; it is accepted so
        that all representations take the same parameters.
    n_fft : int
        Window length in samples; bin ``k`` is at ``k * sr / n_fft`` Hz.
    hop_length : int
        Samples between frames; frames are centered (zero-padded ends).
    window : str
        Window name.
    top_db : float or None
        Floor at ``max - top_db`` dB; None: no relative floor.
    amin : float
        Smallest power before the log (1e-10 = -100 dB).

    Returns
    -------
    np.ndarray [shape=(1 + n_fft // 2, 1 + n // hop_length), dtype=float32]
        ``10 * log10(max(|X|**2, amin))``, floored at ``max - top_db``.
    """
    y = _check_waveform(y)
    spectrum = _centered_stft(y, n_fft=n_fft, hop_length=hop_length, window=window)
    return _to_db(spectrum.real**2 + spectrum.imag**2, top_db=top_db, amin=amin)


@functools.lru_cache(maxsize=16)
def _periodic_window(window: str, n_fft: int, dtype: str) -> np.ndarray | None:
    if window == "ones":
        return None
    w = librosa.filters.get_window(window, n_fft, fftbins=True).astype(np.dtype(dtype))
    w.flags.writeable = False
    return w


def _centered_stft(y: np.ndarray, *, n_fft: int, hop_length: int, window: str,
                   as_librosa: bool = False) -> np.ndarray:
    """``librosa.stft(y, center=True, pad_mode="constant")``, ``[1 + n_fft // 2, frames]``.

    The same frames, window and real FFT, computed on a strided view of the
    padded signal with the FFT along contiguous rows: about three times faster
    than librosa, which matters because a clip's CQT takes one STFT per octave.

    librosa windows and transforms in float64 and then casts to the complex
    type of ``y``; ``as_librosa=True`` does the same and equals it bit for bit.
    By default the transform is in the precision of ``y``: for float32 that is
    twice as fast and changes each bin by float32 rounding of the frame's energy
    (~1e-7 of the frame's peak magnitude; near-silent bins differ by a few 1e-4 dB).
    """
    padded = np.pad(y, n_fft // 2, mode="constant")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    w = _periodic_window(window, n_fft, "<f8" if as_librosa else y.dtype.str)
    if w is not None:
        frames = frames * w
    elif as_librosa:
        frames = frames.astype(np.float64)
    spectrum = scipy.fft.rfft(frames, axis=-1).T
    return spectrum.astype(librosa.util.dtype_r2c(y.dtype), copy=False) if as_librosa else spectrum


# ---------------------------------------------------------------------------
# dwt


def dwt(
    y: np.ndarray,
    *,
    wavelet: str = "db4",
    level: int = 7,
    mode: str = "periodization",
    hop_length: int = 512,
    power: bool = False,
    top_db: float | None = 80.0,
    amin: float = 1e-10,
) -> np.ndarray:
    """Wavelet-packet band energies framed on the STFT hop.

    The wavelet-packet tree (``pywt.WaveletPacket``) is taken at depth ``level``
    in frequency order, so band ``b`` covers about ``[b, b + 1) * sr / 2 ** (level + 1)`` Hz.
    Each band has one coefficient per ``2 ** level`` samples, so an STFT hop spans
    ``hop_length / 2 ** level`` coefficients.

    Framing, so that frame ``t`` covers the hop centered on sample ``t * hop_length``
    like the centered STFT frame ``t``, and every coefficient counts exactly once:

    * the waveform is zero-padded with ``hop_length // 2`` samples in front (frame
      ``t`` then starts at padded sample ``t * hop_length``) and with zeros at the
      end up to ``1 + n // hop_length`` whole hops, rounded up to a multiple of
      ``2 ** level`` (periodization halves the length at each level);
    * frame ``t`` sums the squared coefficients from ``t * hop_length // 2 ** level``
      up to (excluding) ``(t + 1) * hop_length // 2 ** level``; the last frame also
      takes the tail beyond its hop (at most half a hop of signal, plus padding), so
      nothing is dropped. When ``hop_length`` is not a
      multiple of ``2 ** level``, frames hold ``floor`` or ``ceil`` of
      ``hop_length / 2 ** level`` coefficients.

    Zero padding adds no energy and periodization with an orthogonal wavelet is an
    orthogonal transform, so in ``power`` mode the output sums to ``sum(y ** 2)``
    for any length.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
        Mono waveform.
    wavelet : str
        Discrete wavelet name.
    level : int
        Decomposition depth; ``2 ** level`` bands.
    mode : str
        Signal extension mode; only ``"periodization"``.
    hop_length : int
        Samples per frame (>= ``2 ** level``), the same hop as the STFT.
    power : bool
        True: raw energies (sum of squared coefficients, in squared waveform
        units); False: dB re 1.0 as in :func:`stft`.
    top_db, amin : float
        Log floor (``power=False`` only), as in :func:`stft`.

    Returns
    -------
    np.ndarray [shape=(2 ** level, 1 + n // hop_length), dtype=float32]
    """
    y = _check_waveform(y)
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 1:
        raise ParameterError(f"level must be a positive integer, got {level!r}")
    if (
        isinstance(hop_length, bool)
        or not isinstance(hop_length, (int, np.integer))
        or hop_length < 1
    ):
        raise ParameterError(f"hop_length must be a positive integer, got {hop_length!r}")
    _check_wavelet(wavelet, mode)
    _check_dwt_hop(hop_length, level)

    samples_per_coeff = 2**level
    frames = n_frames(y.size, hop_length)
    front = hop_length // 2
    length = max(front + y.size, frames * hop_length)
    length = -(-length // samples_per_coeff) * samples_per_coeff
    # The waveform's precision (float32 in the pipeline: half the time of float64,
    # coefficients equal to ~3e-7); squares and sums are float64 below.
    padded = np.zeros(length, dtype=np.result_type(y.dtype, np.float32))
    padded[front : front + y.size] = y

    bands = _wavelet_packet_bands(padded, wavelet=wavelet, mode=mode, level=level)
    # First coefficient of each frame; strictly increasing because hop >= 2**level.
    starts = (np.arange(frames) * hop_length) // samples_per_coeff
    energy = np.add.reduceat(np.square(bands, dtype=np.float64), starts, axis=1)  # last slice: the tail
    if power:
        return energy.astype(np.float32)
    return _to_db(energy, top_db=top_db, amin=amin)


def _wavelet_packet_bands(x: np.ndarray, *, wavelet: str, mode: str, level: int) -> np.ndarray:
    """``[2 ** level, n / 2 ** level]`` leaves of the full wavelet-packet tree, in frequency order.

    The coefficients of ``pywt.WaveletPacket(x, ...).get_level(level, order="freq")``,
    computed one level at a time on all nodes at once (``pywt.dwt`` along the
    last axis of a 2-D array) instead of through 2 ** (level + 1) - 1 Python node
    objects, which cost five times more here.
    """
    nodes = x[np.newaxis, :]
    for _ in range(level):
        approx, detail = pywt.dwt(nodes, wavelet, mode=mode, axis=-1)
        # Natural order: the children of node i are 2i (approximation) and 2i + 1 (detail).
        nodes = np.stack([approx, detail], axis=1).reshape(-1, approx.shape[-1])
    # A detail filter mirrors its band, so frequency position k holds natural node gray(k).
    position = np.arange(2**level)
    return nodes[position ^ (position >> 1)]


# ---------------------------------------------------------------------------
# chroma (constant-Q) and tonnetz


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
) -> np.ndarray:
    """Constant-Q chromagram: ``librosa.feature.chroma_cqt`` with the same arguments, faster.

    Each frame is normalised to a maximum of 1 (librosa's ``norm=np.inf``).

    Three things make it about three times faster than librosa (measured on
    ESC-10 clips), none of which changes the algorithm:

    * the CQT's filter bank depends only on the parameters and the tuning, yet
      librosa rebuilds it on every call; here it is built once per (parameters,
      tuning) and kept (the estimated tuning takes one of 100 values), and the
      lower octaves reuse the top octave's filters, which are the same in
      normalised frequency;
    * the tuning estimate is librosa's, exactly (see ``_estimate_tuning``), but
      looks only at the bins it keeps;
    * each octave's STFT is taken in float32 where librosa uses float64.

    The last one is the only numerical difference: the chromagram equals
    librosa's to ~1e-6 wherever a frame is within 60 dB of the clip's loudest
    frame; frames of near digital silence, whose normalisation magnifies
    float32 rounding, differ by up to ~1e-3 (tested on real ESC-10 clips).

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

    Returns
    -------
    np.ndarray [shape=(n_chroma, 1 + n // hop_length), dtype=float32]
    """
    y = _check_waveform(y)
    if bins_per_octave % n_chroma:
        raise ParameterError(
            f"bins_per_octave={bins_per_octave} must be a multiple of n_chroma={n_chroma}"
        )
    try:
        with warnings.catch_warnings():
            # librosa warns when the lowest, most downsampled octaves of a short
            # clip are shorter than their filters; the result is still defined.
            warnings.filterwarnings("ignore", message=r"n_fft=\d+ is too large", category=UserWarning)
            if not _LEAN_LIBROSA:
                result = librosa.feature.chroma_cqt(
                    y=y, sr=sr, hop_length=hop_length, fmin=fmin, n_chroma=n_chroma,
                    n_octaves=n_octaves, bins_per_octave=bins_per_octave, tuning=tuning,
                )
                return result.astype(np.float32)
            magnitude = _cqt_magnitude(
                y,
                sr=sr,
                hop_length=hop_length,
                fmin=fmin,
                n_bins=n_octaves * bins_per_octave,
                bins_per_octave=bins_per_octave,
                tuning=tuning,
            )
    except librosa.util.exceptions.ParameterError as exc:  # e.g. a clip too short for the CQT
        raise ParameterError(f"chroma: {exc}") from None
    # librosa.feature.chroma_cqt(C=magnitude, ...) with its defaults (threshold 0, norm inf).
    to_chroma = _cq_to_chroma(magnitude.shape[-2], bins_per_octave, n_chroma, float(fmin))
    result = np.einsum("cf,...ft->...ct", to_chroma, magnitude, optimize=True)
    result[result < 0.0] = 0.0
    return librosa.util.normalize(result, norm=np.inf, axis=-2).astype(np.float32)


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


def tonnetz(*, chroma: np.ndarray) -> np.ndarray:
    """Tonal centroid features (Harte et al. 2006) of an already computed chromagram.

    Equal to ``librosa.feature.tonnetz(chroma=chroma)``; taking the chromagram
    instead of the waveform means the CQT is never computed twice.

    Parameters
    ----------
    chroma : np.ndarray [shape=(n_chroma, frames)]
        Chromagram, e.g. from :func:`chroma`.

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
    if not _LEAN_LIBROSA:
        return librosa.feature.tonnetz(chroma=chroma).astype(np.float32)
    tonal = np.einsum("pc,...ci->...pi", _tonnetz_basis(chroma.shape[-2]),
                      librosa.util.normalize(chroma, norm=1, axis=-2), optimize=True)
    return tonal.astype(np.float32)


# The chromagram below is librosa 0.11's ``chroma_cqt`` on its ``vqt``
# (equal-tempered bins, filter_scale=1, norm=1, sparsity=0.01, hann, constant
# padding, soxr_hq, scale=True) and ``estimate_tuning``, written with
# ``librosa.filters`` and ``librosa.util``, the filter bank cached and float32
# octave STFTs. Only those two modules: ``librosa.feature``, ``librosa.core.pitch``
# and ``librosa.core.spectrum`` pull in numba-compiled code that takes every new
# worker process ~1.1 s to load (measured), a fifth of a 400-clip run on two
# workers. The tests check every step against librosa's own functions; on other
# librosa versions those are used instead.
_LEAN_LIBROSA = tuple(int(p) for p in librosa.__version__.split(".")[:2]) == (0, 11)


def _cqt_magnitude(
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
        tuning = _estimate_tuning(y, sr=sr, bins_per_octave=bins_per_octave)
    if not _LEAN_LIBROSA:
        return np.abs(
            librosa.cqt(
                y,
                sr=sr,
                hop_length=hop_length,
                fmin=fmin,
                n_bins=n_bins,
                bins_per_octave=bins_per_octave,
                tuning=tuning,
            )
        )
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
        y = _downsample(y, factor=plan.early_downsample)
    responses = []
    for octave in plan.octaves:
        spectrum = _centered_stft(y, n_fft=octave.n_fft, hop_length=octave.hop_length, window="ones")
        responses.append(octave.basis.dot(spectrum))
        if octave.halve_after:
            y = _downsample(y, factor=2)
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


def _estimate_tuning(y: np.ndarray, *, sr: float, bins_per_octave: int) -> float:
    """``librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=bins_per_octave)``, exactly.

    The same steps as librosa's ``piptrack`` and ``pitch_tuning`` on the same
    float values (its magnitude spectrogram is reproduced bit for bit), but the
    interpolation and peak picking run only on the bins between 150 and 4000 Hz
    (plus one neighbour on each side, which is all they look at) instead of all
    1025: half the time of librosa's, whose estimate was 40 % of a clip's transforms.
    """
    if not _LEAN_LIBROSA:  # the steps below are librosa 0.11's
        return float(librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=bins_per_octave))
    n_fft = _TUNING_N_FFT
    magnitude = np.abs(_centered_stft(y, n_fft=n_fft, hop_length=n_fft // 4, window="hann", as_librosa=True))

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


def _downsample(y: np.ndarray, *, factor: int) -> np.ndarray:
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


# ---------------------------------------------------------------------------
# registry and per-clip entry points


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
        )
    return shared["chroma"]


#: Registry name -> :class:`Representation`; adding one is a function and an entry here.
REPRESENTATIONS: dict[str, Representation] = {
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
        lambda y, c, shared: tonnetz(chroma=_shared_chroma(y, c, shared)),
        lambda c: N_TONNETZ,
    ),
}


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
    y = _check_waveform(y).astype(np.float32, copy=False)
    shared: dict[str, np.ndarray] = {}
    expected = feature_shapes(config, y.size)
    out = {}
    for name in config.representations:
        array = np.ascontiguousarray(
            REPRESENTATIONS[name].compute(y, config, shared), dtype=np.float32
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
    n_samples = _positive_int("n_samples", n_samples)
    frames = n_frames(n_samples, config.hop_length)
    return {
        name: (REPRESENTATIONS[name].n_bands(config), frames) for name in config.representations
    }
