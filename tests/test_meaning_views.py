"""What the view's normalisation means: the percentiles it maps to 0 and 1, computed from which
values, and what a constant representation becomes.

Expected values come from numpy (``np.percentile``, min/max) over the very values written to a
small HDF5 file here.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from advaudio.errors import ParameterError
from advaudio.store import FeatureReader
from advaudio.views import _histogram_quantile, fit_view


class ArrayStore:
    """A feature store made of given arrays: what :func:`fit_view` reads of a store."""

    def __init__(self, path, arrays, folds):
        with h5py.File(path, "w") as f:
            for name, a in arrays.items():
                f.create_dataset(f"features/{name}", data=np.asarray(a, np.float32), chunks=(1,) + a.shape[1:])
        self.path, self.directory, self.fingerprint = path, path.parent, "arrays"
        self.representations = {name: SimpleNamespace(shape=a.shape[1:]) for name, a in arrays.items()}
        self.folds = np.asarray(folds)

    def __len__(self):
        return len(self.folds)

    def reader(self):
        return FeatureReader(self.path)


def test_the_histogram_quantile_is_numpy_s_when_each_bin_holds_evenly_spread_values():
    # c values per bin at the centres of c equal parts of it: then interpolating inside a bin is exact,
    # and the histogram's percentile equals numpy's (linear) one to float rounding wherever numpy
    # interpolates between two values of one bin (or at a bin's top edge)
    bins, lo, hi = 50, -3.0, 7.0
    width = (hi - lo) / bins
    for c, ranks in ((1, (1.25, 7.25, 20.5, 37.4, 48.5)), (3, (1.25, 7.25, 20.5, 113.4, 148.5))):
        values = np.array([lo + width * (j + (i + 0.5) / c) for j in range(bins) for i in range(c)])
        counts = np.full(bins, c)
        for rank in ranks:
            q = rank / (values.size - 1)
            got = _histogram_quantile(counts, lo, hi, q, values.size)
            assert got == pytest.approx(np.percentile(values, 100 * q), abs=1e-12), (c, rank)
        # the ends of the histogram's range: the data's min and max in fit_view
        assert _histogram_quantile(counts, lo, hi, 0.0, values.size) == lo
        assert _histogram_quantile(counts, lo, hi, 1.0, values.size) == hi


def test_the_histogram_quantile_follows_uneven_bins():
    # 1 value in bin 0, 5 in bin 1, 2 in bin 2, 0 in bin 3, 2 in bin 4 (10 values, ranks 0..9)
    counts = np.array([1, 5, 2, 0, 2])
    lo, hi = 0.0, 5.0
    # rank q·9 falls in the bin whose cumulative count first exceeds it, at (rank - before + 0.5) / count
    # of its width (at most its top edge: rank 7.5 lies between bin 2's last value and bin 4's first)
    for q, want in ((0.0, 0.0), (1 / 9, 1 + 0.5 / 5), (5 / 9, 1 + 4.5 / 5), (6 / 9, 2 + 0.5 / 2),
                    (7.5 / 9, 3.0), (8 / 9, 4 + 0.5 / 2), (1.0, 5.0)):
        assert _histogram_quantile(counts, lo, hi, q, 10) == pytest.approx(want, abs=1e-12), q


def _heavy_tailed(rng, shape):
    x = rng.standard_t(2, size=shape)
    x[..., :3] = -100.0  # a numerical floor, as digital silence is in dB
    return x.astype(np.float32)


@pytest.mark.parametrize("bins", [64, 4096])
def test_fitted_percentiles_are_numpy_s_to_one_bin_of_the_fitted_rows_only(tmp_path, bins):
    rng = np.random.default_rng(0)
    a = _heavy_tailed(rng, (30, 8, 20))
    b = (rng.random((30, 3, 20)) * 0.5).astype(np.float32)
    b[:, 0] = 0.25  # ties
    store = ArrayStore(tmp_path / "a.h5", {"a": a, "b": b}, folds=np.repeat([1, 2, 3], 10))
    rows = np.array([17, 3, 3, 25, 8, 12, 0, 29, 21, 9, 14])  # any order; duplicates count once
    for percentiles in ((0.5, 99.5), (5.0, 60.0), (0.0, 100.0)):
        view = fit_view(store, "a+b", rows=rows, percentiles=percentiles, bins=bins, chunk_clips=4)
        used = np.unique(rows)
        for i, data in enumerate((a[used], b[used])):
            width = float(data.max() - data.min()) / bins
            ordered = np.sort(data.ravel()).astype(np.float64)
            for got, p in zip((view.low[i], view.high[i]), percentiles):
                # within one bin of the lower of the two values numpy interpolates between
                rank = p / 100 * (ordered.size - 1)
                below, above = ordered[math.floor(rank)], ordered[math.ceil(rank)]
                tolerance = width + (above - below) + 1e-6 * width
                assert got == pytest.approx(np.percentile(data, p), abs=tolerance), (i, p)
            if percentiles == (0.0, 100.0):  # the ends are the data's min and max, exactly
                assert (view.low[i], view.high[i]) == (float(data.min()), float(data.max()))
        assert view.fitted_on["rows"] == 10 and view.fitted_on["folds"] == [1, 2, 3]
        assert view.percentiles == percentiles
    # the other rows would give other numbers: the fit reads the rows it is given
    others = fit_view(store, "a+b", rows=np.setdiff1d(np.arange(30), rows), bins=bins)
    assert others.low[0] != view.low[0] or others.high[0] != view.high[0]
    only_fold_1 = fit_view(store, "a", rows=np.arange(10), bins=bins)
    assert only_fold_1.fitted_on == {"rows": 10, "folds": [1], "store_fingerprint": "arrays"}


def test_a_constant_representation_maps_to_zero_and_a_nearly_constant_one_to_its_range(tmp_path):
    const = np.full((6, 4, 5), 2.5, np.float32)
    nearly = np.zeros((6, 4, 5), np.float32)
    nearly[0, 0, 0], nearly[5, 3, 4] = -1.0, 3.0  # 2 of 120 values: both percentiles land on 0
    store = ArrayStore(tmp_path / "c.h5", {"const": const, "nearly": nearly}, folds=[1] * 3 + [2] * 3)
    view = fit_view(store, "const+nearly", rows=np.arange(6), percentiles=(2.0, 98.0))
    assert (view.low[0], view.high[0]) == (2.5, 3.5)  # any positive scale: everything maps to 0
    assert (view.low[1], view.high[1]) == (-1.0, 3.0)  # the full range instead of a zero-width one
    with FeatureReader(store.path) as reader:
        x = view.read(reader, np.arange(6))
    torch.testing.assert_close(x[:, 0, :4], torch.zeros(6, 4, 5))
    torch.testing.assert_close(x[:, 0, 4:], torch.from_numpy((nearly + 1.0) / 4.0))


def test_fit_view_refuses_what_has_no_percentiles(tmp_path):
    store = ArrayStore(tmp_path / "e.h5", {"a": np.zeros((3, 2, 2), np.float32)}, folds=[1, 2, 3])
    for bad in ((50, 50), (-1, 50), (10, 101)):
        with pytest.raises(ParameterError, match="percentiles"):
            fit_view(store, "a", rows=[0, 1], percentiles=bad)
    with pytest.raises(ParameterError, match="at least one"):
        fit_view(store, "a", rows=[])
    for rows in ([-1, 0], [0, 3]):
        with pytest.raises(ParameterError, match="out of range"):
            fit_view(store, "a", rows=rows)
