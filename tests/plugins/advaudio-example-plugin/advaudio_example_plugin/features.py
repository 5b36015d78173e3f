"""``envelope``: log energy in 8 equal-width frequency bands per frame (on advaudio's hop)."""

from __future__ import annotations

import numpy as np

from advaudio.features import Representation

BANDS = 8


def envelope(y: np.ndarray, config, shared: dict) -> np.ndarray:
    """float32 (BANDS, 1 + len(y) // hop) in dB: centred frames of n_fft samples, like advaudio's stft."""
    n_fft, hop = config.n_fft, config.hop_length
    padded = np.pad(y, n_fft // 2, mode="constant")
    frames = 1 + len(y) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(padded[idx] * np.hanning(n_fft), axis=1)) ** 2
    bands = np.array_split(power[:, 1:], BANDS, axis=1)
    energy = np.stack([b.sum(axis=1) for b in bands])
    return (10.0 * np.log10(np.maximum(energy, config.amin))).astype(np.float32)


ENVELOPE = Representation(envelope, lambda config: BANDS)
