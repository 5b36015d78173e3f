"""Decoding one audio file into a fixed-length mono waveform.

Everything that turns a file on disk into the float32 vector a representation
consumes happens here: decoding (soundfile: wav incl. 8-bit unsigned, 16/24/32-bit
integer and float, flac, ogg/vorbis …), mono mixdown, resampling (soxr, called
directly: ``librosa.resample`` adds large per-call overhead), and the fixed-duration
policy. Files that cannot be used raise :class:`~advaudio.errors.AudioError` whose
message is the short reason the feature store records.
"""

from __future__ import annotations

import math
import os
import stat
import struct

import numpy as np
import soundfile as sf
import soxr

from advaudio.errors import AudioError
from advaudio.validation import finite_float, integer

__all__ = [
    "DURATION_POLICY",
    "SILENCE_THRESHOLD",
    "RESAMPLE_QUALITY",
    "AUDIO_EXTENSIONS",
    "load_audio",
    "fix_length",
    "resample",
]

#: How :func:`load_audio` reaches the requested duration, recorded in every store.
#: A longer clip keeps its first ``duration`` seconds (after ``offset``); a shorter
#: clip is followed by digital silence. Cropping the start matches how ESC-50 and
#: UrbanSound8K clips were cut (the event starts near the beginning), and padding at
#: the end keeps sample times aligned with the original file.
DURATION_POLICY = "crop-start/pad-end-zeros"

#: A clip whose peak absolute amplitude (full scale = 1.0, after mono mixdown) is
#: below this is rejected as silent: -100 dBFS, under the quantisation step of
#: 16-bit audio, so only digital silence (or near-silence) is caught.
SILENCE_THRESHOLD = 1e-5

#: soxr quality recipe used for every rate conversion ("HQ": 20-bit precision).
RESAMPLE_QUALITY = "HQ"

#: File extensions (lower case, with dot) that this module's decoder reads.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff")
if "MP3" in sf.available_formats():  # libsndfile >= 1.1 decodes mp3
    AUDIO_EXTENSIONS = AUDIO_EXTENSIONS + (".mp3",)


def fix_length(y: np.ndarray, *, size: int) -> np.ndarray:
    """Crop or zero-pad a 1-D signal to exactly ``size`` samples.

    Follows :data:`DURATION_POLICY`: cropping keeps the first ``size`` samples,
    padding appends zeros at the end.

    Parameters
    ----------
    y : np.ndarray, 1-D
        Signal.
    size : int >= 0
        Target length in samples.

    Returns
    -------
    np.ndarray
        ``y`` cropped or padded (same dtype); ``y`` itself when it already fits.
    """
    size = integer("size", size, minimum=0)
    n = y.shape[-1]
    if n == size:
        return y
    if n > size:
        return y[:size]
    return np.concatenate([y, np.zeros(size - n, dtype=y.dtype)])


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a 1-D float signal with soxr (quality :data:`RESAMPLE_QUALITY`).

    Parameters
    ----------
    y : np.ndarray, 1-D float32
        Signal at ``orig_sr``.
    orig_sr, target_sr : int > 0
        Sampling rates in Hz.

    Returns
    -------
    np.ndarray, float32
        The signal at ``target_sr`` (``y`` itself when the rates are equal).
    """
    orig_sr, target_sr = integer("orig_sr", orig_sr), integer("target_sr", target_sr)
    if orig_sr == target_sr:
        return y
    out = soxr.resample(y, orig_sr, target_sr, quality=RESAMPLE_QUALITY)
    return np.asarray(out, dtype=np.float32)


def _wav_declared_frames(path: str) -> int | None:
    """Frames the RIFF/RIFX header of a wav file promises, or ``None`` if unknown.

    libsndfile silently shortens a wav whose ``data`` chunk runs past the end of the
    file, so truncation is only visible by comparing the header with the file size.
    Returns ``None`` for non-RIFF files, RF64 and streaming headers (size 0 or
    0xFFFFFFFF), where the header makes no usable promise.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX"):
                return None
            endian = "<" if head[:4] == b"RIFF" else ">"
            block_align = None
            while True:
                hdr = f.read(8)
                if len(hdr) < 8:
                    return None
                cid = hdr[:4]
                (size,) = struct.unpack(endian + "I", hdr[4:])
                if cid == b"fmt ":
                    fmt = f.read(size)
                    if len(fmt) >= 14:
                        (block_align,) = struct.unpack(endian + "H", fmt[12:14])
                    if size % 2:
                        f.seek(1, os.SEEK_CUR)
                    continue
                if cid == b"data":
                    if size in (0, 0xFFFFFFFF) or not block_align:
                        return None
                    return size // block_align
                f.seek(size + (size % 2), os.SEEK_CUR)
    except OSError:
        return None


def load_audio(
    path: str | os.PathLike,
    *,
    sr: int | None = 22050,
    duration: float | None = 5.0,
    offset: float = 0.0,
) -> np.ndarray:
    """Decode an audio file into a mono float32 waveform of fixed length.

    Parameters
    ----------
    path : str or os.PathLike
        Audio file in any format soundfile reads (see :data:`AUDIO_EXTENSIONS`).
    sr : int > 0 or None
        Target sampling rate in Hz (default 22050). ``None`` keeps the file's rate.
        Resampling uses soxr with quality :data:`RESAMPLE_QUALITY`.
    duration : float > 0 or None
        Output duration in seconds (default 5.0): the result has exactly
        ``round(sr * duration)`` samples, cropped or zero-padded according to
        :data:`DURATION_POLICY`. ``None`` keeps the natural length (after ``offset``).
    offset : float >= 0
        Start reading this many seconds into the file (default 0.0).

    Returns
    -------
    np.ndarray, float32, shape (n,)
        Samples in [-1, 1] full scale (float files may exceed it), channels averaged.

    Raises
    ------
    ParameterError
        ``sr``, ``duration`` or ``offset`` out of range.
    AudioError
        The clip cannot be used; the message is the reason: ``"missing file"``,
        ``"empty file (0 bytes)"``, ``"unreadable: <decoder message>"``,
        ``"empty file (0 frames)"``, ``"truncated: ..."``,
        ``"offset ... beyond the end ..."``, ``"non-finite samples"`` or
        ``"silent (peak ... < ...)"`` (see :data:`SILENCE_THRESHOLD`).
        Truncation is detected from the wav header (libsndfile itself silently
        shortens such files), or for any format when decoding the requested span
        fails or yields fewer frames than the file declares; damage past the
        requested span goes unnoticed, since it is never decoded.
    """
    if sr is not None:
        sr = integer("sr", sr)
    if duration is not None:
        duration = finite_float("duration", duration, positive=True)
    offset = finite_float("offset", offset, minimum=0)

    path = os.fspath(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AudioError("dangling symbolic link" if os.path.islink(path) else "missing file") from None
    except OSError as exc:
        raise AudioError(f"unreadable: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):  # never opened: reading a fifo would block
        kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a fifo" if stat.S_ISFIFO(info.st_mode)
                else "a device or socket")
        raise AudioError(f"not a regular file ({kind})")
    nbytes = info.st_size
    if nbytes == 0:
        raise AudioError("empty file (0 bytes)")

    try:
        f = sf.SoundFile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise AudioError(f"unreadable: {_sf_message(e)}") from None
    with f:
        file_sr = f.samplerate
        frames = f.frames
        if frames == 0:
            raise AudioError("empty file (0 frames)")
        if f.format in ("WAV", "WAVEX"):
            declared = _wav_declared_frames(path)
            if declared is not None and declared > frames:
                raise AudioError(
                    f"truncated: header declares {declared} frames, file holds {frames}"
                )
        start = int(round(offset * file_sr))
        if start >= frames:
            raise AudioError(
                f"offset {offset:g} s beyond the end of the clip ({frames / file_sr:.3f} s)"
            )
        # Read only what the requested duration needs (at the file's rate), so a long
        # file is not decoded in full for a 5 s crop.
        want = frames - start
        if duration is not None:
            want = min(want, int(math.ceil(duration * file_sr)))
        try:
            if start:
                f.seek(start)
            data = f.read(want, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise AudioError(f"truncated: decoding failed ({_sf_message(e)})") from None
    if data.shape[0] < want:
        raise AudioError(
            f"truncated: header declares {frames} frames, decoded {start + data.shape[0]}"
        )

    # Mean over channels: the usual mono mixdown (librosa.to_mono does the same).
    y = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(y)):
        raise AudioError("non-finite samples")
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak < SILENCE_THRESHOLD:
        raise AudioError(f"silent (peak {peak:.3g} < {SILENCE_THRESHOLD:g})")

    target_sr = file_sr if sr is None else int(sr)
    y = resample(np.ascontiguousarray(y), orig_sr=file_sr, target_sr=target_sr)
    if duration is not None:
        y = fix_length(y, size=int(round(target_sr * duration)))
    return np.ascontiguousarray(y, dtype=np.float32)


def _sf_message(e: Exception) -> str:
    """Soundfile's error text without the file name (the store records the path)."""
    msg = str(getattr(e, "error_string", None) or str(e)).strip()
    # libsndfile says this of a regular file whose decoder gave up (e.g. random bytes named .mp3)
    if "possibly a pipe" in msg:
        return "not decodable as audio (format not recognised or damaged)"
    return msg
