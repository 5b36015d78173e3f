"""Views: appended representations, normalisation from training folds, model space in [0, 1]."""

import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import advaudio.views as views
from advaudio.errors import ParameterError, StoreError
from advaudio.store import FeatureReader, read_rows
from advaudio.views import HISTOGRAM_BINS, View, fit_view, parse_input_size, parse_view


@pytest.fixture(scope="module")
def train_rows(store):
    return store.select(exclude_folds=[5])


def _normalise(a, lo, hi):
    return np.clip((a - lo) / (hi - lo), 0, 1)


def test_concatenation_order_and_shapes(store, train_rows):
    view = fit_view(store, "stft+chroma", rows=train_rows)
    (sb, sf), (cb, _) = store.representations["stft"].shape, store.representations["chroma"].shape
    assert view.output_shape == (1, sb + cb, sf)
    rows = np.arange(6)
    x = view.read(store.reader(), rows)
    assert x.shape == (6, 1, sb + cb, sf) and x.dtype == torch.float32
    stft = _normalise(store.read("stft", rows), view.low[0], view.high[0])
    chroma = _normalise(store.read("chroma", rows), view.low[1], view.high[1])
    np.testing.assert_allclose(x[:, 0, :sb].numpy(), stft, atol=1e-6)  # STFT rows on top
    np.testing.assert_allclose(x[:, 0, sb:].numpy(), chroma, atol=1e-6)  # chroma appended under them

    reverse = fit_view(store, "chroma+stft", rows=train_rows)
    y = reverse.read(store.reader(), rows)
    torch.testing.assert_close(y[:, :, :cb], x[:, :, sb:])
    torch.testing.assert_close(y[:, :, cb:], x[:, :, :sb])

    resized = fit_view(store, "stft+chroma", rows=train_rows, input_size="32x20")
    z = resized.read(store.reader(), rows)
    assert z.shape == (6, 1, 32, 20) and resized.output_shape == (1, 32, 20)
    expected = F.interpolate(x, size=(32, 20), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(z, expected.clamp(0, 1))


def test_normalisation_statistics_come_from_training_folds_only(store, train_rows):
    view = fit_view(store, "stft+chroma", rows=train_rows)
    assert view.fitted_on["folds"] == [1, 2, 3, 4]
    assert view.fitted_on["rows"] == train_rows.size
    everything = np.arange(len(store))
    for i, name in enumerate(view.representations):
        data = store.read(name, train_rows)  # independently, in memory, with numpy
        lo, hi = (float(v) for v in np.percentile(data, view.percentiles))
        # two histogram bins; a Python float (pytest >= 9 rejects a numpy scalar as a tolerance)
        tolerance = 2 * float(data.max() - data.min()) / HISTOGRAM_BINS
        assert view.low[i] == pytest.approx(lo, abs=tolerance)
        assert view.high[i] == pytest.approx(hi, abs=tolerance)
        # Statistics over all folds differ: the test fold does leave a trace when it is included.
        all_lo, all_hi = np.percentile(store.read(name, everything), view.percentiles)
        assert (abs(all_lo - lo), abs(all_hi - hi)) != (0.0, 0.0)
    on_all = fit_view(store, "stft+chroma", rows=everything)
    assert on_all.low != view.low or on_all.high != view.high


def test_fit_streams_in_chunks(store, train_rows):
    whole = fit_view(store, "stft", rows=train_rows)
    chunked = fit_view(store, "stft", rows=train_rows[::-1], chunk_clips=3)  # order does not matter
    assert chunked.low == pytest.approx(whole.low, abs=1e-9) and chunked.high == pytest.approx(whole.high, abs=1e-9)
    exact = fit_view(store, "stft", rows=train_rows, percentiles=(0, 100))
    data = store.read("stft", train_rows)
    assert exact.low[0] == pytest.approx(float(data.min())) and exact.high[0] == pytest.approx(float(data.max()))


def test_outputs_in_unit_interval(store, train_rows):
    for spec, size in (("stft", None), ("stft+chroma", (32, 32)), ("chroma", (16, 44))):
        view = fit_view(store, spec, rows=train_rows, input_size=size)
        x = view.read(store.reader(), np.arange(len(store)))  # test fold included: clipped, not out of range
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        if size is None:  # the percentiles clip at both ends (a resize may average the extremes away)
            assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_unknown_representation_is_a_store_error_naming_what_it_has(store, train_rows):
    with pytest.raises(StoreError) as err:
        fit_view(store, "dwt+chroma", rows=train_rows)
    message = str(err.value)
    assert "'dwt'" in message and "stft" in message and "chroma" in message
    view = fit_view(store, "stft", rows=train_rows)
    other = View.from_dict({**view.to_dict(), "representations": ["tonnetz"],
                            "normalisation": {"stats": {"tonnetz": {"low": 0, "high": 1}}}})
    with pytest.raises(StoreError, match="tonnetz"):
        other.check_store(store)
    with store.reader() as f, pytest.raises(StoreError, match="tonnetz"):
        other.read(f, [0, 1])


def test_view_round_trips_through_json(store, train_rows):
    view = fit_view(store, "stft+chroma", rows=train_rows, input_size=48)
    again = View.from_dict(json.loads(json.dumps(view.to_dict())))
    assert again == view and again.input_size == (48, 48)
    rows = [7, 3, 3, 0]  # any order, duplicates: returned as asked
    with store.reader() as f:
        x = again.read(f, rows)
    arrays = {name: store.read(name, np.arange(len(store)))[rows] for name in view.representations}
    torch.testing.assert_close(x, view.transform(arrays))


def test_read_rows_is_sorted_and_chunk_aligned(store):
    with store.open() as f:
        ds = f["features/stft"]
        rows = np.array([0, 1, 2, 9, 10, 30])
        np.testing.assert_array_equal(read_rows(ds, rows), ds[rows.tolist()])
        with pytest.raises(ParameterError):
            read_rows(ds, [3, 1])


def test_spec_and_size_parsing():
    assert parse_view("dwt+chroma") == ("dwt", "chroma")
    assert parse_view(" stft ") == ("stft",)
    for bad in ("", "stft+", "stft+stft"):
        with pytest.raises(ParameterError):
            parse_view(bad)
    assert parse_input_size("128x96") == (128, 96) and parse_input_size(64) == (64, 64)
    assert parse_input_size("none") is None
    with pytest.raises(ParameterError):
        parse_input_size("12x0")


def test_non_finite_store_values_are_reported(tmp_path, store, train_rows):
    view = fit_view(store, "chroma", rows=train_rows)
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        data = store.read("chroma", np.arange(4))
        data[1, 0, 0] = np.nan  # what a missing shard reads as through the virtual dataset
        f.create_dataset("features/chroma", data=data)
    with pytest.raises(StoreError, match="NaN"):
        view.read(FeatureReader(path), [0, 1])


def test_reader_fast_and_fallback_paths_agree(tmp_path, store, train_rows):
    """Raw chunk reads (uncompressed, one chunk per clip) equal HDF5's own reads in every layout."""
    data = store.read("stft", np.arange(len(store)))
    path = tmp_path / "layouts.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("features/per_clip", data=data, chunks=(1,) + data.shape[1:])  # fast path
        f.create_dataset("features/gzip", data=data, chunks=(1,) + data.shape[1:], compression="gzip")
        f.create_dataset("features/blocks", data=data, chunks=(4, 64, 44))
        f.create_dataset("features/contiguous", data=data)
    rows = np.array([0, 1, 2, 7, 20, 33, 47])
    with FeatureReader(path) as reader:
        for name in ("per_clip", "gzip", "blocks", "contiguous"):
            out = np.full((rows.size,) + data.shape[1:], -1.0, np.float32)
            reader.read_into(name, rows, out)
            np.testing.assert_array_equal(out, data[rows], err_msg=name)
        for _ in range(20):  # h5py's short-lived Dataset objects must not share cached answers
            assert reader._is_fast(reader.group["per_clip"]) and not reader._is_fast(reader.group["gzip"])
            assert reader._chunk_map(reader.group["gzip"]) is None
            assert reader._chunk_map(reader.group["per_clip"]) is not None  # memory-mapped chunk copies
        reader._maps[reader._key(reader.group["per_clip"])] = None  # no mapping: raw chunk reads through HDF5
        out = np.zeros((rows.size,) + data.shape[1:], np.float32)
        np.testing.assert_array_equal(reader.read_into("per_clip", rows, out), data[rows])
    # Through the store's virtual datasets: resolved to the shards, same values as HDF5 gives.
    with store.reader() as reader:
        buffer = np.zeros((rows.size, 600, 44), np.float32)
        reader.read_into("stft", rows, buffer[:, 10:523])  # into a slice of a larger buffer
        np.testing.assert_array_equal(buffer[:, 10:523], data[rows])
        assert not buffer[:, :10].any() and not buffer[:, 523:].any()
        assert all(isinstance(seg[2], tuple) for seg in reader._plan("stft"))  # shard by shard


def test_resize_matches_torch_interpolate():
    x = torch.rand(5, 70, 30)
    for size in ((32, 32), (128, 20), (70, 64), (16, 30)):
        expected = F.interpolate(x[:, None], size=size, mode="bilinear", align_corners=False, antialias=True)[:, 0]
        torch.testing.assert_close(views.resize(x, size), expected)
