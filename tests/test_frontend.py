"""The differentiable front ends equal the store's transforms and views, and have correct gradients."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import pywt
import torch

from advaudio.errors import ParameterError, StoreError
from advaudio.features import FeatureConfig, chroma, dwt, feature_shapes, stft, tonnetz
from advaudio.features._librosa_cqt import downsample
from advaudio.features.differentiable import (
    STFT,
    ChromaCQT,
    Downsample,
    WaveletPacketEnergy,
)
from advaudio.features.differentiable import tonnetz as torch_tonnetz
from advaudio.features.spectral import _wavelet_packet_bands
from advaudio.frontend import FrontEnd, from_store, store_waveforms
from advaudio.views import View, fit_view

ESC10_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
if not ESC10_COPY.is_dir():  # a clone elsewhere on this machine
    ESC10_COPY = Path("/work/shared/data/esc10")

# The contract, in model-input units ([0, 1]).
TOLERANCE = {"stft": 1e-3, "dwt": 1e-3, "chroma": 1e-2, "tonnetz": 1e-2}


def _noise(n: int, seed: int, *, silent: slice | None = None) -> np.ndarray:
    """Coloured noise with a decaying tone, optionally with a stretch of digital silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 22050
    y = 0.2 * np.sin(2 * np.pi * 440 * t) * np.exp(-t) + 0.05 * np.cumsum(rng.standard_normal(n)) / np.sqrt(n)
    y += 0.01 * rng.standard_normal(n)
    if silent is not None:
        y[silent] = 0.0
    return y.astype(np.float32)


# --------------------------------------------------------------------------- #
# Each transform against the store's
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("n", [110250, 55125, 3001, 37, 5])
def test_downsample_is_the_stores_soxr_call(factor, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    want = downsample(x, factor=factor)
    got = Downsample(factor=factor)(torch.from_numpy(x)[None].double())[0].numpy()
    assert got.shape == want.shape
    # soxr filters in float32: its own rounding is ~1e-7 of the signal's scale (~4 here)
    np.testing.assert_allclose(got, want, atol=5e-6)


@pytest.mark.parametrize("wavelet,level,hop,n", [("db4", 7, 512, 22050), ("haar", 3, 64, 1000),
                                                 ("sym5", 4, 128, 300), ("coif3", 5, 256, 5000),
                                                 ("db10", 6, 64, 64), ("db4", 2, 8, 9)])
def test_wavelet_packet_is_pywt_periodization(wavelet, level, hop, n):
    module = WaveletPacketEnergy(wavelet=wavelet, level=level, hop_length=hop)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    front, length, _ = module._frames(n)
    padded = np.zeros(length)
    padded[front : front + n] = x
    want = _wavelet_packet_bands(padded, wavelet=wavelet, mode="periodization", level=level)
    got = module.bands(torch.from_numpy(x)[None].double())[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-12)
    # and pywt's own tree, in frequency order
    tree = pywt.WaveletPacket(padded, wavelet, mode="periodization", maxlevel=level)
    np.testing.assert_allclose(got, np.stack([node.data for node in tree.get_level(level, order="freq")]),
                               atol=1e-12)
    db = module(torch.from_numpy(x)[None].double())[0].numpy()
    np.testing.assert_allclose(db, dwt(x, wavelet=wavelet, level=level, hop_length=hop), atol=2e-4)


def test_stft_is_the_stores():
    y = _noise(22050, 0, silent=slice(15000, None))
    got = STFT()(torch.from_numpy(y)[None])[0].numpy()
    want = stft(y)
    assert got.shape == want.shape
    # float32 FFTs: bins 80 dB under their frame's peak differ by ~1e-3 dB
    np.testing.assert_allclose(got, want, atol=2e-2)
    assert np.abs(got - want).mean() < 1e-5


@pytest.mark.parametrize("floor_db", [None, 80.0])
def test_chroma_and_tonnetz_are_the_stores(floor_db):
    y = _noise(33075, 1)  # no silence: every frame is well-conditioned, with or without a floor
    module = ChromaCQT(floor_db=floor_db)
    tuning = module.estimate_tuning(y[None])
    got = module(torch.from_numpy(y)[None].double(), tuning)
    want = chroma(y, floor_db=floor_db)
    np.testing.assert_allclose(got[0].numpy(), want, atol=1e-4)
    np.testing.assert_allclose(torch_tonnetz(got, floored=floor_db is not None)[0].numpy(),
                               tonnetz(chroma=want, floored=floor_db is not None), atol=1e-4)


def test_chroma_floor_is_librosa_above_it_and_conditioned_below():
    """Frames within the floor are librosa's; silent frames (normalised noise in librosa's chroma) are ~0."""
    y = _noise(44100, 2, silent=slice(4000, None))
    plain, floored = chroma(y), chroma(y, floor_db=80.0)
    level = floored.max(axis=0)
    loud = level > 1 - 1e-6
    assert loud.sum() > 5 and (~loud).sum() > 20
    np.testing.assert_allclose(floored[:, loud], plain[:, loud], atol=1e-6)
    assert plain[:, ~loud].max(axis=0).min() == pytest.approx(1.0)  # librosa: noise brought to full scale
    assert level[~loud].max() < 1.0
    # the floor keeps the front end's float32 and float64 versions together in every frame
    module = ChromaCQT(floor_db=80.0)
    tuning = module.estimate_tuning(y[None])
    x = torch.from_numpy(y)[None]
    np.testing.assert_allclose(module(x, tuning).double().numpy(), module(x.double(), tuning).numpy(), atol=5e-3)
    np.testing.assert_allclose(module(x.double(), tuning)[0].numpy(), floored, atol=5e-3)


def test_chroma_floor_is_recorded_only_when_set():
    """Stores made before the option keep their fingerprint: the key is absent at its default."""
    assert "chroma_floor_db" not in FeatureConfig().to_dict()
    config = FeatureConfig(chroma_floor_db=80)
    assert config.to_dict()["chroma_floor_db"] == 80.0
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ParameterError, match="chroma_floor_db"):
        FeatureConfig(chroma_floor_db=-3)


# --------------------------------------------------------------------------- #
# Views of a store: FrontEnd against View.read
# --------------------------------------------------------------------------- #
def _featurize(cache, **options):
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store
    from advaudio.store import Store

    result = featurize_store(FeaturizeConfig(**options), cache=cache, workers=0, progress=False)
    return Store(result.store_dir)


@pytest.fixture(scope="module")
def floored_store(tmp_path_factory):
    """All four representations of 12 one-second synthetic clips, chroma floored at 80 dB."""
    return _featurize(tmp_path_factory.mktemp("cache"), dataset="synthetic",
                      dataset_options={"clips_per_class": 3, "duration": 1.0, "n_classes": 4},
                      features=FeatureConfig(chroma_floor_db=80.0))


_FEATURES: dict = {}


def _features(store) -> dict[str, torch.Tensor]:
    """Every representation of every clip of ``store`` from the front end (once per store), from the
    waveforms decoded as featurize decoded them."""
    key = str(store.directory)
    if key not in _FEATURES:
        view = fit_view(store, "+".join(store.representations), rows=np.arange(len(store)))
        front_end = from_store(store, view)
        with torch.no_grad():
            _FEATURES[key] = front_end.features(torch.from_numpy(store_waveforms(store, np.arange(len(store)))))
    return _FEATURES[key]


def _compare(store, spec, input_size, *, train_rows=None):
    """(max |front end - View.read| per clip, front-end inputs, stored inputs) for ``spec``, all clips."""
    rows = np.arange(len(store))
    view = fit_view(store, spec, rows=rows if train_rows is None else train_rows, input_size=input_size)
    with torch.no_grad():
        got = from_store(store, view).compose(_features(store))
    with store.reader() as reader:
        want = view.read(reader, rows)
    assert got.shape == want.shape == (len(rows),) + view.output_shape
    return (got - want).abs().flatten(1).amax(1), got, want


@pytest.mark.parametrize("spec", ["stft", "dwt", "chroma", "tonnetz", "dwt+chroma", "stft+chroma"])
@pytest.mark.parametrize("input_size", [None, (32, 48)])
def test_front_end_is_the_view(floored_store, spec, input_size):
    error, got, _ = _compare(floored_store, spec, input_size)
    tolerance = max(TOLERANCE[name] for name in spec.split("+"))
    assert float(error.max()) <= tolerance
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0


def test_front_end_rows_of_each_representation_keep_their_tolerance(floored_store):
    """In an unresized composed view the STFT rows hold the STFT's tolerance, the chroma rows theirs."""
    _, got, want = _compare(floored_store, "stft+chroma", None)
    bands = floored_store.representations["stft"].shape[0]
    assert float((got - want)[:, :, :bands].abs().max()) <= TOLERANCE["stft"]
    assert float((got - want)[:, :, bands:].abs().max()) <= TOLERANCE["chroma"]


def test_front_end_refuses_what_does_not_fit(floored_store):
    view = fit_view(floored_store, "stft", rows=np.arange(len(floored_store)))
    front_end = from_store(floored_store, view)
    with pytest.raises(ParameterError, match="store's length"):
        front_end(torch.zeros(2, 1000))
    with pytest.raises(ParameterError, match="does not compute"):
        FrontEnd(view, FeatureConfig(representations=("dwt",)))
    floored_store.config["transform_version"] = 1  # a store of other transforms
    try:
        with pytest.raises(StoreError, match="transform_version"):
            from_store(floored_store, view)
    finally:
        floored_store.config["transform_version"] = 2


def test_front_end_warns_on_an_unfloored_chromagram(store):
    """conftest's store keeps librosa's chroma normalisation: the front end says what that costs."""
    view = fit_view(store, "chroma", rows=np.arange(len(store)))
    with pytest.warns(UserWarning, match="chroma_floor_db=80"):
        from_store(store, view)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_store(store, fit_view(store, "stft", rows=np.arange(len(store))))


# --------------------------------------------------------------------------- #
# Gradients
# --------------------------------------------------------------------------- #
def _short_view(config: FeatureConfig, spec: str, n: int, *, input_size=None) -> View:
    """A view with hand-set normalisation that clips some values and passes most."""
    names = tuple(spec.split("+"))
    shapes = feature_shapes(config, n)
    ranges = {"stft": (-60.0, 10.0), "dwt": (-60.0, 10.0), "chroma": (0.05, 1.0), "tonnetz": (-0.5, 0.5)}
    return View(representations=names, shapes=tuple(shapes[k] for k in names), input_size=input_size,
                low=tuple(ranges[k][0] for k in names), high=tuple(ranges[k][1] for k in names))


@pytest.mark.parametrize("spec,input_size", [("stft", None), ("dwt", None), ("chroma", None), ("tonnetz", None),
                                             ("dwt+chroma", (16, 6)), ("stft+chroma", (24, 5))])
def test_gradcheck(spec, input_size):
    n = 2048  # 5 frames at hop 512: a short clip, the store's defaults otherwise
    config = FeatureConfig(chroma_floor_db=80.0)
    front_end = FrontEnd(_short_view(config, spec, n, input_size=input_size), config, tuning=0.1)
    y = torch.from_numpy(_noise(n, 3)).double()[None].requires_grad_()
    assert torch.autograd.gradcheck(front_end, (y,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


@pytest.mark.parametrize("name", ["stft", "dwt", "chroma", "chroma-floored", "tonnetz"])
def test_gradcheck_transforms(name):
    """Each transform alone, without the view's clipping (which zeroes some gradients)."""
    modules = {"stft": STFT(), "dwt": WaveletPacketEnergy(), "chroma": ChromaCQT(),
               "chroma-floored": ChromaCQT(floor_db=80.0), "tonnetz": ChromaCQT(floor_db=80.0)}
    module = modules[name]
    if isinstance(module, ChromaCQT):
        def transform(y, module=module):
            chroma = module(y, 0.1)
            return torch_tonnetz(chroma, floored=True) if name == "tonnetz" else chroma
    else:
        transform = module
    y = torch.from_numpy(_noise(2048, 5)).double()[None].requires_grad_()
    assert torch.autograd.gradcheck(transform, (y,), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def test_fixed_tuning_of_the_store_is_used():
    """A store made with a fixed tuning: the front end uses it, whatever it is given."""
    config = FeatureConfig(tuning=0.2, chroma_floor_db=80.0)
    n = 22050
    y = _noise(n, 6)
    front_end = FrontEnd(_short_view(config, "chroma+tonnetz", n), config, tuning=-0.3)
    assert front_end.tuning == 0.2 and front_end.estimate_tuning(y[None]) is None
    with torch.no_grad():
        feats = front_end.features(torch.from_numpy(y)[None].double(), tuning=[0.4])
    want = chroma(y, tuning=0.2, floor_db=80.0)
    np.testing.assert_allclose(feats["chroma"][0].numpy(), want, atol=1e-4)
    np.testing.assert_allclose(feats["tonnetz"][0].numpy(), tonnetz(chroma=want, floored=True), atol=1e-4)


def test_gradients_reach_the_waveform_through_every_representation():
    n = 4096
    config = FeatureConfig(chroma_floor_db=80.0)
    front_end = FrontEnd(_short_view(config, "stft+dwt+chroma+tonnetz", n), config, tuning=0.0)
    y = torch.from_numpy(_noise(n, 4)).double()[None].requires_grad_()
    out = front_end(y)
    bands = np.cumsum([0] + [s[0] for s in front_end.view.shapes])
    for a, b in zip(bands[:-1], bands[1:]):
        (grad,) = torch.autograd.grad(out[:, :, a:b].sum(), y, retain_graph=True)
        assert torch.isfinite(grad).all() and float(grad.abs().max()) > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_front_end_on_cuda_equals_cpu(floored_store):
    view = fit_view(floored_store, "stft+chroma", rows=np.arange(len(floored_store)), input_size=(32, 32))
    front_end = from_store(floored_store, view)
    x = torch.from_numpy(store_waveforms(floored_store, np.arange(4)))
    tuning = front_end.estimate_tuning(x)
    with torch.no_grad():
        cpu = front_end(x, tuning=tuning)
        gpu = front_end(x.cuda(), tuning=tuning)
    assert gpu.device.type == "cuda"
    assert float((gpu.cpu() - cpu).abs().max()) <= 1e-3


# --------------------------------------------------------------------------- #
# The contract on real clips
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def esc10_store(tmp_path_factory):
    """Two ESC-10 clips per class (20 real clips), chroma floored at 80 dB, as `advaudio featurize` makes it."""
    return _featurize(tmp_path_factory.mktemp("esc10"), dataset="esc10", root=str(ESC10_COPY),
                      limit_per_class=2, features=FeatureConfig(chroma_floor_db=80.0))


@pytest.mark.realdata
@pytest.mark.skipif(not ESC10_COPY.is_dir(), reason=f"ESC-10 copy not found at {ESC10_COPY}")
@pytest.mark.parametrize("spec", ["stft", "dwt", "chroma", "tonnetz", "dwt+chroma", "stft+chroma"])
def test_contract_on_real_clips(esc10_store, spec):
    """front_end(waveform) equals the stored view within the contract; a model predicts the same classes."""
    from tiny_cnn import make_net

    store = esc10_store
    train = store.select(folds=[1])  # normalisation fitted on one fold, checked on both
    for input_size in (None, (64, 64)):
        error, got, want = _compare(store, spec, input_size, train_rows=train)
        tolerance = max(TOLERANCE[name] for name in spec.split("+"))
        assert float(error.max()) <= tolerance, f"{spec} {input_size}: max |Δ| {float(error.max()):.2e}"
    torch.manual_seed(0)
    model = make_net().eval()  # random weights: any disagreement is the inputs'
    with torch.no_grad():
        agree = (model(got).argmax(1) == model(want).argmax(1)).float().mean()
    assert float(agree) >= 0.99
