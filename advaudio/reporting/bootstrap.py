"""Bootstrap confidence intervals of the budget at a fooling-rate threshold, and of budget ratios.

The statistic is :func:`advaudio.attacks.tuning.quantile_budget`: the inverted-CDF
quantile of the attacked clips' minimal perturbation norms at the threshold
(+inf: a clip never fooled, which counts as not fooled). A resample in which
fewer than ``ceil(threshold · n)`` clips were fooled has no budget; its statistic
is +inf ("not reached"), so an interval whose upper end is +inf says honestly
that some resamples never reach the threshold.

Resampling is *stratified by cell*: each cell's clips (one test fold of one
seed) are drawn with replacement within the cell, and the statistic is taken
over the pooled resampled clips of all the cells of a table row. The interval
is the percentile interval: the inverted-CDF quantiles ``(1 − confidence)/2``
and ``(1 + confidence)/2`` of the resampled statistics (order statistics,
never interpolated, so +inf needs no special case).

Random stream (so an independent loop can reproduce it): cell ``c`` of ``C``
draws from ``numpy.random.default_rng(numpy.random.SeedSequence(seed).spawn(C)[c])``;
resample ``b`` takes, for each cell in order, the indices
``floor(rng_c.random(n_c) · n_c)``. Uniform doubles are consumed one per index,
so drawing the resamples in blocks (to bound memory) gives the same indices as
drawing them one by one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advaudio.attacks.tuning import quantile_budget
from advaudio.errors import ParameterError

__all__ = ["BudgetInterval", "RatioInterval", "budget_interval", "cell_generators", "mean_std",
           "percentile_interval", "ratio_interval", "resample_statistic"]

#: Resamples × clips held in memory at once (float64 values).
_BLOCK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class BudgetInterval:
    """The budget at ``threshold`` over pooled clips, with its bootstrap interval.

    ``budget`` and ``reached`` are :func:`quantile_budget`'s (when not reached,
    ``budget`` is the largest finite norm: the threshold lies above it).
    ``low``/``high`` are +inf when that end of the interval is not reached;
    ``not_reached`` is the fraction of resamples that never reach the threshold.
    """

    budget: float
    reached: bool
    low: float
    high: float
    n: int  # clips
    cells: int
    threshold: float
    confidence: float
    resamples: int
    not_reached: float


@dataclass(frozen=True)
class RatioInterval:
    """after/before budget ratio, paired over the test clips of each cell, with its bootstrap interval.

    ``ratio`` is +inf when *after* does not reach the threshold (then ``lower_bound``
    = largest finite norm after / budget before: the true ratio is larger), NaN
    when *before* does not (no ratio is defined). ``undefined`` is the fraction of
    resamples whose *before* statistic is not reached (or has no clip); they are
    left out of the interval, which is NaN when every resample is undefined.
    """

    ratio: float
    lower_bound: float
    low: float
    high: float
    n: int  # test clips: the union, per cell, of the clips attacked in either round
    n_before: int
    n_after: int
    cells: int
    threshold: float
    confidence: float
    resamples: int
    undefined: float


def _check_settings(threshold: float, resamples: int, confidence: float) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ParameterError(f"threshold must be in (0, 1], got {threshold}")
    if int(resamples) != resamples or resamples < 1:
        raise ParameterError(f"resamples must be a positive integer, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ParameterError(f"confidence must be in (0, 1), got {confidence}")


def _as_norms(values: Any, what: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(v).any():
        raise ParameterError(f"{what} holds NaN (+inf marks a clip never fooled)")
    return v


def cell_generators(cells: int, *, seed: int = 0) -> list[np.random.Generator]:
    """One independent generator per cell (see the module docstring)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(int(cells))]


def _kth_smallest(values: np.ndarray, k: np.ndarray | int) -> np.ndarray:
    """Per row of ``values`` (NaN sorts last: "no clip"), the ``k``-th smallest value (1-based)."""
    ordered = np.sort(values, axis=1)
    k = np.broadcast_to(np.asarray(k, np.int64), (values.shape[0],))
    return ordered[np.arange(values.shape[0]), k - 1]


def _needed(threshold: float, n: np.ndarray | int) -> np.ndarray:
    """Clips that must be fooled out of ``n`` (as in :func:`quantile_budget`)."""
    return np.maximum(1, np.ceil(threshold * np.asarray(n, np.float64) - 1e-9)).astype(np.int64)


def resample_statistic(
    cells: Sequence[np.ndarray],
    statistic,
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """``statistic`` of ``resamples`` stratified resamples of ``cells``.

    ``cells`` are 2-D arrays ``(clips, columns)``; each resample draws every
    cell's rows with replacement (the stream of the module docstring) and calls
    ``statistic(block)`` with the pooled rows of a block of resamples,
    ``(resamples_in_block, clips, columns)``; it returns one value per resample.
    """
    sizes = [int(c.shape[0]) for c in cells]
    if not sizes or min(sizes) < 1:
        raise ParameterError("every cell needs at least one clip to resample")
    gens = cell_generators(len(cells), seed=seed)
    total = sum(sizes) * max(1, cells[0].shape[1])
    block = max(1, _BLOCK_ELEMENTS // total)
    out = np.empty(int(resamples), np.float64)
    for start in range(0, int(resamples), block):
        m = min(block, int(resamples) - start)
        parts = []
        for cell, n, rng in zip(cells, sizes, gens):
            idx = np.minimum((rng.random((m, n)) * n).astype(np.int64), n - 1)
            parts.append(cell[idx])
        out[start:start + m] = statistic(np.concatenate(parts, axis=1))
    return out


def percentile_interval(stats: Any, *, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap ``stats``: inverted-CDF order statistics (+inf allowed).

    NaN statistics (undefined resamples) are left out; all NaN gives ``(nan, nan)``.
    """
    s = np.sort(np.asarray(stats, np.float64).reshape(-1))
    s = s[~np.isnan(s)]
    if s.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    lo = s[int(_needed(alpha, s.size)) - 1] if alpha > 0 else s[0]
    hi = s[int(_needed(1.0 - alpha, s.size)) - 1]
    return float(lo), float(hi)


def budget_interval(
    cells: Sequence[Any],
    threshold: float,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BudgetInterval:
    """Percentile-bootstrap interval of the budget at ``threshold``, stratified by cell.

    Parameters
    ----------
    cells : per cell, the attacked clips' minimal norms (+inf: never fooled); cells
        with no clip are skipped
    threshold : the fooling rate in (0, 1]
    resamples : bootstrap resamples (default 2000)
    confidence : the interval's coverage (default 0.95)
    seed : the random stream's seed (default 0: reproducible)

    Raises
    ------
    ParameterError : no clip at all, NaN among the norms, or invalid settings
    """
    _check_settings(threshold, resamples, confidence)
    arrays = [a for a in (_as_norms(c, "minimal norms") for c in cells) if a.size]
    if not arrays:
        raise ParameterError("budget_interval needs at least one attacked clip")
    pooled = np.concatenate(arrays)
    budget, reached = quantile_budget(pooled, threshold)
    k = int(_needed(threshold, pooled.size))
    stats = resample_statistic([a[:, None] for a in arrays], lambda b: _kth_smallest(b[:, :, 0], k),
                               resamples=resamples, seed=seed)
    low, high = percentile_interval(stats, confidence=confidence)
    return BudgetInterval(budget=budget, reached=reached, low=low, high=high, n=int(pooled.size),
                          cells=len(arrays), threshold=float(threshold), confidence=float(confidence),
                          resamples=int(resamples), not_reached=float(np.mean(np.isinf(stats))))


def _paired_cell(before: tuple[Any, Any], after: tuple[Any, Any]) -> np.ndarray:
    """One cell's test clips as rows ``[norm before, norm after]``; NaN: not attacked in that round."""
    rows_b, norms_b = np.asarray(before[0], np.int64).reshape(-1), _as_norms(before[1], "minimal norms before")
    rows_a, norms_a = np.asarray(after[0], np.int64).reshape(-1), _as_norms(after[1], "minimal norms after")
    if rows_b.size != norms_b.size or rows_a.size != norms_a.size:
        raise ParameterError("each round needs one minimal norm per clip row")
    if np.unique(rows_b).size != rows_b.size or np.unique(rows_a).size != rows_a.size:
        raise ParameterError("a clip row is attacked twice in one round")
    union = np.union1d(rows_b, rows_a)
    out = np.full((union.size, 2), np.nan)
    out[np.searchsorted(union, rows_b), 0] = norms_b
    out[np.searchsorted(union, rows_a), 1] = norms_a
    return out


def _subset_budget(values: np.ndarray, threshold: float) -> np.ndarray:
    """Per row of ``values`` (NaN: clip not in the subset), the budget over the subset; NaN: empty."""
    present = (~np.isnan(values)).sum(axis=1)
    out = _kth_smallest(values, np.minimum(_needed(threshold, present), max(1, values.shape[1])))
    out[present == 0] = np.nan
    return out


def _ratio(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """after / before; NaN where before is not reached (inf) or missing; +inf where after is not reached."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(np.isfinite(before), after / before, np.nan)
    return r


def ratio_interval(
    cells: Sequence[tuple[tuple[Any, Any], tuple[Any, Any]]],
    threshold: float,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RatioInterval:
    """Paired percentile-bootstrap interval of budget(after) / budget(before).

    Per cell the test clips attacked in either round are resampled together; each
    round's budget is taken over the resampled clips attacked in that round (pooled
    across cells), so a clip drawn twice counts twice in both rounds.

    Parameters
    ----------
    cells : per cell ``((clip_rows, minimal_norms) before, (clip_rows, minimal_norms) after)``
    threshold, resamples, confidence, seed : as :func:`budget_interval`

    Raises
    ------
    ParameterError : no clip in either round, NaN norms, a row attacked twice, invalid settings
    """
    _check_settings(threshold, resamples, confidence)
    paired = [p for p in (_paired_cell(b, a) for b, a in cells) if p.shape[0]]
    if not paired:
        raise ParameterError("ratio_interval needs at least one attacked clip")
    pooled = np.concatenate(paired)
    col_b, col_a = pooled[:, 0], pooled[:, 1]
    col_b, col_a = col_b[~np.isnan(col_b)], col_a[~np.isnan(col_a)]
    if not col_b.size or not col_a.size:
        raise ParameterError("ratio_interval needs attacked clips in both rounds")
    b, b_ok = quantile_budget(col_b, threshold)
    a, a_ok = quantile_budget(col_a, threshold)
    with np.errstate(divide="ignore", invalid="ignore"):  # a budget of 0 (a clip fooled unperturbed) divides
        ratio = float(np.float64(a) / b if a_ok else math.inf) if b_ok else math.nan
        lower = float(np.float64(a) / b) if (b_ok and not a_ok and math.isfinite(a)) else math.nan

    def statistic(block: np.ndarray) -> np.ndarray:
        return _ratio(_subset_budget(block[:, :, 1], threshold), _subset_budget(block[:, :, 0], threshold))

    stats = resample_statistic(paired, statistic, resamples=resamples, seed=seed)
    low, high = percentile_interval(stats, confidence=confidence)
    return RatioInterval(ratio=float(ratio), lower_bound=float(lower), low=low, high=high,
                         n=int(pooled.shape[0]), n_before=int(col_b.size), n_after=int(col_a.size),
                         cells=len(paired), threshold=float(threshold), confidence=float(confidence),
                         resamples=int(resamples), undefined=float(np.mean(np.isnan(stats))))


def mean_std(values: Any) -> tuple[float, float, int]:
    """``(mean, std with ddof=1, n)`` of the finite ``values``; std is NaN for one value, both for none."""
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else math.nan), int(v.size)
