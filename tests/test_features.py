"""Representations: each checked against an independent computation (librosa, Parseval)."""

import json
from pathlib import Path

import librosa
import numpy as np
import pytest
import pywt

from advaudio import features as F
from advaudio.errors import AdvaudioError, ParameterError
from advaudio.features import (
    REPRESENTATIONS,
    FeatureConfig,
    chroma,
    compute_features,
    dwt,
    feature_shapes,
    stft,
    tonnetz,
)
from advaudio.features import _librosa_cqt as lean
from advaudio.features.spectral import centered_stft

SR = 22050
ESC10_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
if not ESC10_COPY.is_dir():  # a clone elsewhere on this machine
    ESC10_COPY = Path("/work/shared/data/esc10")

pytestmark = pytest.mark.filterwarnings(
    # librosa's own warnings on short clips (low CQT octaves) and on silence (tuning)
    "ignore:n_fft=.*is too large:UserWarning",
    "ignore:Trying to estimate tuning:UserWarning",
)


def tonal_noise(n_samples: int, seed: int = 0) -> np.ndarray:
    """A few harmonic tones with vibrato over noise: energy in many STFT, CQT and wavelet bands."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    y = 0.02 * rng.standard_normal(n_samples)
    for f0, amp in ((220.0, 0.3), (277.2, 0.2), (329.6, 0.2), (1760.0, 0.05)):
        y += amp * np.sin(2 * np.pi * f0 * t + 3 * np.sin(2 * np.pi * 2 * t))
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def y() -> np.ndarray:
    return tonal_noise(SR)


# --- stft ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [dict(), dict(n_fft=512, hop_length=128, window="hamming", top_db=None)],
)
def test_stft_is_librosa_log_magnitude_in_absolute_db(y, params):
    full = dict(n_fft=1024, hop_length=512, window="hann", top_db=80.0) | params
    expected = librosa.amplitude_to_db(
        np.abs(
            librosa.stft(
                y, n_fft=full["n_fft"], hop_length=full["hop_length"], window=full["window"]
            )
        ),
        ref=1.0,
        amin=1e-5,
        top_db=full["top_db"],
    )
    got = stft(y, sr=SR, **params)
    assert got.dtype == np.float32
    assert got.shape == (1 + full["n_fft"] // 2, 1 + y.size // full["hop_length"])
    # float32 FFT (librosa's is float64, then cast): magnitudes agree to float32
    # rounding of the peak; dB agree tightly wherever a bin is well above that rounding.
    magnitude, expected_magnitude = 10 ** (got / 20), 10 ** (expected / 20)
    np.testing.assert_allclose(magnitude, expected_magnitude, rtol=1e-5, atol=1e-6 * expected_magnitude.max())
    strong = expected > expected.max() - 40
    np.testing.assert_allclose(got[strong], expected[strong], rtol=0, atol=1e-3)
    assert strong.sum() > 500  # not a vacuous comparison


def test_stft_and_dwt_keep_the_clip_level(y):
    # Absolute dB: a 10x quieter clip is 20 dB lower, not renormalised to the same peak.
    for transform in (stft, dwt):
        loud = transform(y, top_db=None)
        quiet = transform(0.1 * y, top_db=None)
        above_floor = loud > -60
        np.testing.assert_allclose(quiet[above_floor], loud[above_floor] - 20.0, atol=1e-2)


def test_top_db_floors_each_clip_below_its_peak(y):
    got = stft(y, top_db=50.0)
    assert got.min() == pytest.approx(got.max() - 50.0, abs=1e-3)


# --- dwt -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_samples", [128 * 150, SR + 300])  # SR + 300: a tail past the last hop
def test_dwt_power_sums_to_signal_energy(n_samples):
    y = np.random.default_rng(3).standard_normal(n_samples).astype(np.float32)
    energy = dwt(y, power=True)
    assert energy.shape == (128, 1 + n_samples // 512)
    assert energy.min() >= 0
    np.testing.assert_allclose(
        energy.sum(dtype=np.float64), np.sum(y.astype(np.float64) ** 2), rtol=1e-5
    )


@pytest.mark.parametrize("level, bands", [(7, [3, 20, 57, 100, 126]), (4, [0, 5, 15])])
def test_dwt_bands_are_in_frequency_order(level, bands):
    t = np.arange(SR) / SR
    band_width = SR / 2 / 2**level
    for band in bands:
        tone = np.sin(2 * np.pi * (band + 0.5) * band_width * t)
        per_band = dwt(tone, level=level, power=True).sum(axis=1)
        # wavelet packets leak into neighbours, but the band itself holds the most
        assert per_band.argmax() == band, (band, per_band.argsort()[::-1][:3])
        assert per_band[band] > 0.4 * per_band.sum()


@pytest.mark.parametrize("n_samples, level, hop, wavelet", [(SR, 7, 512, "db4"), (5000, 4, 100, "sym5")])
def test_dwt_equals_pywavelets_wavelet_packet_framed(n_samples, level, hop, wavelet):
    """Against pywt.WaveletPacket node by node, in float64, framed independently."""
    y = tonal_noise(n_samples, seed=5)
    frames = 1 + n_samples // hop
    padded = np.zeros(-(-max(hop // 2 + n_samples, frames * hop) // 2**level) * 2**level)
    padded[hop // 2 : hop // 2 + n_samples] = y
    packet = pywt.WaveletPacket(padded, wavelet, mode="periodization", maxlevel=level)
    bands = np.stack([node.data for node in packet.get_level(level, order="freq")])
    bounds = [t * hop // 2**level for t in range(frames)] + [bands.shape[1]]
    expected = np.stack([(bands[:, a:b] ** 2).sum(axis=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)
    got = dwt(y, wavelet=wavelet, level=level, hop_length=hop, power=True)
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6 * expected.max())


def test_dwt_frame_t_is_centered_on_the_stft_frame_t():
    hop, frame = 512, 20
    burst = np.zeros(SR, np.float32)
    center = frame * hop
    burst[center - 32 : center + 32] = np.random.default_rng(0).standard_normal(64)
    per_frame = dwt(burst, hop_length=hop, power=True).sum(axis=0)
    assert per_frame.argmax() == frame
    assert per_frame[frame] > 0.8 * per_frame.sum()
    assert stft(burst, hop_length=hop).max(axis=0).argmax() == frame


def test_dwt_log_mode_is_db_of_the_energies(y):
    energy = dwt(y, power=True).astype(np.float64)
    expected = 10 * np.log10(np.maximum(energy, 1e-10))
    expected = np.maximum(expected, expected.max() - 80.0)
    np.testing.assert_allclose(dwt(y), expected, atol=1e-3)


# --- chroma, tonnetz ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_samples, params",
    [
        (SR, dict()),
        (
            4096 * 3 + 1,
            dict(hop_length=256, bins_per_octave=24, n_octaves=6, fmin=55.0, tuning=0.0),
        ),
    ],
)
def test_chroma_equals_librosa_chroma_cqt(n_samples, params):
    y = tonal_noise(n_samples, seed=1)
    full = dict(hop_length=512, n_chroma=12, bins_per_octave=36, n_octaves=7) | params
    expected = librosa.feature.chroma_cqt(y=y, sr=SR, **full)
    got = chroma(y, sr=SR, **params)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not lean.ACTIVE, reason="the cached-filter CQT is used only on librosa 0.11")
@pytest.mark.parametrize(
    "params",
    [
        dict(hop_length=512, n_bins=252, bins_per_octave=36),
        dict(hop_length=512, n_bins=144, bins_per_octave=36),  # 4 octaves: early downsampling
        dict(hop_length=300, n_bins=84, bins_per_octave=12),  # odd hop after two halvings
        dict(hop_length=512, n_bins=100, bins_per_octave=36),  # a partial lowest octave
    ],
)
def test_cached_filter_cqt_equals_librosa_cqt(y, params):
    # chroma normalises each frame, which would hide a wrong scale; compare the CQT itself
    expected = np.abs(librosa.cqt(y, sr=SR, fmin=F.C1_HZ, tuning=None, **params))
    got = lean.cqt_magnitude(y, sr=SR, fmin=F.C1_HZ, tuning=None, **params)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * expected.max())


@pytest.mark.parametrize("n_fft, hop, window", [(2048, 512, "hann"), (1024, 64, "ones"), (512, 100, "hamming")])
def test_librosa_mode_stft_equals_librosa_stft_bit_for_bit(y, n_fft, hop, window):
    expected = librosa.stft(y, n_fft=n_fft, hop_length=hop, window=window, pad_mode="constant")
    got = centered_stft(y, n_fft=n_fft, hop_length=hop, window=window, as_librosa=True)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def detuned_tones(n_samples: int, cents: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    y = 0.05 * rng.standard_normal(n_samples)
    for midi in rng.integers(45, 90, size=4):
        y += 0.2 * np.sin(2 * np.pi * librosa.midi_to_hz(midi + cents / 100) * t)
    return y.astype(np.float32)


@pytest.mark.skipif(not lean.ACTIVE, reason="the copied tuning estimate is used only on librosa 0.11")
@pytest.mark.parametrize(
    "y, sr, bins_per_octave",
    [
        (detuned_tones(SR * 2, cents=-23.0, seed=0), SR, 36),
        (detuned_tones(SR, cents=11.0, seed=1), SR, 12),
        (detuned_tones(SR, cents=40.0, seed=2).astype(np.float64), SR, 24),
        (detuned_tones(3000, cents=0.0, seed=3), SR, 36),  # shorter than two STFT frames
        (np.random.default_rng(4).standard_normal(16000).astype(np.float32), 16000, 36),
        (np.zeros(4096, np.float32), SR, 36),  # no peak at all: librosa's 0.0
    ],
)
def test_tuning_estimate_equals_librosa_exactly(y, sr, bins_per_octave):
    # Exact, not close: the estimate picks one of 100 filter banks, so any
    # difference would change the chromagram.
    expected = librosa.estimate_tuning(y=y, sr=sr, bins_per_octave=bins_per_octave)
    assert lean.estimate_tuning(y, sr=sr, bins_per_octave=bins_per_octave) == expected


@pytest.mark.realdata
@pytest.mark.skipif(not ESC10_COPY.is_dir(), reason=f"ESC-10 copy not found at {ESC10_COPY}")
def test_real_clips_tuning_and_chroma_equal_librosa():
    from advaudio.datasets import load_clip, read_dataset

    table = read_dataset("esc10", root=ESC10_COPY).subset(limit_per_class=2)
    for clip in table.clips:
        y = load_clip(table, clip, sr=SR)
        expected_tuning = librosa.estimate_tuning(y=y, sr=SR, bins_per_octave=36)
        if lean.ACTIVE:
            assert lean.estimate_tuning(y, sr=SR, bins_per_octave=36) == expected_tuning, clip.path
        # The octave STFTs are float32 (librosa's float64): each frame is normalised to
        # its maximum, so frames 60 dB below the clip's loudest one (digital silence,
        # fades) magnify float32 rounding; everywhere else the chroma is equal to 2e-5.
        got, expected = chroma(y), librosa.feature.chroma_cqt(y=y, sr=SR)
        frame_peak = np.abs(librosa.cqt(y, sr=SR, bins_per_octave=36, n_bins=252, tuning=None)).max(axis=0)
        audible = frame_peak > 1e-3 * frame_peak.max()
        np.testing.assert_allclose(got[:, audible], expected[:, audible], rtol=0, atol=2e-5, err_msg=clip.path)
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-3, err_msg=clip.path)


@pytest.mark.skipif(not lean.ACTIVE, reason="the copied CQT is used only on librosa 0.11")
@pytest.mark.parametrize("n_samples, factor, dtype", [(SR, 2, np.float32), (13783, 2, np.float64), (5001, 4, np.float32)])
def test_cqt_downsampling_equals_librosa_resample_exactly(n_samples, factor, dtype):
    y = np.random.default_rng(n_samples).standard_normal(n_samples).astype(dtype)
    expected = librosa.resample(y, orig_sr=factor, target_sr=1, res_type="soxr_hq", scale=True)
    got = lean.downsample(y, factor=factor)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.skipif(not lean.ACTIVE, reason="the lean path is used only on librosa 0.11")
def test_featurizing_does_not_load_librosas_numba_heavy_modules():
    """Each new Dask worker would pay ~0.7 s to load them (benchmarks/bench_chroma.py)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from advaudio.features import FeatureConfig, compute_features\n"
        "compute_features(np.random.default_rng(0).standard_normal(22050).astype(np.float32), FeatureConfig())\n"
        "print(' '.join(m for m in ('librosa.feature', 'librosa.core.pitch', 'librosa.core.spectrum',"
        " 'librosa.core.audio', 'librosa.core.constantq') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"loaded: {done.stdout.strip()}"


def test_tonnetz_equals_librosa_tonnetz(y):
    from_features = compute_features(y, FeatureConfig(representations=("tonnetz",)))["tonnetz"]
    np.testing.assert_allclose(from_features, librosa.feature.tonnetz(y=y, sr=SR), atol=1e-5)
    chromagram = librosa.feature.chroma_cqt(y=y, sr=SR)
    np.testing.assert_allclose(
        tonnetz(chroma=chromagram), librosa.feature.tonnetz(chroma=chromagram), atol=1e-6
    )


@pytest.mark.skipif(not lean.ACTIVE, reason="the copied CQT is used only on librosa 0.11")
def test_chromagram_is_computed_once_for_chroma_and_tonnetz(y, monkeypatch):
    calls = []
    real = lean.cqt_magnitude
    monkeypatch.setattr(lean, "cqt_magnitude", lambda *a, **k: calls.append(1) or real(*a, **k))
    compute_features(y, FeatureConfig(representations=("tonnetz", "chroma")))
    assert len(calls) == 1


# --- compute_features, feature_shapes, registry ------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        FeatureConfig(),
        FeatureConfig(
            representations=("dwt", "stft", "chroma"),
            n_fft=512,
            hop_length=256,
            dwt_level=5,
            n_chroma=24,
            bins_per_octave=48,
            n_octaves=6,
        ),
    ],
)
def test_feature_shapes_match_computed_features(config):
    for n_samples in (SR, SR + 37, 4096 * 3 + 1):
        got = compute_features(tonal_noise(n_samples, seed=n_samples), config)
        assert list(got) == list(config.representations)
        assert {name: a.shape for name, a in got.items()} == feature_shapes(config, n_samples)
        for array in got.values():
            assert array.dtype == np.float32 and array.flags.c_contiguous
            assert array.shape[1] == 1 + n_samples // config.hop_length
            assert np.isfinite(array).all()


def test_registry_entries_compute_their_representation(y):
    config = FeatureConfig()
    everything = compute_features(y, config)
    for name, representation in REPRESENTATIONS.items():
        np.testing.assert_array_equal(representation(y, config), everything[name])


def test_silent_clip_gives_finite_features():
    for array in compute_features(np.zeros(SR // 2, np.float32), FeatureConfig()).values():
        assert np.isfinite(array).all()


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, SR), np.float32),
        np.zeros(0, np.float32),
        np.arange(SR, dtype=np.int16),
        np.where(np.arange(SR) == 100, np.nan, 0.1).astype(np.float32),
        np.where(np.arange(SR) == 100, np.inf, 0.1).astype(np.float32),
    ],
    ids=["2-D", "empty", "int16", "NaN", "inf"],
)
def test_bad_waveform_raises_parameter_error(bad):
    with pytest.raises(ParameterError):
        compute_features(bad, FeatureConfig())
    for transform in (stft, dwt, chroma):
        with pytest.raises(ParameterError):
            transform(bad)


def test_feature_shapes_rejects_a_non_positive_length():
    with pytest.raises(ParameterError):
        feature_shapes(FeatureConfig(), 0)


# --- FeatureConfig -----------------------------------------------------------------------


def test_config_survives_a_json_round_trip():
    config = FeatureConfig(
        representations=("dwt", "chroma"), hop_length=256, top_db=None, tuning=0.1
    )
    again = FeatureConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.representations == ("dwt", "chroma")
    # numbers are normalised, so the fingerprint does not depend on 80 vs 80.0
    assert json.dumps(FeatureConfig(top_db=80).to_dict()) == json.dumps(FeatureConfig().to_dict())
    with pytest.raises(ParameterError):
        FeatureConfig.from_dict({**config.to_dict(), "n_mels": 128})


def test_config_records_librosa_defaults():
    config = FeatureConfig()
    assert config.fmin == pytest.approx(librosa.note_to_hz("C1"))
    assert feature_shapes(config, SR) == {
        "stft": (513, 44),
        "dwt": (128, 44),
        "chroma": (12, 44),
        "tonnetz": (6, 44),
    }


@pytest.mark.parametrize(
    "bad",
    [
        dict(representations=("mfcc",)),
        dict(representations=()),
        dict(representations="stft"),
        dict(representations=("stft", "stft")),
        dict(hop_length=0),
        dict(hop_length=-512),
        dict(hop_length=True),
        dict(sr=22050.5),
        dict(n_fft=256),  # shorter than the hop
        dict(window="no-such-window"),
        dict(top_db=-10.0),
        dict(top_db=float("nan")),
        dict(amin=0.0),
        dict(wavelet="db99"),
        dict(wavelet="morl"),  # continuous
        dict(dwt_mode="symmetric"),
        dict(dwt_level=0),
        dict(hop_length=64, n_fft=1024),  # fewer samples per hop than 2**dwt_level
        dict(bins_per_octave=30),  # not a multiple of n_chroma
        dict(n_octaves=9),  # above Nyquist
        dict(sr=8000),  # 7 octaves above C1 exceed 4 kHz
        dict(fmin=0.0),
        dict(tuning=float("inf")),
    ],
    ids=repr,
)
def test_bad_config_raises_a_one_line_parameter_error(bad):
    with pytest.raises(ParameterError) as info:
        FeatureConfig(**bad)
    assert isinstance(info.value, AdvaudioError) and "\n" not in str(info.value)


def test_constraints_apply_only_to_requested_representations():
    FeatureConfig(representations=("stft", "dwt"), sr=8000)  # no CQT: any octave count
    FeatureConfig(representations=("stft", "chroma"), hop_length=64, n_fft=256)  # no DWT


# --- provenance: the librosa version and chromagram path enter the store fingerprint ------


def test_store_records_librosa_version_and_chromagram_path(tmp_path, monkeypatch):
    import h5py

    from advaudio import store as st
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store, plan_featurize

    config = FeaturizeConfig(
        dataset="synthetic",
        dataset_options={"clips_per_class": 1, "n_classes": 2, "duration": 0.5},
        features=FeatureConfig(representations=("chroma",)),
    )
    store_dir = featurize_store(config, cache=tmp_path, workers=0, progress=False).store_dir
    recorded = st.Store(store_dir).config
    assert {k: recorded[k] for k in F.provenance()} == F.provenance() == {
        "transform_version": F.TRANSFORM_VERSION,
        "librosa_version": librosa.__version__,
        "chroma_implementation": F.IMPLEMENTATION,
    }
    assert F.IMPLEMENTATION == ("advaudio copy of librosa 0.11" if lean.ACTIVE else "librosa")

    fingerprint = plan_featurize(config, cache=tmp_path).fingerprint
    monkeypatch.setattr(librosa, "__version__", "0.10.2")
    other_librosa = plan_featurize(config, cache=tmp_path).fingerprint
    monkeypatch.setattr(F.representations, "IMPLEMENTATION", "librosa")  # the module provenance() reads
    monkeypatch.setattr(librosa, "__version__", recorded["librosa_version"])
    other_path = plan_featurize(config, cache=tmp_path).fingerprint
    assert len({fingerprint, other_librosa, other_path}) == 3

    # A store of the landed version (no librosa keys in its config) still opens and reads.
    with h5py.File(store_dir / st.MASTER_NAME, "r+") as f:
        old = {k: v for k, v in json.loads(f.attrs["config"]).items()
               if k not in ("librosa_version", "chroma_implementation")}
        f.attrs["config"] = json.dumps(old)
        for key in (st.DIGEST_KEY, "manifest_sha256"):  # nor the digests, recorded since issue 18
            del f.attrs[key]
    store = st.Store(store_dir)
    assert "librosa_version" not in store.config and store.representations["chroma"].shape[0] == 12
    with h5py.File(store.master, "r") as f:
        assert f["features/chroma"].shape[0] == 2
