"""The study report: bootstrap intervals, the per-dataset tables and the written files.

Cell summaries with known numbers are written with ``write_cell_summary`` into
temporary cell directories and read back with ``read_cell_summary``; every number
of the tables and files is checked against numpy computed here from the same
arrays.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from advaudio.attacks.tuning import quantile_budget
from advaudio.errors import ParameterError
from advaudio.report.bootstrap import budget_interval, mean_std, percentile_interval, ratio_interval


# --------------------------------------------------------------------------- #
# bootstrap: an independent loop over the documented random stream
# --------------------------------------------------------------------------- #
def _loop_stat(pooled: np.ndarray, threshold: float) -> float:
    budget, reached = quantile_budget(pooled, threshold)
    return budget if reached else math.inf


def _loop_interval(stats: list[float], confidence: float) -> tuple[float, float]:
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(stats), [a, 1.0 - a], method="inverted_cdf")
    return float(lo), float(hi)


def _loop_budget(cells, threshold, resamples, confidence, seed):
    gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(cells))]
    stats = []
    for _ in range(resamples):
        pooled = []
        for cell, rng in zip(cells, gens):
            n = len(cell)
            pooled.append(np.asarray(cell)[np.floor(rng.random(n) * n).astype(int)])
        stats.append(_loop_stat(np.concatenate(pooled), threshold))
    return _loop_interval(stats, confidence)


def _loop_ratio(cells, threshold, resamples, confidence, seed):
    """cells: ((rows_b, norms_b), (rows_a, norms_a)); per cell the union of rows is resampled."""
    unions = []
    for (rb, nb), (ra, na) in cells:
        rows = sorted(set(rb) | set(ra))
        unions.append([(dict(zip(rb, nb)).get(r), dict(zip(ra, na)).get(r)) for r in rows])
    gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(cells))]
    stats = []
    for _ in range(resamples):
        before, after = [], []
        for clips, rng in zip(unions, gens):
            n = len(clips)
            for i in np.floor(rng.random(n) * n).astype(int):
                if clips[i][0] is not None:
                    before.append(clips[i][0])
                if clips[i][1] is not None:
                    after.append(clips[i][1])
        b = _loop_stat(np.array(before), threshold) if before else math.nan
        a = _loop_stat(np.array(after), threshold) if after else math.nan
        stats.append(a / b if math.isfinite(b) else math.nan)
    defined = [s for s in stats if not math.isnan(s)]
    return _loop_interval(defined, confidence), 1.0 - len(defined) / len(stats)


def test_budget_interval_equals_an_independent_loop():
    rng = np.random.default_rng(7)
    cells = [rng.exponential(0.1, 23), rng.exponential(0.3, 9), rng.exponential(0.2, 14)]
    cells[1][[2, 5]] = np.inf  # never fooled
    got = budget_interval(cells, 0.8, resamples=300, confidence=0.9, seed=3)
    lo, hi = _loop_budget(cells, 0.8, 300, 0.9, 3)
    assert (got.low, got.high) == (lo, hi)
    budget, reached = quantile_budget(np.concatenate(cells), 0.8)
    assert (got.budget, got.reached, got.n, got.cells) == (budget, reached, 46, 3)
    assert got.low <= got.budget <= got.high
    # reproducible with the seed, another seed another stream
    again = budget_interval(cells, 0.8, resamples=300, confidence=0.9, seed=3)
    other = budget_interval(cells, 0.8, resamples=300, confidence=0.9, seed=4)
    assert (again.low, again.high) == (got.low, got.high)
    assert (other.low, other.high) != (got.low, got.high)


def test_budget_interval_blocks_of_resamples_give_the_same_stream(monkeypatch):
    import advaudio.report.bootstrap as bs

    rng = np.random.default_rng(2)
    cells = [rng.exponential(1.0, 40), rng.exponential(2.0, 31)]
    whole = budget_interval(cells, 0.9, resamples=257, seed=5)
    monkeypatch.setattr(bs, "_BLOCK_ELEMENTS", 71 * 10)  # 10 resamples per block
    blocked = budget_interval(cells, 0.9, resamples=257, seed=5)
    assert (whole.low, whole.high) == (blocked.low, blocked.high)


def test_budget_interval_covers_a_known_quantile():
    # exponential(1): the 0.9 quantile is ln 10; the 95 % interval should cover it ~95 % of the time
    truth = math.log(10.0)
    rng = np.random.default_rng(11)
    covered = 0
    reps = 200
    for r in range(reps):
        draws = rng.exponential(1.0, 150)
        iv = budget_interval([draws[:70], draws[70:]], 0.9, resamples=300, seed=r)
        covered += iv.low <= truth <= iv.high
    assert 0.88 <= covered / reps <= 0.995


def test_budget_interval_not_reached_is_said_so():
    norms = np.array([0.1, 0.2, 0.3, np.inf, np.inf])  # 60 % fooled
    iv = budget_interval([norms], 0.9, resamples=2000)
    assert not iv.reached and iv.budget == 0.3
    # 0.9 of 5 needs all 5 fooled: a resample reaches only when it draws no never-fooled clip
    assert iv.not_reached == pytest.approx(1.0 - 0.6**5, abs=0.03)
    assert iv.high == math.inf and iv.low == 0.3
    assert budget_interval([[np.inf, np.inf]], 0.5, resamples=50).low == math.inf
    # borderline: 9 of 10 fooled reaches 0.9; resamples with two or more never-fooled clips do not
    border = np.r_[np.linspace(0.1, 0.9, 9), np.inf]
    iv = budget_interval([border], 0.9, resamples=500)
    assert iv.reached and iv.budget == pytest.approx(0.9)
    assert iv.high == math.inf and 0.0 < iv.not_reached < 1.0


def test_budget_interval_tiny_samples_and_errors():
    one = budget_interval([[0.25]], 0.9, resamples=50)
    assert (one.budget, one.low, one.high, one.n) == (0.25, 0.25, 0.25, 1)
    assert budget_interval([[], [0.5, 0.5]], 0.9, resamples=20).cells == 1  # an empty cell is skipped
    with pytest.raises(ParameterError, match="at least one attacked clip"):
        budget_interval([[], []], 0.9)
    with pytest.raises(ParameterError, match="NaN"):
        budget_interval([[0.1, np.nan]], 0.9)
    with pytest.raises(ParameterError, match="threshold"):
        budget_interval([[0.1]], 1.5)
    with pytest.raises(ParameterError, match="resamples"):
        budget_interval([[0.1]], 0.9, resamples=0)
    with pytest.raises(ParameterError, match="confidence"):
        budget_interval([[0.1]], 0.9, confidence=1.0)


def test_ratio_interval_equals_an_independent_loop():
    rng = np.random.default_rng(5)
    cells = []
    for n, shift in ((20, 0), (13, 100)):
        rows = np.arange(shift, shift + n)
        before = (rows[:-3], rng.exponential(0.1, n - 3))  # the rounds attack different clips
        after_rows = rows[2:]
        after_norms = rng.exponential(0.25, n - 2)
        after_norms[0] = np.inf
        cells.append((before, (after_rows, after_norms)))
    got = ratio_interval(cells, 0.75, resamples=250, confidence=0.9, seed=9)
    (lo, hi), undefined = _loop_ratio([((list(b[0]), list(b[1])), (list(a[0]), list(a[1]))) for b, a in cells],
                                      0.75, 250, 0.9, 9)
    assert (got.low, got.high) == pytest.approx((lo, hi), rel=1e-12)
    assert got.undefined == undefined
    b, _ = quantile_budget(np.concatenate([c[0][1] for c in cells]), 0.75)
    a, _ = quantile_budget(np.concatenate([c[1][1] for c in cells]), 0.75)
    assert got.ratio == pytest.approx(a / b)
    assert (got.n, got.n_before, got.n_after) == (33, 27, 29)


def test_ratio_of_identical_rounds_is_exactly_one():
    rng = np.random.default_rng(0)
    cells = [((np.arange(30), norms), (np.arange(30), norms.copy()))
             for norms in (rng.exponential(1.0, 30), np.r_[rng.exponential(1.0, 29), np.inf])]
    iv = ratio_interval(cells, 0.9, resamples=300)
    assert (iv.ratio, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_ratio_when_a_round_does_not_reach():
    rows = np.arange(10)
    before = (rows, np.linspace(0.1, 1.0, 10))
    never = (rows, np.r_[np.linspace(0.5, 2.0, 5), [np.inf] * 5])
    iv = ratio_interval([(before, never)], 0.9, resamples=100)
    b, _ = quantile_budget(before[1], 0.9)
    assert iv.ratio == math.inf and iv.lower_bound == pytest.approx(2.0 / b) and iv.high == math.inf
    undefined = ratio_interval([(never, before)], 0.9, resamples=100)
    assert math.isnan(undefined.ratio) and undefined.undefined == 1.0 and math.isnan(undefined.low)
    with pytest.raises(ParameterError, match="twice"):
        ratio_interval([((np.array([1, 1]), np.array([0.1, 0.2])), before)], 0.9)
    with pytest.raises(ParameterError, match="both rounds"):
        ratio_interval([((rows, before[1]), (np.array([], int), np.array([])))], 0.9)


def test_percentile_interval_and_mean_std():
    stats = np.arange(1.0, 101.0)
    assert percentile_interval(stats, confidence=0.9) == (5.0, 95.0)
    assert percentile_interval([1.0, np.nan, 3.0, np.inf], confidence=0.5) == (1.0, math.inf)
    assert percentile_interval([1.0, np.nan, 3.0, 4.0], confidence=0.5) == (1.0, 4.0)
    assert all(math.isnan(v) for v in percentile_interval([np.nan]))
    v = [0.8, 0.7, 0.95, 0.85]
    assert mean_std(v) == (pytest.approx(np.mean(v)), pytest.approx(np.std(v, ddof=1)), 4)
    m, s, n = mean_std([0.5])
    assert (m, n) == (0.5, 1) and math.isnan(s)
    m, s, n = mean_std([])
    assert n == 0 and math.isnan(m) and math.isnan(s)
