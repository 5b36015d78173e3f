"""Differentiable twins of the store's transforms: the same numbers, computed in torch.

Each transform here takes a waveform batch ``(B, n)`` (a torch tensor on any
device, float32 or float64) and returns ``(B, bands, 1 + n // hop_length)``,
the array :mod:`advaudio.features` stores for the same waveform and parameters:

=========  =====================================  ======================================
name       module                                 what it reproduces
=========  =====================================  ======================================
stft       :class:`STFT`                          :func:`~advaudio.features.stft`
dwt        :class:`WaveletPacketEnergy`           :func:`~advaudio.features.dwt`
chroma     :class:`ChromaCQT`                     :func:`~advaudio.features.chroma`
tonnetz    :func:`tonnetz`                        :func:`~advaudio.features.tonnetz`
=========  =====================================  ======================================

:mod:`advaudio.frontend` composes them with a view into the model input.

How each one is made, and why not a library
-------------------------------------------
Measured with ``benchmarks/bench_frontend.py --libraries`` on 16 ESC-10 clips
(max |Δ| against the store's values in the representation's own units):

* ``stft``: ``torch.stft`` (centered, constant padding, the store's periodic
  window), ``10 log10(max(|X|^2, amin))`` and the per-clip ``top_db`` floor.
* ``dwt``: the store's periodization packet tree as one strided ``conv1d`` of
  the padded waveform with the tree's composite leaf filters (built in closed
  form from the wavelet's filters, see :func:`_composite_packet_filters`),
  equal to ``pywt`` to 1e-14 in float64 for every wavelet and length tested;
  8e-4 dB from the stored (float32) values. ptwt 1.0.1 was measured and not
  kept: it has no periodization mode. Its ``periodic``, ``zero`` and ``reflect``
  modes pad, giving 870 coefficients a band instead of 864, so the bands no
  longer line up with the frames (59-66 dB off); its ``boundary`` mode has the
  right length and is 2.6e-4 dB off on an ESC-10 clip (quiet at its ends, after
  256 zeros of padding), but its boundary filters are not periodization's (on
  noise reaching both ends, the 3 first and last coefficients of every band
  differ by up to 1.5 times the largest coefficient), and building its sparse
  matrices took 53 s per clip.
* ``chroma``: a port of the CQT path the store runs
  (:mod:`advaudio.features._librosa_cqt`, librosa 0.11's ``vqt``): the store's own
  filter banks (its ``_cqt_plan`` for the clip's tuning) applied to each
  octave's centered rectangular frames, as real time-domain filters (one
  matrix product an octave), octaves stacked and trimmed as librosa does,
  divided by the filters' ``sqrt`` lengths, folded to chroma and normalised per
  frame. The octave downsampling is the store's ``soxr`` HQ resampler: a
  linear filter, shift-invariant by the factor, whose taps (and, for factors of
  4 and more, a fixed correction of the first outputs) are read off soxr once
  (:func:`_soxr_filter`) and applied by FFT; equal to soxr to ~1e-6 of the
  signal's scale, its own float32 rounding. 1.2e-3 from the stored (floored)
  chroma in float32. nnAudio 0.3.4's ``CQT1992v2`` and ``CQT2010v2`` were measured
  and not kept: with the store's parameters and tuning, folded and floored the
  same way, they are 0.95 off (median clip 0.03): other kernels (their own
  bandwidths and normalisation, no sparsification) and another resampler; and
  0.5 s per clip on a CPU.
* ``tonnetz``: the store's basis on the L1-normalised chromagram.

Cost, same run (one thread, 16 clips a batch, 5 s clips, forward only; the
ratio is front end / librosa's forward transform): ``stft`` ×0.68, ``dwt`` ×0.68
(PyWavelets), ``chroma`` ×0.11 (``chroma_cqt`` given the tuning), ``tonnetz`` ×0.10;
×0.8-1.2 advaudio's own numpy transforms. Forward + backward to the waveform:
×3.2 (stft), ×1.9 (dwt), ×0.27 (chroma) librosa's forward.

Data-dependent steps, and what their gradients are
--------------------------------------------------
* The CQT's **tuning** is estimated from the clip (a histogram of peak
  frequencies: a piecewise-constant function of the waveform, zero gradient
  a.e.). :class:`ChromaCQT` takes it as an argument instead: the estimate of the
  clean clip (:meth:`ChromaCQT.estimate_tuning`, exactly the store's), frozen
  while the attack perturbs the waveform. A perturbation large enough to move
  the store's estimate to another 0.01-bin value would make the store compute
  a (slightly) different chromagram than the frozen one.
* ``max(power, amin)`` and the ``top_db`` floor (``max(x, max(x) - top_db)``)
  are clamps: differentiable almost everywhere, zero gradient where clamped,
  the floor's gradient flowing to the clip's loudest value.
* The chromagram's per-frame normalisation (by its maximum, or with
  ``floor_db`` by ``max(frame maximum, floor)``) and the tonnetz's L1
  normalisation are differentiable almost everywhere (a frame whose maximum is
  below the float's smallest normal number is left as it is, as librosa does).
  Without a floor, a frame of near digital silence is rounding noise divided
  by its own tiny maximum: its values depend on the arithmetic (float32 and
  float64 differ by up to 0.96 on ESC-10) and its gradient is enormous; see
  :class:`~advaudio.features.FeatureConfig`'s ``chroma_floor_db``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import librosa
import numpy as np
import pywt
import torch
import torch.nn.functional as F
from torch import nn

from advaudio.errors import ParameterError
from advaudio.features import _librosa_cqt
from advaudio.features.spectral import _periodic_window, check_dwt_hop, check_wavelet, n_frames
from advaudio.features.tonal import C1_HZ
from advaudio.validation import integer

__all__ = ["STFT", "WaveletPacketEnergy", "ChromaCQT", "Downsample", "tonnetz", "power_to_db"]


def _check_batch(y: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor):
        raise ParameterError(f"waveforms must be a torch tensor (B, samples), got {type(y).__name__}")
    if y.ndim != 2 or y.shape[-1] == 0:
        raise ParameterError(f"waveforms must be a (B, samples) batch, got shape {tuple(y.shape)}")
    if not y.is_floating_point():
        raise ParameterError(f"waveforms must be floating point, got {y.dtype}")
    return y


class _Constants:
    """numpy constants handed out as tensors of the input's device and dtype, converted once each.

    The front ends keep their filters as float64 numpy arrays and follow their
    input (CPU or CUDA, float32 or float64, e.g. for ``gradcheck``) instead of
    holding buffers that would have to be moved and cast with the module.
    """

    def __init__(self):
        self._cache: dict[tuple, torch.Tensor] = {}

    def get(self, key, array, like: torch.Tensor, *, complex_: bool = False) -> torch.Tensor:
        """``array`` (or what the callable ``array`` returns, called once) on ``like``'s device, in its
        dtype or (``complex_``) the complex dtype of that precision."""
        dtype = like.dtype if not complex_ else (torch.complex128 if like.dtype == torch.float64
                                                 else torch.complex64)
        k = (key, like.device, dtype)
        t = self._cache.get(k)
        if t is None:
            value = array() if callable(array) else array
            t = torch.as_tensor(np.asarray(value)).to(device=like.device, dtype=dtype)
            self._cache[k] = t
        return t


def power_to_db(power: torch.Tensor, *, top_db: float | None, amin: float) -> torch.Tensor:
    """:func:`advaudio.features.spectral.power_to_db` on ``(B, bands, frames)``: dB re 1.0, floor per clip."""
    db = 10.0 * torch.log10(torch.clamp(power, min=amin))
    db = db - 10.0 * math.log10(max(amin, 1.0))
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)
        db = torch.maximum(db, peak - top_db)
    return db


# ---------------------------------------------------------------------------
# stft


class STFT(nn.Module):
    """Log-magnitude STFT in dB re 1.0: :func:`advaudio.features.stft` in torch.

    Parameters
    ----------
    n_fft : int
        Window length in samples.
    hop_length : int
        Samples between centered frames.
    window : str
        Window name (periodic, as the store's).
    top_db : float or None
        Floor at ``max - top_db`` dB per clip; None: no relative floor.
    amin : float
        Smallest power before the log.
    """

    def __init__(self, *, n_fft: int = 1024, hop_length: int = 512, window: str = "hann",
                 top_db: float | None = 80.0, amin: float = 1e-10):
        super().__init__()
        self.n_fft, self.hop_length = integer("n_fft", n_fft), integer("hop_length", hop_length)
        self.top_db, self.amin = top_db, float(amin)
        w = _periodic_window(window, self.n_fft, "<f8")
        self._window = None if w is None else np.array(w)
        self._constants = _Constants()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        y = _check_batch(y)
        window = None if self._window is None else self._constants.get("window", self._window, y)
        spectrum = torch.stft(y, self.n_fft, hop_length=self.hop_length, window=window, center=True,
                              pad_mode="constant", return_complex=True)
        power = spectrum.real.square() + spectrum.imag.square()
        return power_to_db(power, top_db=self.top_db, amin=self.amin)


# ---------------------------------------------------------------------------
# dwt


class WaveletPacketEnergy(nn.Module):
    """Framed wavelet-packet log-energies: :func:`advaudio.features.dwt` in torch.

    The same zero padding, frequency-ordered periodization packet tree and
    framing. The tree is computed as one strided convolution: every leaf of a
    periodization packet tree is a circular convolution of the (padded)
    waveform with a composite filter, read every ``2 ** level`` samples, so
    the ``2 ** level`` composite filters (``(L - 1)(2 ** level - 1) + 1`` taps,
    890 for db4 at level 7) are read off the level-by-level transform once
    and the leaves come out of a single ``conv1d``: three times faster on a
    CPU than seven levels of small convolutions, and one large kernel on a GPU.

    Parameters
    ----------
    wavelet : str
        Discrete wavelet name.
    level : int
        Decomposition depth; ``2 ** level`` bands.
    mode : str
        Only ``"periodization"``.
    hop_length : int
        Samples per frame (>= ``2 ** level``).
    power : bool
        True: raw energies; False: dB re 1.0.
    top_db, amin : float
        Log floor, as :class:`STFT`.
    """

    def __init__(self, *, wavelet: str = "db4", level: int = 7, mode: str = "periodization",
                 hop_length: int = 512, power: bool = False, top_db: float | None = 80.0,
                 amin: float = 1e-10):
        super().__init__()
        self.level, self.hop_length = integer("level", level), integer("hop_length", hop_length)
        check_wavelet(wavelet, mode)
        check_dwt_hop(self.hop_length, self.level)
        self.power, self.top_db, self.amin = bool(power), top_db, float(amin)
        self._filters, self._origin = _composite_packet_filters(wavelet, self.level)
        self._constants = _Constants()
        self._framing: dict[int, tuple[int, int, np.ndarray]] = {}

    def _frames(self, n: int) -> tuple[int, int, np.ndarray]:
        """(front padding, padded length, [coefficients, frames] 0/1 framing matrix) for ``n`` samples."""
        if n not in self._framing:
            per_coeff = 2**self.level
            frames = n_frames(n, self.hop_length)
            front = self.hop_length // 2
            length = max(front + n, frames * self.hop_length)
            length = -(-length // per_coeff) * per_coeff
            starts = (np.arange(frames) * self.hop_length) // per_coeff
            # Frame t sums coefficients starts[t] .. starts[t + 1] - 1; the last takes the tail.
            owner = np.searchsorted(starts, np.arange(length // per_coeff), side="right") - 1
            matrix = np.zeros((length // per_coeff, frames))
            matrix[np.arange(owner.size), owner] = 1.0
            self._framing[n] = (front, length, matrix)
        return self._framing[n]

    def bands(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, 2 ** level, n_padded / 2 ** level)`` packet coefficients in frequency order."""
        y = _check_batch(y)
        front, length, _ = self._frames(y.shape[-1])
        padded = F.pad(y, (front, length - front - y.shape[-1]))
        filters = self._constants.get("filters", self._filters, y)
        # Coefficient j of every band reads padded[(2**level j + t - origin) mod length], t < taps.
        taps, per_coeff = filters.shape[-1], 2**self.level
        wrap = torch.arange(-self._origin, length - per_coeff + taps - self._origin, device=y.device) % length
        return F.conv1d(padded[:, None, wrap], filters[:, None, :], stride=per_coeff)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        coefficients = self.bands(y)
        _, _, matrix = self._frames(y.shape[-1])
        energy = coefficients.square() @ self._constants.get("framing", matrix, coefficients)
        if self.power:
            return energy
        return power_to_db(energy, top_db=self.top_db, amin=self.amin)


@functools.lru_cache(maxsize=8)
def _composite_packet_filters(wavelet: str, level: int) -> tuple[np.ndarray, int]:
    """``[2 ** level, taps]`` composite filters of the frequency-ordered leaves, and their origin.

    Leaf coefficient ``j`` of band ``b`` is ``sum_t filters[b, t] x[(2**level j + t - origin) mod n]``
    for any waveform length ``n`` that is a multiple of ``2 ** level``.

    One periodization step (``pywt.dwt(mode="periodization")``) reads the
    circular convolution with the reversed decomposition filter ``a`` at even
    positions from offset ``s = L/2 - 1``: ``c[i] = sum_j a[j] x[(2i + j - s) mod m]``.
    If ``x[p] = sum_t H[t] y[(Q p + t - o) mod n]``, then
    ``c[i] = sum_u Hc[u] y[(2Q i + u - o - Q s) mod n]`` with
    ``Hc[u] = sum_j a[j] H[u - Q j]``: each level convolves the filters with the
    next filter upsampled by the current stride ``Q`` and moves the origin by
    ``Q s``. Children of node i are 2i (low) and 2i + 1 (high), as in the
    store's tree; a detail filter mirrors its band, so frequency position ``k``
    holds natural node ``gray(k)``.
    """
    w = pywt.Wavelet(wavelet)
    steps = np.stack([w.dec_lo[::-1], w.dec_hi[::-1]])  # [2, L]
    shift = w.dec_len // 2 - 1
    filters, origin, stride = np.ones((1, 1)), 0, 1
    for _ in range(level):
        taps = filters.shape[1] + stride * (w.dec_len - 1)
        children = np.zeros((filters.shape[0], 2, taps))
        for j in range(w.dec_len):
            children[:, :, stride * j : stride * j + filters.shape[1]] += (
                steps[np.newaxis, :, j, np.newaxis] * filters[:, np.newaxis, :]
            )
        filters = children.reshape(-1, taps)
        origin += stride * shift
        stride *= 2
    position = np.arange(2**level)
    return filters[position ^ (position >> 1)], origin


# ---------------------------------------------------------------------------
# chroma


@functools.lru_cache(maxsize=8)
def _soxr_filter(factor: int) -> tuple[np.ndarray, int, np.ndarray]:
    """The store's ``downsample(y, factor=factor)`` as a FIR filter: (correlation kernel, left padding,
    start correction).

    soxr's HQ decimation is linear and, away from the start, shift-invariant by
    ``factor`` samples, so its responses to unit impulses at ``factor``
    consecutive positions give every tap ``g[m]`` (``out[k] = sum_m g[m] x[factor k - m]``,
    the ``sqrt(factor)`` gain included). Beyond the filter's ends soxr's own
    float32 rounding leaves values below 1e-8; taps under 1e-7 of the peak at
    the ends are cut (they change an output by < 1e-7 of the input's scale).

    For ``factor >= 4`` soxr (several half-band stages) treats the first few
    input samples specially: the first ~85 outputs then differ from the
    convolution by a fixed linear map of the first samples, the same for every
    length (measured from 2000 samples up). It is read off soxr the same way
    (impulses at the first positions, minus the convolution) and returned as
    the ``[outputs, samples]`` correction; empty for ``factor == 2``.
    """
    probe = 8192 * factor
    centre = probe // 2  # a multiple of factor

    def response(position: int) -> np.ndarray:
        x = np.zeros(probe)
        x[position] = 1.0
        return _librosa_cqt.downsample(x, factor=factor)

    taps: dict[int, float] = {}
    for q in range(factor):
        for k, v in enumerate(response(centre + q)):
            taps[factor * k - centre - q] = float(v)
    m = np.array(sorted(taps))
    g = np.array([taps[i] for i in m])
    keep = np.flatnonzero(np.abs(g) > 1e-7 * np.abs(g).max())
    low, high = int(m[keep[0]]), int(m[keep[-1]])
    g = g[keep[0] : keep[-1] + 1]  # g[m - low]

    # The start: soxr's response to an impulse at sample j < 64 factor, minus the convolution's.
    columns = []
    k = np.arange(-(-probe // factor))
    for j in range(64 * factor):
        index = factor * k - j - low
        inside = (index >= 0) & (index < g.size)
        convolution = np.where(inside, g[np.clip(index, 0, g.size - 1)], 0.0)
        columns.append(response(j) - convolution)
    difference = np.stack(columns, axis=1)
    significant = np.abs(difference) > 1e-6 * np.abs(g).max()  # soxr's float32 noise: < 1e-7
    if significant.any():
        rows, cols = np.flatnonzero(significant.any(axis=1)), np.flatnonzero(significant.any(axis=0))
        if cols[-1] >= 64 * factor - factor:
            raise RuntimeError(f"soxr's start correction for factor {factor} reaches past the probe")
        correction = difference[: rows[-1] + 1, : cols[-1] + 1]
    else:
        correction = np.zeros((0, 0))
    # out[k] = sum_t w[t] xpad[factor k + t] with xpad = x after `high` zeros: w[t] = g[high - t].
    return g[::-1].copy(), high, correction


class Downsample(nn.Module):
    """``_librosa_cqt.downsample(y, factor=factor)`` (soxr HQ, ``sqrt(factor)`` gain) as soxr's FIR filter,
    applied through the FFT.

    The output has ``ceil(n / factor)`` samples like the store's; soxr itself
    returns ``round(n / factor)`` (halves up) and the store pads the rest with
    zeros, so those stay zero here too.

    Parameters
    ----------
    factor : int
        Decimation factor (a power of two in the CQT).
    """

    def __init__(self, *, factor: int):
        super().__init__()
        self.factor = integer("factor", factor)
        self._kernel, self._left, self._correction = _soxr_filter(self.factor)
        self._constants = _Constants()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        n, f = y.shape[-1], self.factor
        out_n, soxr_n = -(-n // f), (2 * n + f) // (2 * f)
        if soxr_n == 0:  # soxr returns nothing; the store pads with zeros
            return y.new_zeros(*y.shape[:-1], out_n)
        taps = self._kernel.size
        right = max(0, f * (soxr_n - 1) + taps - self._left - n)
        padded = F.pad(y.reshape(-1, n), (self._left, right))
        # Correlation with the kernel through the FFT (as soxr filters): for 383 taps on a
        # CPU 15 times faster than conv1d, which also unfolds every window into memory.
        size = padded.shape[-1] + taps - 1
        size = 1 << (size - 1).bit_length()
        kernel = self._constants.get(("kernel_fft", size), lambda: np.fft.rfft(self._kernel[::-1], size), y,
                                     complex_=True)
        full = torch.fft.irfft(torch.fft.rfft(padded, size) * kernel, size)
        out = full[:, taps - 1 : taps - 1 + f * (soxr_n - 1) + 1 : f]
        if self._correction.size:
            rows, cols = self._correction.shape
            rows, cols = min(rows, soxr_n), min(cols, n)
            correction = self._constants.get("correction", self._correction, y)[:rows, :cols]
            out = torch.cat([out[:, :rows] + y.reshape(-1, n)[:, :cols] @ correction.T, out[:, rows:]], dim=1)
        out = F.pad(out, (0, out_n - soxr_n))
        return out.reshape(*y.shape[:-1], out_n)


class ChromaCQT(nn.Module):
    """Constant-Q chromagram: :func:`advaudio.features.chroma` (the store's path) in torch.

    Parameters as :func:`advaudio.features.chroma` (``floor_db``: its
    floored normalisation, :func:`advaudio.features.tonal.floored_normalize`). The tuning is an argument
    of :meth:`forward`, one value per clip (see the module docstring); the
    filter banks of each tuning value are built once, on first use (the
    estimate takes one of 100 values, 0.01 bin apart).
    """

    def __init__(self, *, sr: int = 22050, hop_length: int = 512, n_chroma: int = 12,
                 bins_per_octave: int = 36, n_octaves: int = 7, fmin: float = C1_HZ,
                 floor_db: float | None = None):
        super().__init__()
        if not _librosa_cqt.ACTIVE:
            raise ParameterError(
                f"the differentiable chromagram ports librosa "
                f"{'.'.join(map(str, _librosa_cqt.COPIED_VERSION))}'s CQT; librosa {librosa.__version__} "
                "is installed, whose chroma_cqt it does not reproduce"
            )
        self.sr, self.hop_length = integer("sr", sr), integer("hop_length", hop_length)
        self.n_chroma, self.bins_per_octave = integer("n_chroma", n_chroma), integer("bins_per_octave",
                                                                                   bins_per_octave)
        self.n_octaves, self.fmin = integer("n_octaves", n_octaves), float(fmin)
        if self.bins_per_octave % self.n_chroma:
            raise ParameterError(f"bins_per_octave={bins_per_octave} must be a multiple of n_chroma={n_chroma}")
        self.n_bins = self.n_octaves * self.bins_per_octave
        self.floor_db = None if floor_db is None else float(floor_db)
        self._to_chroma = np.array(_librosa_cqt._cq_to_chroma(self.n_bins, self.bins_per_octave, self.n_chroma,
                                                               self.fmin))
        self._banks: dict[float, tuple] = {}
        self._downsamplers: dict[int, Downsample] = {}
        self._constants = _Constants()

    def estimate_tuning(self, y: torch.Tensor | np.ndarray) -> list[float]:
        """The store's tuning estimate of each clip of ``(B, n)`` (float32, as featurize computes it).

        Not differentiable (a histogram's mode): take it on the clean clips and
        pass it to :meth:`forward` while perturbing them.
        """
        batch = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        batch = np.atleast_2d(batch).astype(np.float32, copy=False)
        return [_librosa_cqt.estimate_tuning(np.ascontiguousarray(row), sr=self.sr,
                                             bins_per_octave=self.bins_per_octave) for row in batch]

    def _bank(self, tuning: float) -> tuple:
        """The store's CQT plan for ``tuning`` with dense filter banks: built once per value."""
        bank = self._banks.get(tuning)
        if bank is None:
            plan = _librosa_cqt._cqt_plan(
                float(self.sr), int(self.hop_length),
                float(self.fmin * 2.0 ** (tuning / self.bins_per_octave)),
                int(self.n_bins), int(self.bins_per_octave), np.dtype(np.complex64).str,
            )
            structure = (plan.early_downsample,
                         tuple((o.n_fft, o.hop_length, o.halve_after, o.basis.shape[0]) for o in plan.octaves))
            bank = (structure, tuple(_time_domain_filters(o.basis, o.n_fft) for o in plan.octaves),
                    np.asarray(plan.sqrt_lengths[:, 0]))
            self._banks[tuning] = bank
        return bank

    def _downsample(self, factor: int) -> Downsample:
        if factor not in self._downsamplers:
            self._downsamplers[factor] = Downsample(factor=factor)
        return self._downsamplers[factor]

    def cqt_magnitude(self, y: torch.Tensor, tuning: Sequence[float]) -> torch.Tensor:
        """``(B, n_bins, frames)`` CQT magnitudes, each clip with its own tuning."""
        y = _check_batch(y)
        tunings = [float(t) for t in tuning]
        if len(tunings) != y.shape[0]:
            raise ParameterError(f"one tuning per clip: {len(tunings)} for a batch of {y.shape[0]}")
        banks = [self._bank(t) for t in tunings]
        groups: dict[tuple, list[int]] = {}
        for i, bank in enumerate(banks):
            groups.setdefault(bank[0], []).append(i)
        if len(groups) == 1:
            return self._cqt_group(y, tunings, banks)
        # Tunings whose filters need other FFT sizes or decimation: one pass per structure.
        parts = {}
        for members in groups.values():
            out = self._cqt_group(y[members], [tunings[i] for i in members], [banks[i] for i in members])
            parts.update(zip(members, out.unbind(0)))
        return torch.stack([parts[i] for i in range(y.shape[0])])

    def _cqt_group(self, y: torch.Tensor, tunings: list[float], banks: list[tuple]) -> torch.Tensor:
        (early, octaves) = banks[0][0]
        if early > 1:
            y = self._downsample(early)(y)
        responses = []
        same = len(set(tunings)) == 1
        for o, (n_fft, hop, halve, n_filters) in enumerate(octaves):
            # Centered frames with constant padding, the store's rectangular window.
            frames = F.pad(y, (n_fft // 2, n_fft // 2)).unfold(-1, n_fft, hop)  # (B, frames, n_fft)
            filters = [self._constants.get(("filters", t, o), bank[1][o], y) for t, bank in zip(tunings, banks)]
            if same:  # one GEMM over the whole batch
                response = frames @ filters[0].T
            else:
                response = frames @ torch.stack(filters).transpose(-1, -2)
            # (B, frames, [real; imaginary]) -> complex (B, filters, frames); abs() of a complex zero has
            # gradient 0 where a real hypot's would be NaN (digital silence).
            responses.append(torch.complex(response[..., :n_filters], response[..., n_filters:]).transpose(-1, -2))
            if halve:
                y = self._downsample(2)(y)
        # Stack octaves bottom-up, trimmed to the shortest (the store's order: top octave last).
        frames = min(r.shape[-1] for r in responses)
        pieces, end = [], self.n_bins
        for r in responses:
            take = min(end, r.shape[-2])
            pieces.append(r[:, -take:, :frames])
            end -= take
        out = torch.cat(pieces[::-1], dim=-2)
        sqrt_lengths = torch.stack([self._constants.get(("sqrt_lengths", t), bank[2], y)
                                    for t, bank in zip(tunings, banks)])
        return (out / sqrt_lengths[:, :, None]).abs()

    def forward(self, y: torch.Tensor, tuning: Sequence[float] | float) -> torch.Tensor:
        """``(B, n_chroma, frames)`` chromagram, max-normalised per frame.

        ``tuning``: one value per clip, or one for all (from :meth:`estimate_tuning`
        on the clean clips, or the store's fixed ``tuning``).
        """
        y = _check_batch(y)
        if isinstance(tuning, (int, float)):
            tuning = [float(tuning)] * y.shape[0]
        magnitude = self.cqt_magnitude(y, tuning)
        to_chroma = self._constants.get("to_chroma", self._to_chroma, magnitude)
        chroma = torch.relu(to_chroma @ magnitude)  # the store sets negative values to 0
        frame_max = torch.amax(chroma, dim=-2, keepdim=True)
        if self.floor_db is None:
            return _normalize(chroma, frame_max)
        floor = torch.amax(frame_max, dim=-1, keepdim=True) * 10.0 ** (-self.floor_db / 20.0)
        return _normalize(chroma, torch.maximum(frame_max, floor))


def _time_domain_filters(basis, n_fft: int) -> np.ndarray:
    """``[2 filters, n_fft]`` real and imaginary time-domain filters of a ``[filters, n_fft // 2 + 1]``
    frequency-domain CQT basis (scipy sparse, as the store keeps it) applied to the rFFT of a frame.

    ``basis @ rfft(frame) = (basis @ E) @ frame`` with ``E[k, t] = exp(-2 pi i k t / n_fft)``: one
    real matrix product per octave instead of an FFT and a complex one, the store's (sparsified)
    filters exactly; in float32 the same accuracy, and forward + backward 0.7 times the time on a CPU.
    """
    filters = basis.astype(np.complex128) @ _dft_rows(n_fft)  # sparse: ~600 non-zeros of 36 x 513
    return np.concatenate([filters.real, filters.imag])


@functools.lru_cache(maxsize=4)
def _dft_rows(n_fft: int) -> np.ndarray:
    """``E[k, t] = exp(-2 pi i k t / n_fft)`` for the ``n_fft // 2 + 1`` bins of an rFFT."""
    k = np.arange(n_fft // 2 + 1)[:, np.newaxis]
    t = np.arange(n_fft)[np.newaxis, :]
    return np.exp(-2j * np.pi * ((k * t) % n_fft) / n_fft)


def _normalize(x: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``librosa.util.normalize``'s division: columns whose norm is below the dtype's tiny stay as they are."""
    tiny = torch.finfo(x.dtype).tiny
    return x / torch.where(length < tiny, torch.ones_like(length), length)


def tonnetz(chroma: torch.Tensor, *, floored: bool = False) -> torch.Tensor:
    """Tonal centroids of a ``(B, n_chroma, frames)`` chromagram: :func:`advaudio.features.tonnetz` in torch.

    ``floored``: the chromagram has a floor (``floor_db``); frames are divided
    by ``max(L1 norm, 1)``, as the store's tonnetz then does.
    """
    basis = torch.tensor(_librosa_cqt._tonnetz_basis(chroma.shape[-2]), dtype=chroma.dtype, device=chroma.device)
    l1 = chroma.abs().sum(dim=-2, keepdim=True)
    return basis @ (chroma / torch.clamp(l1, min=1.0) if floored else _normalize(chroma, l1))
