"""The embedded synthetic dataset's sounds: deterministic, procedurally made clips of eight classes.

Each generator maps (rng, sr, n samples) to a raw waveform; the common wrapper
(:func:`synthesize`) adds a little background noise and sets a random peak level.
Parameters are drawn per clip, so clips of one class differ while the class's
character (spectral shape, temporal pattern) stays recognisable. A clip's path
``"synthetic:<class>/<index>"`` names it completely (with the dataset's seed,
rate and duration), so any worker regenerates any clip on its own; the reader
of the table is :func:`advaudio.datasets.readers.read_synthetic`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from scipy import signal as sps

from advaudio.errors import ParameterError
from advaudio.validation import finite_float, integer

__all__ = ["SYNTHETIC_CLASSES", "SYNTHETIC_PREFIX", "SYNTHETIC_VERSION", "synthesize"]

#: Path prefix of a generated clip: ``"synthetic:<class>/<index>"``.
SYNTHETIC_PREFIX = "synthetic:"
#: Bumped whenever a synthetic generator changes, so stores built from the old
#: waveforms get a different fingerprint.
SYNTHETIC_VERSION = 1


def _time(sr: int, n: int) -> np.ndarray:
    return np.arange(n) / sr


def _nyq_clip(f, sr: int):
    # Keep every partial below Nyquist whatever the sampling rate.
    return np.minimum(f, 0.45 * sr)


def _band(x: np.ndarray, lo: float, hi: float, sr: int, order: int = 4) -> np.ndarray:
    ny = sr / 2
    lo = max(lo, 1.0) / ny
    hi = min(hi, 0.95 * ny) / ny
    if lo >= hi:
        lo = hi / 2
    sos = sps.butter(order, [lo, hi], btype="bandpass", output="sos")
    return sps.sosfilt(sos, x)


def _lowpass(x: np.ndarray, cutoff: float, sr: int, order: int = 4) -> np.ndarray:
    sos = sps.butter(order, min(cutoff, 0.45 * sr) / (sr / 2), btype="lowpass", output="sos")
    return sps.sosfilt(sos, x)


def _place(y: np.ndarray, event: np.ndarray, start: int) -> None:
    """Add ``event`` into ``y`` at sample ``start``, cut at the end of ``y``."""
    if start >= len(y):
        return
    m = min(len(event), len(y) - start)
    y[start : start + m] += event[:m]


def _gen_siren(rng, sr, n):
    # Two-tone sweep (wail) between f_lo and f_hi at a slow LFO rate.
    t = _time(sr, n)
    f_lo = rng.uniform(500, 900)
    f_hi = f_lo + rng.uniform(400, 1000)
    rate = rng.uniform(0.4, 3.0)
    lfo = 0.5 * (1 - np.cos(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    f = f_lo + (f_hi - f_lo) * lfo
    phase = 2 * np.pi * np.cumsum(f) / sr
    y = np.zeros(n)
    for k, a in ((1, 1.0), (2, rng.uniform(0.1, 0.4)), (3, rng.uniform(0.05, 0.2))):
        if k * f_hi < 0.45 * sr:
            y += a * np.sin(k * phase)
    return y


def _gen_engine(rng, sr, n):
    # Low harmonic hum with amplitude modulation (firing rhythm) and rumble noise.
    t = _time(sr, n)
    f0 = rng.uniform(30, 80) * (1 + rng.uniform(-0.05, 0.05) * t / max(t[-1], 1e-9))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    y = np.zeros(n)
    for k in range(1, 13):
        y += rng.uniform(0.3, 1.0) / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    am = 1 + rng.uniform(0.2, 0.6) * np.sin(2 * np.pi * rng.uniform(5, 20) * t)
    rumble = _lowpass(rng.standard_normal(n), rng.uniform(150, 400), sr)
    return y * am + rng.uniform(0.2, 0.6) * rumble / (np.std(rumble) + 1e-12) * np.std(y)


def _gen_rain(rng, sr, n):
    # Broadband hiss plus many short droplet bursts (filtered noise impulses).
    hiss = _band(rng.standard_normal(n), rng.uniform(800, 2000), rng.uniform(6000, 10000), sr)
    hiss /= np.std(hiss) + 1e-12
    y = rng.uniform(0.3, 0.7) * hiss
    n_drops = int(rng.uniform(20, 60) * n / sr) + 1
    for _ in range(n_drops):
        length = int(sr * rng.uniform(0.003, 0.02))
        env = np.exp(-np.arange(length) / (length / 4 + 1))
        drop = rng.standard_normal(length) * env * rng.uniform(0.5, 2.0)
        _place(y, drop, int(rng.integers(0, n)))
    return y


def _gen_dog_bark(rng, sr, n):
    # A few short harmonic barks: falling pitch, fast attack, exponential decay.
    y = np.zeros(n)
    n_barks = int(rng.integers(1, 5))
    t0 = rng.uniform(0, 0.2) * n / sr
    for _ in range(n_barks):
        dur = rng.uniform(0.1, 0.3)
        length = max(int(sr * dur), 16)
        tb = np.arange(length) / sr
        f0 = rng.uniform(300, 700) * (1 - rng.uniform(0.1, 0.4) * tb / dur)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        bark = sum(
            rng.uniform(0.3, 1.0) / k * np.sin(k * phase) for k in range(1, 8)
            if k * f0[0] < 0.45 * sr
        )
        # Breathy component, band-limited like a real bark (mostly below 3 kHz).
        breath = _band(rng.standard_normal(length), 300, 3000, sr, order=2)
        bark = bark + rng.uniform(0.1, 0.4) * breath / (np.std(breath) + 1e-12) * np.std(bark)
        env = np.minimum(tb / 0.01, 1.0) * np.exp(-tb / (dur / rng.uniform(2.5, 5)))
        start = min(int(t0 * sr), max(n - length // 2, 0))
        _place(y, bark * env, start)
        t0 += dur + rng.uniform(0.05, 0.5)
    return y


def _gen_clock_tick(rng, sr, n):
    # Periodic short resonant clicks, alternating tick/tock pitch.
    y = np.zeros(n)
    period = rng.uniform(0.25, 0.8)
    f_tick, f_tock = rng.uniform(2000, 5000), rng.uniform(1500, 4000)
    t0 = rng.uniform(0, min(period, n / sr / 2))
    length = int(sr * rng.uniform(0.004, 0.012))
    tb = np.arange(length) / sr
    i = 0
    while True:
        start = int((t0 + i * period) * sr)
        if start >= n:
            break
        f = _nyq_clip(f_tick if i % 2 == 0 else f_tock, sr)
        click = np.sin(2 * np.pi * f * tb) * np.exp(-tb / (length / sr / 5))
        _place(y, click * rng.uniform(0.7, 1.0), start)
        i += 1
    return y


def _gen_bird_chirp(rng, sr, n):
    # Groups of fast high up-chirps.
    y = np.zeros(n)
    t0 = rng.uniform(0, 0.15) * n / sr
    while t0 < n / sr:
        for _ in range(int(rng.integers(2, 6))):
            dur = rng.uniform(0.03, 0.1)
            length = max(int(sr * dur), 8)
            tb = np.arange(length) / sr
            f_start = rng.uniform(2000, 4000)
            f = _nyq_clip(f_start + rng.uniform(1000, 3000) * tb / dur, sr)
            env = np.sin(np.pi * np.arange(length) / length) ** 2
            _place(y, np.sin(2 * np.pi * np.cumsum(f) / sr) * env, int(t0 * sr))
            t0 += dur + rng.uniform(0.02, 0.08)
        t0 += rng.uniform(0.2, 0.7)
    return y


def _gen_alarm(rng, sr, n):
    # On/off beeping of a square-ish tone at a fixed pitch.
    t = _time(sr, n)
    f = rng.uniform(1800, 3200)
    tone = sum(np.sin(2 * np.pi * k * f * t) / k for k in (1, 3, 5) if k * f < 0.45 * sr)
    period = rng.uniform(0.2, 0.6)
    duty = rng.uniform(0.3, 0.7)
    gate = ((t + rng.uniform(0, period)) % period) < duty * period
    gate = np.convolve(gate.astype(float), np.ones(32) / 32, mode="same")  # no clicks
    return tone * gate


def _gen_wind(rng, sr, n):
    # Low-passed noise with slow gusts.
    t = _time(sr, n)
    noise = _lowpass(rng.standard_normal(n), rng.uniform(200, 800), sr)
    noise /= np.std(noise) + 1e-12
    rate, phase = rng.uniform(0.1, 0.6), rng.uniform(0, 2 * np.pi)
    gust = 1 + rng.uniform(0.4, 0.9) * np.sin(2 * np.pi * rate * t + phase)
    return noise * gust


#: Synthetic class name → generator ``(rng, sr, n_samples) -> waveform``, in label order.
SYNTHETIC_CLASSES: dict[str, Callable] = {
    "siren": _gen_siren,
    "engine": _gen_engine,
    "rain": _gen_rain,
    "dog_bark": _gen_dog_bark,
    "clock_tick": _gen_clock_tick,
    "bird_chirp": _gen_bird_chirp,
    "alarm": _gen_alarm,
    "wind": _gen_wind,
}


def _parse_synthetic(clip_or_path) -> tuple[str, int]:
    path = clip_or_path if isinstance(clip_or_path, str) else clip_or_path.path
    if not path.startswith(SYNTHETIC_PREFIX):
        raise ParameterError(f"not a synthetic clip path: {path!r}")
    try:
        cls, idx = path[len(SYNTHETIC_PREFIX):].rsplit("/", 1)
        index = int(idx)
    except ValueError:
        raise ParameterError(
            f"malformed synthetic clip path {path!r} (want 'synthetic:<class>/<index>')"
        ) from None
    if cls not in SYNTHETIC_CLASSES:
        raise ParameterError(
            f"unknown synthetic class {cls!r} (known: {', '.join(SYNTHETIC_CLASSES)})"
        )
    if index < 0:
        raise ParameterError(f"synthetic clip index must be >= 0, got {index}")
    return cls, index


def synthesize(
    clip_or_path, *, sr: int = 22050, duration: float = 2.0, seed: int = 0
) -> np.ndarray:
    """Generate one synthetic clip, deterministically.

    The waveform depends only on ``(seed, class name, index, sr, duration)``, not on
    which other clips are generated or in what order, so any worker can regenerate
    any clip on its own.

    Parameters
    ----------
    clip_or_path : Clip or str
        A synthetic clip or its path ``"synthetic:<class>/<index>"``.
    sr : int > 0
        Sampling rate in Hz (default 22050).
    duration : float > 0
        Length in seconds (default 2.0); the result has ``round(sr * duration)`` samples.
    seed : int >= 0
        Dataset seed (default 0).

    Returns
    -------
    np.ndarray, float32, shape (round(sr * duration),)
        Peak level drawn per clip in [0.1, 0.9] full scale; never silent. Background
        noise at 25–45 dB SNR is mixed in.
    """
    cls, index = _parse_synthetic(clip_or_path)
    sr = integer("sr", sr, minimum=1000)
    duration = finite_float("duration", duration, positive=True)
    seed = integer("seed", seed, minimum=0)
    n = max(int(round(sr * duration)), 1)
    # crc32 of the name (not the class position) keeps a clip identical when
    # n_classes changes or generators are added after it.
    rng = np.random.default_rng([int(seed), zlib.crc32(cls.encode()), int(index)])
    y = np.asarray(SYNTHETIC_CLASSES[cls](rng, int(sr), n), dtype=np.float64)
    rms = np.sqrt(np.mean(y**2))
    if not np.isfinite(rms) or rms == 0:  # defensive: never hand out silence
        y = np.sin(2 * np.pi * 440 * _time(int(sr), n))
        rms = np.sqrt(np.mean(y**2))
    snr_db = rng.uniform(25, 45)
    y = y + rng.standard_normal(n) * rms * 10 ** (-snr_db / 20)
    y *= rng.uniform(0.1, 0.9) / np.max(np.abs(y))
    return y.astype(np.float32)
