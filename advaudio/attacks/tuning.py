"""Budget tuning: the smallest budget at which an attack reaches a fooling rate.

Fixed-budget attacks, ``search="per-clip"`` (the default): every clip's minimal ε
bracketed (:mod:`advaudio.attacks.search`), the budget their inverted-CDF quantile and
the fooling-rate curve their empirical CDF, as for minimisation attacks below.
``precision="quantile"`` (default) refines only the clips the budget depends on
(0.12–0.17× the bisection's gradient steps on a width-1/4 resnet18,
``benchmarks/bench_budget_search.py``); ``precision="clip"`` every clip (0.3–0.65×;
batch-independent, so slices of a job array merge to exactly one run).  The result's
``tolerance`` records ``precision`` and ``budget_low``: the true quantile lies in
``(budget_low, budget]``.

Fixed-budget attacks, ``search="bisection"``: bisection over ε on ``[eps_low,
eps_high]`` assuming the fooling rate is monotone in ε (the seed, targets and PGD
random start are held fixed, so each probe differs only in ε).  The bracket is found
by doubling ε from ``eps_low`` (or ``eps_high / 2**8`` when ``eps_low`` is 0) until the
rate reaches the threshold — at very large ε a few fixed-size steps overshoot and the
rate is not monotone there, so the largest ε is not probed first; if even
``eps_high`` falls short, ``reached`` is False.  Bisection then stops when ``hi - lo
<= max(atol, rtol*hi)`` (default: 5 % relative) or after ``max_iter`` probes; the
budget is ``hi``, the smallest probed ε whose rate reached the threshold.

Minimisation attacks: one run; :func:`minimisation_budget` takes the smallest
per-sample minimal norm ``b`` with ``mean(norms <= b) >= fooling_rate`` (the
inverted-CDF quantile, :func:`quantile_budget`; numpy's ``method="higher"``
overshoots: with 10 samples and 0.9 it returns the largest norm).  The merge of
sliced runs calls the same function on the union of the slices.

``reached`` iff the success rate reaches the threshold; when it does not, the budget
is the largest budget that was available (largest ε / largest finite norm) and
``reason`` says why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from advaudio.attacks.engine import execute, prepare
from advaudio.attacks.params import FIXED_BUDGET, MINIMISATION, SEARCH_PROBES, SEARCHES, AttackConfig
from advaudio.attacks.results import AttackResult, Note, TuningResult
from advaudio.attacks.search import PRECISIONS, per_clip_search
from advaudio.errors import ParameterError

__all__ = ["MinimisationBudget", "budget_low", "fooling_rate_curve", "minimisation_budget", "quantile_budget",
           "tune_budget"]

# ε-bracketing of fixed-budget attacks starts at eps_high / 2**GROWTH_DOUBLINGS.
GROWTH_DOUBLINGS = 8


def quantile_budget(norms: Any, fooling_rate: float) -> tuple[float, bool]:
    """Smallest ``b`` among ``norms`` with ``mean(norms <= b) >= fooling_rate``.

    ``norms`` are per-sample minimal perturbation norms, +inf where the attack failed.
    Returns ``(budget, reached)``; when fewer than ``ceil(fooling_rate·n)`` samples
    have a finite norm, ``reached`` is False and the budget is the largest finite norm
    (nan if there is none).  Equals ``np.quantile(norms, q, method="inverted_cdf")``.
    """
    v = np.sort(np.asarray(norms, dtype=np.float64).reshape(-1))
    if v.size == 0 or np.isnan(v).any():
        raise ParameterError("quantile_budget needs a non-empty array of norms without nan")
    if not 0.0 < fooling_rate <= 1.0:
        raise ParameterError(f"fooling_rate must be in (0, 1], got {fooling_rate}")
    k = max(1, math.ceil(fooling_rate * v.size - 1e-9))  # samples that must be fooled
    finite = v[np.isfinite(v)]
    if k <= finite.size:
        return float(v[k - 1]), True
    return (float(finite[-1]) if finite.size else math.nan), False



@dataclass(frozen=True)
class MinimisationBudget:
    """The budget of a minimisation run and what follows from it (see :func:`minimisation_budget`)."""

    budget: float
    reached: bool
    within_budget: np.ndarray  # per sample: fooled with a norm <= budget
    fooling_rate: float
    evaluations: list[tuple[float, float]]  # the empirical CDF of the attacked samples' minimal norms
    reason: str | None
    stats: dict[str, dict[str, float]]  # over the samples fooled within the budget


def minimisation_budget(result: AttackResult, fooling_rate: float) -> MinimisationBudget:
    """Budget, fooling rate, CDF and statistics of the minimal norms of ``result`` at ``fooling_rate``.

    ``result`` needs at least one attacked sample.
    """
    norms_all = result.budget_norms()
    norms = norms_all[result.attacked]
    budget, reached = quantile_budget(norms, fooling_rate)
    with np.errstate(invalid="ignore"):  # excluded samples have nan norms: never within
        within = result.success & (norms_all <= budget)
    finite = np.sort(norms[np.isfinite(norms)])
    reason = None
    if not reached:
        reason = (
            f"success rate {result.success_rate:.3f} < {fooling_rate}: "
            f"{int((~np.isfinite(norms)).sum())} of {len(norms)} sample(s) not fooled "
            f"at any {result.norm} norm"
        )
    return MinimisationBudget(
        budget=budget, reached=reached, within_budget=within,
        fooling_rate=float(within[result.attacked].mean()),
        evaluations=[(float(v), float(np.searchsorted(finite, v, side="right") / len(norms)))
                     for v in np.unique(finite)],  # ties (same minimal ε) are one step of the CDF
        reason=reason, stats=result.stats(within),
    )


def budget_low(result: AttackResult, fooling_rate: float) -> float | None:
    """The lower end of the budget's bracket: the quantile of the per-clip lower bounds
    ``minimal_budget_low`` (the true quantile of the minimal budgets lies in ``(low, budget]``:
    order statistics are monotone in every clip); None without lower bounds or attacked clips."""
    if result.minimal_budget_low is None or not result.attacked.any():
        return None
    low, _ = quantile_budget(np.asarray(result.minimal_budget_low, np.float64)[result.attacked], fooling_rate)
    return None if math.isnan(low) else low


def fooling_rate_curve(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    config: AttackConfig,
    epsilons: Sequence[float],
    targets: Any = None,
    batch_size: int = 256,
    starting_pool: Any = None,
) -> list[tuple[float, float]]:
    """Fooling rate at each ε (same targets and seed throughout).

    Fixed-budget attacks run once per ε; minimisation attacks run once and the rate at
    ε is the fraction of attacked samples whose minimal norm is ≤ ε.
    """
    prep = prepare(model, inputs, labels, config=config, targets=targets,
                    batch_size=batch_size, starting_pool=starting_pool)
    if prep.spec.kind == FIXED_BUDGET:
        return [
            (float(e), execute(prep, float(e), starting_pool is not None).fooling_rate)
            for e in epsilons
        ]
    res = execute(prep, None, starting_pool is not None)
    norms = res.budget_norms()[res.attacked]
    n = len(norms)
    return [(float(e), float((norms <= e).sum() / n) if n else math.nan) for e in epsilons]


def _default_eps_high(norm: str, x: torch.Tensor) -> float:
    d = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]


def tune_budget(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    config: AttackConfig,
    fooling_rate: float = 0.9,
    rtol: float = 0.05,
    atol: float = 0.0,
    eps_low: float = 0.0,
    eps_high: float | None = None,
    max_iter: int = SEARCH_PROBES,
    targets: Any = None,
    batch_size: int = 256,
    starting_pool: Any = None,
    search: str = "per-clip",
    early_stop: bool = True,
    sample_ids: Any = None,
    precision: str = "quantile",
) -> TuningResult:
    """Smallest budget at which the attack reaches ``fooling_rate`` (module docstring).

    Fixed-budget attacks, ``search="per-clip"`` (default): every clip's minimal ε
    within the tolerance (:mod:`advaudio.attacks.search`; ``early_stop`` stops a
    clip's inner iterations at its first success; ``sample_ids``, default
    ``arange(N)``, seed each clip's random start, so pass store rows to make
    slices agree); the budget is their quantile, as for minimisation attacks.
    ``precision``: ``"quantile"`` (the tolerance applies to the budget) or ``"clip"`` (to every
    clip's minimal ε).  ``search="bisection"``: a doubling bracket, then bisection over ε in
    ``[eps_low, eps_high]`` (default ``eps_high``: the largest meaningful perturbation
    in the norm — 1 for L∞, √(C·H·W) for L2), stopping when ``hi - lo <= max(atol, rtol·hi)`` or after
    ``max_iter`` probes.  Minimisation attacks: one run, the inverted-CDF quantile of
    the per-sample minimal norms (:func:`quantile_budget`).
    """
    t0 = time.perf_counter()
    if not 0.0 < fooling_rate <= 1.0:
        raise ParameterError(f"fooling_rate must be in (0, 1], got {fooling_rate}")
    if rtol < 0 or atol < 0 or (rtol == 0 and atol == 0):
        raise ParameterError("tolerances must be >= 0 and not both 0")
    if search not in SEARCHES:
        raise ParameterError(f"search must be one of {', '.join(SEARCHES)}, got {search!r}")
    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    prep = prepare(model, inputs, labels, config=config, targets=targets,
                    batch_size=batch_size, starting_pool=starting_pool)
    spec, cfg = prep.spec, prep.config
    pool_given = starting_pool is not None
    n_att = int(prep.attacked.sum())
    n_exc = len(prep.attacked) - n_att
    base = dict(attack=spec.name, kind=spec.kind, norm=cfg.params.norm, threshold=fooling_rate,
                n_attacked=n_att, n_excluded=n_exc)
    if n_att == 0:
        return TuningResult(
            **base, budget=math.nan, fooling_rate=math.nan, success_rate=math.nan,
            reached=False, reason="no correctly classified samples to attack",
            evaluations=[], stats={}, queries=0, gradient_queries=0,
            wall_time_s=time.perf_counter() - t0, tolerance=None, converged=False,
            result=None, within_budget=None, notes=list(prep.notes),
        )

    if spec.kind == MINIMISATION:
        res = execute(prep, None, pool_given)
        mb = minimisation_budget(res, fooling_rate)
        return TuningResult(
            **base, budget=mb.budget, fooling_rate=mb.fooling_rate, success_rate=res.success_rate,
            reached=mb.reached, reason=mb.reason, evaluations=mb.evaluations, stats=mb.stats,
            queries=res.queries, gradient_queries=res.gradient_queries,
            wall_time_s=time.perf_counter() - t0, tolerance=None, converged=True,
            result=res, within_budget=mb.within_budget, notes=list(res.notes), search="minimisation",
        )

    hi = _default_eps_high(cfg.params.norm, prep.x) if eps_high is None else float(eps_high)
    lo = float(eps_low)
    if not 0 <= lo < hi:
        raise ParameterError(f"need 0 <= eps_low < eps_high, got {lo}, {hi}")
    notes: list[Note] = []
    if search == "per-clip" and not spec.per_clip_epsilon:
        # An attack that takes one ε per call cannot run a per-clip search without a stand-in
        # for its step: its budget is bisected over the batch's fooling rate instead.
        search = "bisection"
        notes.append(Note("bisection-one-epsilon", f"{spec.name} takes one ε per call (per_clip_epsilon is "
                          "False): its budget was bisected over the batch's fooling rate, not searched per clip"))
    if search == "per-clip":
        ids = np.arange(len(prep.x)) if sample_ids is None else np.asarray(sample_ids).reshape(-1)
        if len(ids) != len(prep.x):
            raise ParameterError(f"sample_ids has {len(ids)} entries for {len(prep.x)} inputs")
        res, converged, _ = per_clip_search(prep, sample_ids=ids, rtol=rtol, atol=atol, eps_low=lo,
                                            eps_high=hi, max_iter=max_iter, early_stop=early_stop,
                                            precision=precision, fooling_rate=fooling_rate)
        mb = minimisation_budget(res, fooling_rate)
        low = budget_low(res, fooling_rate)
        reason = mb.reason
        if reason is not None:
            reason += f" (probed up to ε={hi:g})"
        return TuningResult(
            **base, budget=mb.budget, fooling_rate=mb.fooling_rate, success_rate=res.success_rate,
            reached=mb.reached, reason=reason, evaluations=mb.evaluations, stats=mb.stats,
            queries=res.queries, gradient_queries=res.gradient_queries,
            wall_time_s=time.perf_counter() - t0,
            tolerance={"rtol": rtol, "atol": atol, "precision": precision, "budget_low": low},
            converged=converged, result=res, within_budget=mb.within_budget, notes=list(res.notes),
            search="per-clip",
        )
    evaluations: list[tuple[float, float]] = []
    totals = {"q": 0, "g": 0}

    def probe(eps: float) -> AttackResult:
        r = execute(prep, eps, pool_given)
        evaluations.append((eps, r.fooling_rate))
        totals["q"] += r.queries
        totals["g"] += r.gradient_queries
        return r

    tol = {"rtol": rtol, "atol": atol}
    # Bracket by doubling up from a small ε before bisecting: at very large ε a
    # few fixed-size gradient steps overshoot, so the fooling rate is not
    # monotone there and probing the largest ε first can miss a small budget.
    eps = lo if lo > 0 else hi / 2 ** GROWTH_DOUBLINGS
    closest: tuple[float, AttackResult] | None = None
    while True:
        eps = min(eps, hi)
        r = probe(eps)
        if r.fooling_rate >= fooling_rate:
            best, hi = r, eps
            break
        if closest is None or r.fooling_rate >= closest[1].fooling_rate:  # ties: the larger ε
            closest = (eps, r)
        if eps >= hi:
            # Not reached: report the probe that came closest (its adversarials
            # are the useful ones), not the largest ε.
            c_eps, c = closest
            return TuningResult(
                **base, budget=c_eps, fooling_rate=c.fooling_rate,
                success_rate=c.success_rate, reached=False,
                reason=f"fooling rate at most {c.fooling_rate:.3f} < {fooling_rate} (at {cfg.params.norm} "
                f"ε={c_eps:g}; probed up to ε={hi:g})",
                evaluations=evaluations, stats=c.stats(), queries=totals["q"],
                gradient_queries=totals["g"], wall_time_s=time.perf_counter() - t0,
                tolerance=tol, converged=False, result=c, within_budget=c.success.copy(),
                notes=list(c.notes) + notes,
            )
        lo, eps = eps, eps * 2
    if len(evaluations) == 1 and lo > 0:
        notes.append(Note("reached-at-eps-low", f"fooling rate already reached at eps_low={lo:g}",
                          {"eps_low": lo}))
    converged = True
    while hi - lo > max(atol, rtol * hi) and hi > lo:
        if len(evaluations) >= max_iter:
            converged = False
            notes.append(Note(
                "bisection-max-iter",
                f"bisection stopped after max_iter={max_iter} probes with bracket "
                f"[{lo:g}, {hi:g}] wider than the tolerance",
                {"max_iter": max_iter, "bracket": [lo, hi]},
            ))
            break
        mid = 0.5 * (lo + hi)
        r = probe(mid)
        if r.fooling_rate >= fooling_rate:
            hi, best = mid, r
        else:
            lo = mid
    return TuningResult(
        **base, budget=hi, fooling_rate=best.fooling_rate, success_rate=best.success_rate,
        reached=True, reason=None, evaluations=evaluations, stats=best.stats(),
        queries=totals["q"], gradient_queries=totals["g"],
        wall_time_s=time.perf_counter() - t0, tolerance=tol, converged=converged,
        result=best, within_budget=best.success.copy(), notes=list(best.notes) + notes,
    )
