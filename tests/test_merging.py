"""The arithmetic of a merge (:mod:`advaudio.attacks.merging`) against numpy, computed independently.

Three slices of per-clip minimal budgets (some clips not attacked, some never fooled, each
with the lower end of its bracket) are merged; every number of the union is recomputed
here from the concatenated arrays with plain numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from advaudio.attacks.merging import (
    common_curve,
    slice_sizes,
    union_budget,
    union_notes,
    union_precision,
    union_result,
)
from advaudio.attacks.results import Note, excluded_note


def _slice_arrays(rng, n: int) -> dict[str, np.ndarray]:
    attacked = rng.random(n) > 0.15
    minimal = np.round(rng.uniform(0.01, 0.2, n), 3)  # rounded: ties, as a per-clip search makes them
    minimal[rng.random(n) < 0.1] = np.inf  # never fooled up to the largest ε
    minimal[~attacked] = np.nan
    low = np.where(np.isfinite(minimal), minimal * rng.uniform(0.5, 1.0, n), 0.2)
    low[~attacked] = np.nan
    success = attacked & np.isfinite(minimal)
    norms = np.where(success, minimal * 0.9, 0.0)
    return {
        "adversarial": rng.random((n, 1, 2, 3)).astype(np.float32), "label": np.zeros(n, np.int64),
        "predicted": np.ones(n, np.int64), "target": np.full(n, 2, np.int64), "attacked": attacked,
        "success": success, "l1": 3 * norms, "l2": 2 * norms, "linf": norms, "snr_db": np.full(n, 30.0),
        "minimal_budget": minimal, "minimal_budget_low": low,
    }


@pytest.fixture(scope="module")
def union():
    rng = np.random.default_rng(7)
    parts = [_slice_arrays(rng, n) for n in (34, 33, 33)]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    result = union_result(arrays, attack="pgd", kind="fixed-budget", norm="linf", targeted=True,
                          config={"name": "pgd"})
    return parts, arrays, result


@pytest.mark.parametrize("threshold", [0.5, 0.75, 0.85])
def test_the_unions_budget_is_numpys_quantile_of_its_minimal_budgets(union, threshold):
    _, arrays, result = union
    attacked = arrays["attacked"]
    norms = arrays["minimal_budget"][attacked]
    mb = union_budget(result, threshold)
    expected = np.quantile(norms, threshold, method="inverted_cdf")  # the smallest b with CDF(b) >= threshold
    assert np.isfinite(expected) and mb.reached
    assert mb.budget == expected
    with np.errstate(invalid="ignore"):
        within = arrays["success"] & (arrays["minimal_budget"] <= expected)
    np.testing.assert_array_equal(mb.within_budget, within)
    assert mb.fooling_rate == within[attacked].mean() >= threshold
    finite = norms[np.isfinite(norms)]
    cdf = [(float(v), float((norms <= v).sum() / norms.size)) for v in np.unique(finite)]
    assert mb.evaluations == cdf  # the empirical CDF over the attacked clips, one step per distinct ε
    fooled = within  # statistics over the clips fooled within the budget
    assert mb.stats["linf"]["median"] == pytest.approx(np.median(arrays["linf"][fooled]))
    assert mb.stats["l2"]["mean"] == pytest.approx(np.mean(arrays["l2"][fooled]))


def test_an_unreachable_threshold_gives_the_largest_finite_budget(union):
    _, arrays, result = union
    norms = arrays["minimal_budget"][arrays["attacked"]]
    mb = union_budget(result, 1.0)  # some clips are never fooled
    assert not mb.reached and mb.budget == norms[np.isfinite(norms)].max()
    assert f"{int(np.isinf(norms).sum())} of {norms.size} sample(s) not fooled" in mb.reason


def test_the_unions_bracket_is_the_quantile_of_the_lower_bounds(union):
    _, arrays, result = union
    attacked = arrays["attacked"]
    budget = np.quantile(arrays["minimal_budget"][attacked], 0.8, method="inverted_cdf")
    expected_low = np.quantile(arrays["minimal_budget_low"][attacked], 0.8, method="inverted_cdf")
    low, note = union_precision(result, 0.8, budget, rtol=0.05, atol=0.0, precision="quantile")
    assert low == expected_low < budget
    width = (budget - expected_low) / budget
    assert width > 0.05 and note is not None and note.code == "merged-precision"
    assert note.counts == {"budget_low": expected_low, "width": width}
    # a tolerance wider than the bracket: no note
    low, note = union_precision(result, 0.8, budget, rtol=width + 0.01, atol=0.0, precision="clip")
    assert low == expected_low and note is None
    low, note = union_precision(result, 0.8, budget, rtol=0.0, atol=budget - expected_low, precision="clip")
    assert note is None


def test_the_common_curve_weights_each_slice_by_its_attacked_clips():
    curves = [[[0.1, 0.2], [0.2, 0.5], [0.4, 0.9]],
              [[0.2, 0.3], [0.1, 0.0], [0.4, 1.0], [0.8, 1.0]],
              [[0.4, 0.8], [0.2, None], [0.1, 0.1]]]  # a null rate: that ε was not measured there
    weights = [10, 30, 20]
    table = {}  # (slice, ε) → rate, then the weighted mean at every ε all slices measured
    for i, curve in enumerate(curves):
        for eps, rate in curve:
            if rate is not None:
                table[i, eps] = rate
    common = [e for e, _ in curves[0] if all((i, e) in table for i in range(3))]
    w = np.asarray(weights, float)
    expected = [[e, float(np.dot(w, [table[i, e] for i in range(3)]) / w.sum())] for e in common]
    got = common_curve(curves, weights)
    assert [e for e, _ in got] == [0.1, 0.4]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_slice_sizes_are_the_attack_stages_cut():
    for total in (0, 1, 7, 100, 101):
        for count in (1, 2, 3, 7):
            sizes = slice_sizes(total, count)
            assert sizes == [total // count + (i < total % count) for i in range(count)]
            rows = np.arange(total)
            assert np.concatenate(np.array_split(rows, count)).tolist() == rows.tolist()


def test_a_union_of_slices_is_one_run_over_their_clips(union):
    parts, arrays, result = union
    assert result.n_attacked == sum(int(p["attacked"].sum()) for p in parts)
    assert result.n_excluded == len(arrays["attacked"]) - result.n_attacked
    np.testing.assert_array_equal(result.budget_norms()[~arrays["attacked"]], np.nan)
    np.testing.assert_array_equal(result.budget_norms()[arrays["attacked"]],
                                  arrays["minimal_budget"][arrays["attacked"]])


def test_union_notes_count_the_union_and_keep_each_slices_own():
    pool = Note("starting-points", "3 nearest from the pool", {"pool": 3})
    only = Note("targets-given", "targets given")
    per_slice = [[excluded_note(1, 3), pool], [pool, only], [excluded_note(2, 4), pool]]
    notes = union_notes(per_slice, [(0, 3), (1, 3), (2, 3)], n_excluded=3, n=10)
    assert notes == [excluded_note(3, 10), pool, Note("targets-given", "slice 1/3: targets given", {"slice": [1, 3]})]
    assert union_notes([[pool]], [(0, 1)], n_excluded=0, n=5) == [pool]
