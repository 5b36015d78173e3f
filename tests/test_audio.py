"""Decoding, mixdown, resampling, fixed duration and bad-file reasons of load_audio."""

import numpy as np
import pytest
import soundfile as sf

from advaudio.datasets.audio import (
    DURATION_POLICY,
    SILENCE_THRESHOLD,
    fix_length,
    load_audio,
)
from advaudio.errors import AudioError, ParameterError


def sine(freq, sr, seconds, amp=0.5, phase=0.0):
    t = np.arange(int(round(sr * seconds))) / sr
    return amp * np.sin(2 * np.pi * freq * t + phase)


def peak_freq(y, sr):
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spec)]


def test_stereo_24bit_mixdown_is_channel_mean(tmp_path):
    sr = 16000
    left = sine(440, sr, 0.5, amp=0.6)
    right = sine(1320, sr, 0.5, amp=0.3, phase=1.0)
    path = tmp_path / "stereo24.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="PCM_24")
    assert sf.info(path).subtype == "PCM_24"

    y = load_audio(path, sr=sr, duration=None)
    assert y.dtype == np.float32 and y.ndim == 1 and len(y) == len(left)
    # 24-bit quantisation error is ~1e-7; the mean must match far below that scale.
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-6)


def test_8bit_unsigned_wav(tmp_path):
    sr = 8000
    x = sine(300, sr, 0.5, amp=0.8)
    path = tmp_path / "u8.wav"
    sf.write(path, x, sr, subtype="PCM_U8")
    y = load_audio(path, sr=sr, duration=None)
    # Unsigned 8-bit is centred at 128; a decoder that forgot the offset would be
    # shifted by ~1.0. Quantisation step is 1/128.
    np.testing.assert_allclose(y, x, atol=1 / 64)
    assert abs(float(np.mean(y))) < 0.01


def test_float32_wav_is_exact(tmp_path):
    sr = 22050
    x = sine(1000, sr, 0.3, amp=0.9).astype(np.float32)
    path = tmp_path / "f32.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    y = load_audio(path, sr=sr, duration=None)
    np.testing.assert_array_equal(y, x)


def test_flac_and_ogg(tmp_path):
    sr = 22050
    x = sine(1000, sr, 1.0, amp=0.5)
    sf.write(tmp_path / "a.flac", x, sr, subtype="PCM_16")
    sf.write(tmp_path / "a.ogg", x, sr)

    y = load_audio(tmp_path / "a.flac", sr=sr, duration=1.0)
    np.testing.assert_allclose(y, x, atol=1e-4)

    y = load_audio(tmp_path / "a.ogg", sr=sr, duration=1.0)
    assert len(y) == sr
    assert abs(peak_freq(y, sr) - 1000) < 5
    # Lossy, but the waveform stays close to the original.
    assert np.corrcoef(y[1000:-1000], x[1000:-1000])[0, 1] > 0.95


def test_resample_48k_to_22050(tmp_path):
    x = sine(3000, 48000, 1.0, amp=0.5)
    path = tmp_path / "hi.wav"
    sf.write(path, x, 48000, subtype="PCM_16")

    y = load_audio(path, sr=22050, duration=1.0)
    assert len(y) == 22050
    assert abs(peak_freq(y, 22050) - 3000) < 3
    # Amplitude preserved by the resampler (ignore edge transients).
    assert abs(np.max(np.abs(y[2000:-2000])) - 0.5) < 0.01

    # Natural length after resampling is the duration at the new rate.
    y = load_audio(path, sr=22050, duration=None)
    assert abs(len(y) - 22050) <= 1
    # sr=None keeps the file's rate.
    assert len(load_audio(path, sr=None, duration=0.5)) == 24000


def test_pad_and_crop_policy(tmp_path):
    sr = 8000
    x = sine(500, sr, 1.0, amp=0.5).astype(np.float32)
    path = tmp_path / "one_second.wav"
    sf.write(path, x, sr, subtype="FLOAT")

    padded = load_audio(path, sr=sr, duration=2.5)
    assert len(padded) == 20000
    np.testing.assert_array_equal(padded[:8000], x)  # original at the start
    assert not np.any(padded[8000:])  # zeros appended at the end

    cropped = load_audio(path, sr=sr, duration=0.25)
    np.testing.assert_array_equal(cropped, x[:2000])  # the start is kept

    shifted = load_audio(path, sr=sr, duration=0.25, offset=0.5)
    np.testing.assert_array_equal(shifted, x[4000:6000])

    assert len(load_audio(path, sr=sr, duration=1 / 3)) == round(sr / 3)
    assert DURATION_POLICY == "crop-start/pad-end-zeros"


def test_fix_length():
    y = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(y, size=3), [0, 1, 2])
    np.testing.assert_array_equal(fix_length(y, size=7), [0, 1, 2, 3, 4, 0, 0])
    assert fix_length(y, size=7).dtype == np.float32
    with pytest.raises(ParameterError):
        fix_length(y, size=-1)


def reason(path, **kw):
    with pytest.raises(AudioError) as info:
        load_audio(path, **kw)
    return str(info.value)


def test_corrupt_file_is_unreadable(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4000))
    msg = reason(path)
    assert msg.startswith("unreadable: ")
    assert len(msg) > len("unreadable: ")


def test_empty_and_header_only(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert reason(empty) == "empty file (0 bytes)"

    header_only = tmp_path / "header.wav"
    sf.write(header_only, np.zeros((0, 1)), 22050, subtype="PCM_16")
    assert header_only.stat().st_size > 0
    assert reason(header_only) == "empty file (0 frames)"


def test_missing_file(tmp_path):
    assert reason(tmp_path / "nope.wav") == "missing file"


def test_silent(tmp_path):
    path = tmp_path / "zeros.wav"
    sf.write(path, np.zeros(8000), 8000, subtype="PCM_16")
    assert reason(path).startswith("silent")

    # Just under the threshold (float file, so no quantisation to zero).
    quiet = tmp_path / "quiet.wav"
    sf.write(quiet, np.full(800, SILENCE_THRESHOLD / 2, np.float32), 8000, subtype="FLOAT")
    assert reason(quiet).startswith("silent")

    # Opposite-phase stereo mixes down to silence.
    x = sine(200, 8000, 0.2)
    anti = tmp_path / "anti.wav"
    sf.write(anti, np.stack([x, -x], axis=1), 8000, subtype="FLOAT")
    assert reason(anti).startswith("silent")


def test_truncated_wav_and_flac(tmp_path):
    x = sine(440, 8000, 1.0)
    full = tmp_path / "full.wav"
    sf.write(full, x, 8000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])
    msg = reason(cut, sr=8000, duration=None)
    assert msg.startswith("truncated: header declares 8000 frames")

    flac = tmp_path / "full.flac"
    sf.write(flac, x, 8000, subtype="PCM_16")
    data = flac.read_bytes()
    cutf = tmp_path / "cut.flac"
    cutf.write_bytes(data[: len(data) // 2])
    assert reason(cutf, sr=8000, duration=None).startswith("truncated")


def test_non_finite(tmp_path):
    x = sine(440, 8000, 0.1).astype(np.float32)
    x[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 8000, subtype="FLOAT")
    assert reason(path) == "non-finite samples"


def test_offset_past_end(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, sine(440, 8000, 0.5), 8000, subtype="PCM_16")
    assert "beyond the end" in reason(path, offset=1.0)


@pytest.mark.parametrize(
    "kw", [{"sr": 0}, {"sr": 22050.5}, {"duration": 0}, {"duration": -1.0}, {"offset": -0.1}]
)
def test_bad_parameters(tmp_path, kw):
    path = tmp_path / "ok.wav"
    sf.write(path, sine(440, 8000, 0.1), 8000)
    with pytest.raises(ParameterError):
        load_audio(path, **kw)
