"""The configuration of the transforms: :class:`FeatureConfig`, every parameter checked and recorded."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from advaudio.errors import ParameterError, check_known_fields
from advaudio.validation import finite_float, integer

__all__ = ["FeatureConfig"]

#: C1 in Hz, the CQT's default lowest frequency: ``librosa.note_to_hz("C1")`` (MIDI note 24), written
#: out so that this module imports no transform library (option listings read its defaults).
C1_HZ = 440.0 * 2.0 ** ((24 - 69) / 12)

_DEFAULT_REPRESENTATIONS = ("stft", "dwt", "chroma", "tonnetz")


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
    chroma_floor_db : float or None
        None (default): each chroma frame is normalised to a maximum of 1,
        librosa's ``chroma_cqt``. A number: frames more than this many dB
        (amplitude) below the clip's loudest chroma frame are divided by that
        floor instead, and the tonnetz does not scale up frames whose chroma
        sums to less than 1 (only such floored frames). Max-normalising a frame of
        near digital silence magnifies rounding noise to full scale: such
        frames differ between float32 and float64, CPU and GPU, soxr and any
        other resampler, and have gradients of ~1e10 in the waveform. 80 makes
        both representations well-conditioned; needed for the waveform-domain
        front end (:mod:`advaudio.frontend`) to equal the store.
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
    chroma_floor_db: float | None = None

    def __post_init__(self) -> None:
        # Here, not at the top: this module is light (the registry's module imports it).
        from advaudio.features import REPRESENTATIONS
        from advaudio.features.spectral import check_dwt_hop, check_wavelet, check_window
        from advaudio.features.tonal import check_cqt_range

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
            set_(name, integer(name, getattr(self, name)))
        for name in ("amin", "fmin"):
            set_(name, finite_float(name, getattr(self, name), positive=True))
        if self.top_db is not None:
            set_("top_db", finite_float("top_db", self.top_db, positive=True))
        if self.tuning is not None:
            set_("tuning", finite_float("tuning", self.tuning))
        if self.chroma_floor_db is not None:
            set_("chroma_floor_db", finite_float("chroma_floor_db", self.chroma_floor_db, positive=True))
        for name in ("window", "wavelet", "dwt_mode"):
            if not isinstance(getattr(self, name), str):
                raise ParameterError(f"{name} must be a str, got {getattr(self, name)!r}")

        if self.n_fft < self.hop_length:
            raise ParameterError(
                f"n_fft={self.n_fft} is shorter than hop_length={self.hop_length}: "
                "frames would skip samples"
            )
        check_window(self.window, self.n_fft)
        check_wavelet(self.wavelet, self.dwt_mode)
        if "dwt" in reps:
            check_dwt_hop(self.hop_length, self.dwt_level)
        if self.bins_per_octave % self.n_chroma:
            raise ParameterError(
                f"bins_per_octave={self.bins_per_octave} must be a multiple of "
                f"n_chroma={self.n_chroma}"
            )
        if "chroma" in reps or "tonnetz" in reps:
            check_cqt_range(
                sr=self.sr,
                fmin=self.fmin,
                tuning=self.tuning,
                n_bins=self.n_octaves * self.bins_per_octave,
                bins_per_octave=self.bins_per_octave,
            )

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-able dict (tuples stay tuples; ``json`` writes lists).

        ``chroma_floor_db`` appears only when set, so that stores made before
        the option existed keep their fingerprint.
        """
        d = dataclasses.asdict(self)
        if d["chroma_floor_db"] is None:
            del d["chroma_floor_db"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureConfig:
        """Rebuild a configuration from :meth:`to_dict` output, also after a JSON round trip.

        Missing keys take their defaults; unknown keys raise :class:`ParameterError`.
        """
        check_known_fields(cls, d, "feature configuration keys")
        return cls(**d)  # __post_init__ turns JSON lists back into tuples
