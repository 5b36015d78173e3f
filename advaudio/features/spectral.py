"""The spectral representations: log-magnitude STFT and wavelet-packet band energies.

Both are in absolute dB (``ref=1.0``), not relative to the clip's own peak
(``ref=np.max``). A per-clip reference would make every clip peak at 0 dB,
discarding its level: a quiet and a loud recording of the same event would
become identical inputs, and an attacker's perturbation would be measured on a
rescaled clip. With an absolute reference, energies below ``amin`` (power,
1e-10 = -100 dB, librosa's default) are clipped, and ``top_db`` floors each
clip at ``max - top_db`` so a near-silent tail does not stretch the dynamic
range. Mapping to the model's [0, 1] input range is done by the store's views.

Also the helpers every representation shares: :func:`n_frames`,
:func:`check_waveform` and :func:`centered_stft` (the CQT takes one per octave).
"""

from __future__ import annotations

import functools
from typing import Any

import librosa
import numpy as np
import pywt
import scipy.fft

from advaudio.errors import ParameterError
from advaudio.validation import integer

__all__ = ["stft", "dwt", "n_frames", "check_waveform", "centered_stft"]


def check_window(window: str, n_fft: int) -> None:
    try:
        librosa.filters.get_window(window, n_fft)
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"unknown STFT window {window!r}: {exc}") from None


def check_wavelet(wavelet: str, mode: str) -> None:
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ParameterError(
            f"unknown discrete wavelet {wavelet!r}; see pywt.wavelist(kind='discrete')"
        )
    if mode != "periodization":
        raise ParameterError(
            f"dwt_mode={mode!r} is not supported: only 'periodization' gives one coefficient "
            "per 2**level samples, which the framing needs"
        )


def check_dwt_hop(hop_length: int, level: int) -> None:
    if hop_length < 2**level:
        raise ParameterError(
            f"hop_length={hop_length} is shorter than 2**dwt_level={2**level} samples: "
            "a frame would hold no wavelet coefficient"
        )



def n_frames(n_samples: int, hop_length: int) -> int:
    """Number of centered frames of every representation for ``n_samples`` samples."""
    return 1 + n_samples // hop_length


def check_waveform(y: Any) -> np.ndarray:
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


def power_to_db(power: np.ndarray, *, top_db: float | None, amin: float) -> np.ndarray:
    """``librosa.power_to_db(power, ref=1.0, amin=amin, top_db=top_db)`` as float32, exactly.

    Absolute reference (ref=1.0): see the module docstring for why not ref=np.max.
    Written out (librosa's own statements) so that featurizing does not import
    ``librosa.core.spectrum`` and the numba-compiled code it loads.
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
    y = check_waveform(y)
    spectrum = centered_stft(y, n_fft=n_fft, hop_length=hop_length, window=window)
    return power_to_db(spectrum.real**2 + spectrum.imag**2, top_db=top_db, amin=amin)


@functools.lru_cache(maxsize=16)
def _periodic_window(window: str, n_fft: int, dtype: str) -> np.ndarray | None:
    if window == "ones":
        return None
    w = librosa.filters.get_window(window, n_fft, fftbins=True).astype(np.dtype(dtype))
    w.flags.writeable = False
    return w


def centered_stft(y: np.ndarray, *, n_fft: int, hop_length: int, window: str,
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
    y = check_waveform(y)
    level = integer("level", level)
    hop_length = integer("hop_length", hop_length)
    check_wavelet(wavelet, mode)
    check_dwt_hop(hop_length, level)

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
    return power_to_db(energy, top_db=top_db, amin=amin)


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
