"""What the report's intervals mean at their edges (advaudio.reporting.bootstrap): the settings they
refuse, what they record, a single clip, an empty cell, a round never reached, and mean ± std.

Found by a mutation run of the module (benchmarks/mutation.py bootstrap): these are the behaviours no
other test pinned.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from advaudio.errors import ParameterError
from advaudio.reporting.bootstrap import budget_interval, mean_std, ratio_interval, resample_statistic


@pytest.mark.parametrize("settings, message", [
    ({"threshold": 0.0}, r"threshold must be in \(0, 1\]"),
    ({"threshold": 1.2}, r"threshold must be in \(0, 1\]"),
    ({"resamples": 0}, "resamples must be a positive integer"),
    ({"resamples": 2.5}, "resamples must be a positive integer"),
    ({"confidence": 0.0}, r"confidence must be in \(0, 1\)"),
    ({"confidence": 1.0}, r"confidence must be in \(0, 1\)"),
])
def test_settings_outside_their_range_are_refused_by_both_intervals(settings, message):
    values = {"threshold": 0.9, **settings}
    threshold = values.pop("threshold")
    with pytest.raises(ParameterError, match=message):
        budget_interval([[0.1, 0.2, 0.3]], threshold, **values)
    with pytest.raises(ParameterError, match=message):
        ratio_interval([(([0, 1], [0.1, 0.2]), ([0, 1], [0.2, 0.3]))], threshold, **values)


def test_the_edges_of_the_settings_are_accepted_and_recorded():
    norms = [0.4, 0.1, 0.3, 0.2]
    b = budget_interval([norms], 1.0, resamples=1, confidence=0.5, seed=3)
    assert (b.threshold, b.confidence, b.resamples, b.cells, b.n) == (1.0, 0.5, 1, 1, 4)
    assert b.budget == 0.4 and b.reached  # threshold 1: every clip must be fooled, the largest norm
    r = ratio_interval([(([0, 1], [1.0, 2.0]), ([0, 1], [3.0, 4.0])), (([5], [1.5]), ([5], [2.5]))], 0.5,
                       resamples=7, confidence=0.8)
    assert (r.threshold, r.confidence, r.resamples, r.cells, r.n) == (0.5, 0.8, 7, 2, 3)


def test_nan_norms_are_refused_naming_the_round():
    with pytest.raises(ParameterError, match="minimal norms holds NaN"):
        budget_interval([[0.1, math.nan]], 0.9)
    with pytest.raises(ParameterError, match="minimal norms before holds NaN"):
        ratio_interval([(([0, 1], [0.1, math.nan]), ([0, 1], [0.2, 0.3]))], 0.9)
    with pytest.raises(ParameterError, match="minimal norms after holds NaN"):
        ratio_interval([(([0, 1], [0.1, 0.2]), ([0, 1], [math.nan, 0.3]))], 0.9)


@pytest.mark.parametrize("cell, message", [
    ((([0, 1, 2], [0.1, 0.2]), ([0, 1], [0.2, 0.3])), "one minimal norm per clip row"),  # before only
    ((([0, 1], [0.1, 0.2]), ([0, 1], [0.2])), "one minimal norm per clip row"),  # after only
    ((([0, 0], [0.1, 0.2]), ([0, 1], [0.2, 0.3])), "attacked twice in one round"),
    ((([0, 1], [0.1, 0.2]), ([1, 1], [0.2, 0.3])), "attacked twice in one round"),
])
def test_a_round_that_does_not_pair_clips_with_norms_is_refused(cell, message):
    with pytest.raises(ParameterError, match=message):
        ratio_interval([cell], 0.9)


def test_no_clip_at_all_is_refused():
    with pytest.raises(ParameterError, match="budget_interval needs at least one attacked clip"):
        budget_interval([[], []], 0.9)
    with pytest.raises(ParameterError, match="ratio_interval needs at least one attacked clip"):
        ratio_interval([(([], []), ([], []))], 0.9)
    with pytest.raises(ParameterError, match="ratio_interval needs attacked clips in both rounds"):
        ratio_interval([(([0, 1], [0.1, 0.2]), ([], []))], 0.9)
    with pytest.raises(ParameterError, match="every cell needs at least one clip to resample"):
        resample_statistic([np.ones((3, 1)), np.ones((0, 1))], lambda b: b.sum(axis=(1, 2)), resamples=4)


def test_an_empty_cell_is_skipped_not_resampled():
    cells = [(([0, 1, 2], [0.1, 0.2, 0.3]), ([0, 1, 2], [0.2, 0.4, 0.6])), (([], []), ([], []))]
    with_empty = ratio_interval(cells, 0.9, resamples=50)
    alone = ratio_interval(cells[:1], 0.9, resamples=50)
    assert with_empty.cells == 1
    assert (with_empty.ratio, with_empty.low, with_empty.high) == (alone.ratio, alone.low, alone.high)
    assert budget_interval([[0.1, 0.2], []], 0.5, resamples=20).cells == 1


def test_one_clip_per_round_gives_its_own_ratio_as_the_whole_interval():
    r = ratio_interval([(([7], [0.25]), ([7], [0.75]))], 0.9, resamples=40)
    assert r.ratio == pytest.approx(3.0, rel=1e-15)
    assert (r.low, r.high) == (r.ratio, r.ratio) and r.undefined == 0.0 and math.isnan(r.lower_bound)


def test_a_round_never_reached_after_gives_an_infinite_ratio_and_a_lower_bound():
    before = ([0, 1, 2, 3], [0.1, 0.2, 0.3, 0.4])
    after = ([0, 1, 2, 3], [0.3, 0.5, math.inf, math.inf])  # half of the clips never fooled after retraining
    r = ratio_interval([(before, after)], 0.9, resamples=30)
    assert r.ratio == math.inf
    # the finite largest fooled norm after over the budget before: how much at least the budget grew
    assert r.lower_bound == pytest.approx(0.5 / 0.4, rel=1e-15)
    reached = ratio_interval([(before, ([0, 1, 2, 3], [0.3, 0.5, 0.6, 0.8]))], 0.9, resamples=30)
    assert math.isfinite(reached.ratio) and math.isnan(reached.lower_bound)


def test_mean_std_is_the_sample_std_and_says_when_it_is_undefined():
    assert mean_std([]) == (pytest.approx(math.nan, nan_ok=True),) * 2 + (0,)
    m, s, n = mean_std([0.7])
    assert (m, n) == (0.7, 1) and math.isnan(s)
    m, s, n = mean_std([0.5, 0.8, math.nan, math.inf])  # only the finite values count
    assert n == 2 and m == pytest.approx(0.65, rel=1e-15) and s == pytest.approx(0.3 / math.sqrt(2), rel=1e-14)
    m, s, n = mean_std([[1.0, 2.0], [3.0, 4.0]])  # any shape, flattened
    assert (m, n) == (2.5, 4) and s == pytest.approx(np.std([1, 2, 3, 4], ddof=1), rel=1e-14)
