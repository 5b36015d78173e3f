"""Per-clip minimal budget of a fixed-budget attack: a batched search with one ε bracket per clip.

Every attacked clip ``i`` keeps a bracket ``(lo_i, hi_i]``: the attack at ``hi_i``
fooled it, at ``lo_i`` it did not (``lo_i`` starts at ``eps_low``).  Each round
attacks the clips that still need a probe at once, each at its own ε
(the attack's :meth:`~advaudio.attacks.base.AttackSpec.perturb`; for fgsm, bim and pgd
:mod:`~advaudio.attacks.stepping`).  A clip's minimal budget is ``hi_i``
(``minimal_budget``; +inf: not fooled up to ``eps_high``) and ``lo_i`` its lower
bound (``minimal_budget_low``); the budget at the threshold is the inverted-CDF
quantile of the ``hi_i`` and the fooling-rate curve their empirical CDF
(:func:`~advaudio.attacks.tuning.minimisation_budget`), as for minimisation attacks.
The true quantile of the minimal budgets lies in ``(L, B]``, ``L``/``B`` the same
quantile of the ``lo_i``/``hi_i`` (order statistics are monotone in every clip).

Both precisions start with every clip at ``eps_high / 16`` and go *down* from
successes because, with early stopping, a success far above a clip's minimal ε
costs a few steps while every failure costs all ``steps``.

``precision="clip"``: every clip's bracket to ``hi - lo <= max(atol, rtol·hi)``:

* no success yet: ε ×= ``GROWTH`` (up to ``eps_high``);
* no failure yet: ε /= ``GROWTH`` (down to ``eps_low``, or ``eps_high·2⁻²⁰``);
* bracketed: the zero of the margin line (interpolated, or bisection after
  ``STREAK`` guesses on one side).

A clip's probes depend on its own outcomes only, and its random start on its own
seed (``sample_ids``), so a clip gets the same bracket in any batch: job-array
slices merge to exactly one run.  Measured: 0.3–0.65× the bisection's gradient steps.

``precision="quantile"``: only the budget to ``B - L <= max(atol, rtol·B)``; a clip
is refined only while its bracket overlaps ``(L, B)`` (:func:`_quantile_rounds`),
so clips clearly below or above the quantile keep coarse brackets and cost one or
two cheap probes.  A clip's bracket then depends on the batch (the quantile is the
batch's); sliced runs merge to an upper bound whose precision the merge computes
from the ``lo_i``.  Measured (``benchmarks/bench_budget_search.py``, width-1/4
resnet18): 0.12–0.17× the bisection's gradient steps.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import torch

from advaudio.attacks._model import CountingModel, attack_mode, batched_logits
from advaudio.attacks.base import StepContext
from advaudio.attacks.engine import Prepared
from advaudio.attacks.params import PRECISIONS
from advaudio.attacks.results import AttackResult, Note, perturbation_norms
from advaudio.attacks.stepping import StepResult, margins, unit_noise
from advaudio.errors import ParameterError
from advaudio.progress import Throttle

__all__ = ["GROWTH", "PRECISIONS", "START_DIVISOR", "per_clip_search", "step_settings"]

#: Progress lines (INFO): probe rounds, at most one line per 30 s of one search.
_log = logging.getLogger(__name__)

#: Bracket growth / shrink factor per probe before a clip is bracketed.
GROWTH = 4.0
#: The first probe is at ``eps_high / START_DIVISOR``.
START_DIVISOR = 16.0
#: Probes go this many rtol past the margin line's zero: outside a bracket, inside one.
OVERSHOOT = 1.0
OVERSHOOT_IN = 0.5
#: Guesses that land on the same side this many times in a row give way to bisection.
STREAK = 2
#: Bracketed clips keep stepping after a success to measure the margin at hi.
FULL_MARGIN = True
#: Descending stops at ``eps_high * FLOOR`` when ``eps_low`` is 0.
FLOOR = 2.0**-20
#: precision="quantile", first descent: a clip's minimal ε is guessed as this fraction of the
#: distance its first successful iterate travelled (steps · step size, at most ε).
ESTIMATE_SCALE = 0.7


def step_settings(prep: Prepared) -> dict[str, Any]:
    """steps, relative step size and random start of a fixed-budget attack's config (a plugin's
    parameters may lack them: one step, a step of ε, no random start)."""
    p = prep.config.params
    step_size = getattr(p, "step_size", None)
    return {"steps": int(getattr(p, "steps", 1)), "rel_stepsize": float(1.0 if step_size is None else step_size),
            "random_start": bool(getattr(p, "random_start", False))}


def _check_step(prep: Prepared, r: Any, n: int) -> None:
    """ParameterError unless ``perturb`` returned a StepResult of ``n`` clips shaped like the inputs
    (a plugin's mistake named in one line, not an index error in the search)."""
    ok = isinstance(r, StepResult) and all(
        isinstance(t, torch.Tensor) and len(t) == n for t in (r.adversarial, r.success, r.steps_run, r.margin))
    if not ok or tuple(r.adversarial.shape[1:]) != tuple(prep.x.shape[1:]):
        raise ParameterError(f"attack {prep.spec.name}: perturb must return a StepResult of {n} clip(s) shaped "
                             f"like its inputs, got {type(r).__name__}")


def sample_seeds(seed: int, sample_ids: np.ndarray) -> list[int]:
    """Random-start seed of each clip, from the run's seed and the clip's id (its store row)."""
    return [int(np.random.SeedSequence([seed, 0x5EED, int(i)]).generate_state(1)[0]) for i in sample_ids]


def attack_at(prep: Prepared, counter: CountingModel, sel: torch.Tensor, eps: torch.Tensor, *,
              noise: torch.Tensor | None, early_stop: bool, steps: int | None = None,
              full_margin: torch.Tensor | None = None, with_steps: bool = False) -> tuple[torch.Tensor, ...]:
    """The attack on rows ``sel`` at per-row ``eps``, in chunks of the batch size:
    (adversarial, success, best margin[, steps run]); rows where ``full_margin`` is True keep
    stepping after their success (see :func:`~advaudio.attacks.stepping.gradient_attack`)."""
    if full_margin is not None and bool(full_margin.any()) and not bool(full_margin.all()):
        parts = [attack_at(prep, counter, sel[m], eps[m], noise=noise, early_stop=early_stop, steps=steps,
                           full_margin=m.new_full((int(m.sum()),), flag), with_steps=with_steps)
                 for m, flag in ((~full_margin, False), (full_margin, True))]
        order = torch.cat([(~full_margin).nonzero().flatten(), full_margin.nonzero().flatten()])
        inv = torch.empty_like(order)
        inv[order] = torch.arange(len(order), device=order.device)
        return tuple(torch.cat([a[k] for a in parts])[inv] for k in range(len(parts[0])))
    full = bool(full_margin.all()) if full_margin is not None and len(full_margin) else False
    advs, oks, runs, taken = [], [], [], []
    for a in range(0, len(sel), prep.batch_size):
        rows = sel[a:a + prep.batch_size]
        # the attack's own step with one ε per clip (a plugin's too): never a stand-in
        step = StepContext(model=counter, config=prep.config, noise=None if noise is None else noise[rows],
                           early_stop=early_stop, full_margin=full, steps=steps)
        r = prep.spec.perturb(step, prep.x[rows], prep.labels[rows],
                              prep.targets[rows] if prep.targeted else None, eps[a:a + prep.batch_size])
        _check_step(prep, r, len(rows))
        advs.append(r.adversarial)
        oks.append(r.success)
        runs.append(r.margin)
        taken.append(r.steps_run)
    if not advs:
        none = torch.zeros(0, device=prep.device)
        out = (prep.x[:0], none.bool(), none, none.long())
    else:
        out = (torch.cat(advs), torch.cat(oks), torch.cat(runs), torch.cat(taken))
    return out if with_steps else out[:3]


def next_probe(*, lo: float, hi: float, m_lo: float, m_hi: float, lo_prev: float, m_prev: float, eps_low: float,
               eps_high: float, floor: float, rtol: float, atol: float, tried: float,
               streak: int = 0) -> float | None:
    """A clip's next ε, or None when its search is over.

    ``lo``/``hi``: largest failing / smallest fooling ε so far (``hi`` inf: none fooled);
    ``m_lo``, ``m_prev``: the best margins (:func:`~advaudio.attacks.stepping.margins`)
    at ``lo`` and at the failure before it, ``lo_prev`` (first: the clean input, 0).
    The zero of the line through the two failures is where the margin would reach 0;
    the probe goes a little past it (so that a success there leaves a narrow bracket)
    but never within the tolerance of ``hi`` (a failure there ends the search) and
    never out of the bracket's inner 90 %; without two points: ×/÷ ``GROWTH``.
    When the line's guesses land on the same side twice in a row (``streak``: +k
    after k successes, -k after k failures) the bracket is bisected instead, so a
    curved margin costs at most a bisection's probes.
    """
    if not math.isfinite(hi):
        if tried >= eps_high:
            return None  # not fooled at the largest ε
        guess = _zero(lo_prev, m_prev, lo, m_lo)
        guess = None if guess is None else _on_grid(guess, rtol)
        c = lo * GROWTH if guess is None else min(max(guess * (1 + OVERSHOOT * rtol), lo * (1 + 2 * rtol)), lo * GROWTH)
        return min(c, eps_high)
    tol = max(atol, rtol * hi)
    if hi - lo <= tol or (lo <= eps_low and hi <= floor):
        return None
    if lo <= eps_low:  # nothing failed yet: shrink
        return max(hi / GROWTH, floor)
    if math.isfinite(m_hi) and m_hi > 0 and m_lo < 0:  # interpolate between the two sides
        guess = lo + (hi - lo) * (-m_lo) / (m_hi - m_lo)
    else:
        guess = _zero(lo_prev, m_prev, lo, m_lo)
    if guess is None or abs(streak) >= STREAK:
        return math.sqrt(lo * hi)
    guess = _on_grid(guess, rtol)
    inner = 0.05 * (hi - lo)
    return min(max(guess * (1 + OVERSHOOT_IN * rtol), lo + inner), hi - max(tol, inner))


def _on_grid(value: float, rtol: float) -> float:
    """``value`` rounded to a log grid of step rtol/4: margins differ in their last bits
    between batch sizes, and a guess on the grid does not, so slices agree with one run."""
    q = math.log1p(max(rtol, 1e-3) / 4)
    return math.exp(round(math.log(value) / q) * q) if value > 0 else value


def _zero(e0: float, m0: float, e1: float, m1: float) -> float | None:
    """Where the line through (e0, m0) and (e1, m1), m0 < 0 and rising, reaches margin 0."""
    if not (e1 > e0 and m1 > m0 and m0 < 0 and math.isfinite(m0) and math.isfinite(m1)):
        return None
    return e1 + (e1 - e0) * (-m1) / (m1 - m0)


def per_clip_search(
    prep: Prepared,
    *,
    sample_ids: np.ndarray,
    rtol: float,
    atol: float,
    eps_low: float,
    eps_high: float,
    max_iter: int,
    early_stop: bool,
    precision: str = "clip",
    fooling_rate: float = 0.9,
) -> tuple[AttackResult, bool, int]:
    """Run the search; returns the result (``minimal_budget``, ``minimal_budget_low`` set),
    whether it converged (``"clip"``: every clip; ``"quantile"``: the budget) and the
    number of probe rounds.  ``fooling_rate`` is used by ``precision="quantile"`` only."""
    if precision not in PRECISIONS:
        raise ParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    t0 = time.perf_counter()
    cfg = prep.config
    attacked = prep.attacked.cpu().numpy()
    s = step_settings(prep)
    noise = None
    if s["random_start"]:
        noise = unit_noise(tuple(prep.x.shape[1:]), norm=cfg.params.norm,
                           seeds=sample_seeds(cfg.seed, sample_ids), device=prep.device)
    run = _Probes(prep, CountingModel(prep.model), noise, early_stop)
    with attack_mode(prep.model):
        run.counter.eval()
        if precision == "clip":
            converged_clips = _clip_rounds(run, rtol=rtol, atol=atol, eps_low=eps_low, eps_high=eps_high,
                                           max_iter=max_iter)
            converged = bool(converged_clips[attacked].all())
        else:
            converged_clips, converged = _quantile_rounds(run, rtol=rtol, atol=atol, eps_low=eps_low,
                                                          eps_high=eps_high, max_iter=max_iter,
                                                          fooling_rate=fooling_rate)
        pred = batched_logits(prep.model, run.adv, prep.batch_size).argmax(1)
    lo, hi, adv = run.lo, run.hi, run.adv
    success_t = (pred == prep.targets if prep.targeted else pred != prep.labels) & prep.attacked
    success = success_t.cpu().numpy()
    # A clip whose stored adversarial does not verify (a numerical edge) counts as not fooled.
    unverified = int((np.isfinite(hi) & attacked & ~success).sum())
    hi[~success] = np.inf
    adv[~success_t] = prep.x[~success_t]
    pred = torch.where(success_t, pred, prep.clean_pred)
    minimal = np.where(attacked, hi, np.nan)
    minimal_low = np.where(attacked, lo, np.nan)
    notes = list(prep.notes)
    if unverified:
        notes.append(Note("unverified", f"{unverified} clip(s) whose adversarial did not verify: not fooled",
                          {"count": unverified}))
    if not converged_clips[attacked].all():
        k = int((~converged_clips & attacked).sum())
        notes.append(Note("search-max-iter", f"{k} clip(s) stopped after max_iter={max_iter} probes with a "
                          "bracket wider than the tolerance", {"count": k, "max_iter": max_iter}))
    x_np, adv_np = prep.x.cpu().numpy(), adv.cpu().numpy()
    norms = perturbation_norms(x_np, adv_np)
    result = AttackResult(
        attack=prep.spec.name, kind=prep.spec.kind, norm=cfg.params.norm, epsilon=None,
        targeted=prep.targeted, target_rule=cfg.target_rule if prep.targeted else None,
        config=dict(cfg.to_dict(), targeted=prep.targeted, early_stop=early_stop, precision=precision),
        adversarial=adv_np, labels=prep.labels.cpu().numpy(), clean_predicted=prep.clean_pred.cpu().numpy(),
        predicted=pred.cpu().numpy(),
        targets=prep.targets.cpu().numpy() if prep.targets is not None else None,
        attacked=attacked, success=success, **norms,
        queries=run.counter.queries, gradient_queries=run.counter.gradient_queries,
        wall_time_s=time.perf_counter() - t0 + prep.prep_time_s, notes=notes, minimal_budget=minimal,
        minimal_budget_low=minimal_low,
    )
    return result, converged, run.rounds


class _Probes:
    """The state every search shares: per-clip brackets ``(lo, hi]``, the adversarial at ``hi``,
    probes per clip, and one batched probe round at per-clip ε."""

    def __init__(self, prep: Prepared, counter: CountingModel, noise: torch.Tensor | None, early_stop: bool):
        n = len(prep.x)
        self.prep, self.counter, self.noise, self.early_stop = prep, counter, noise, early_stop
        self.lo = np.zeros(n)
        self.hi = np.full(n, np.inf)
        self.probes = np.zeros(n, dtype=int)
        self.adv = prep.x.clone()
        self.rounds = 0
        # steps before the first successful iterate at hi (early stopping), a hint of how far below hi
        # the clip's minimal ε lies
        self.steps_at_hi = np.zeros(n, dtype=int)
        self.n_attacked = int(prep.attacked.sum())
        self.throttle = Throttle()

    def probe(self, idx: np.ndarray, eps: np.ndarray, *, full_margin: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Attack clips ``idx`` at ``eps``; updates the brackets and returns (fooled, best margin)."""
        prep = self.prep
        self.rounds += 1
        sel = torch.as_tensor(idx, device=prep.device)
        e = torch.as_tensor(eps, dtype=prep.x.dtype, device=prep.device)
        fm = None if full_margin is None else torch.as_tensor(full_margin, device=prep.device)
        out, ok_t, margin_t, steps_t = attack_at(prep, self.counter, sel, e, noise=self.noise,
                                                 early_stop=self.early_stop, full_margin=fm, with_steps=True)
        ok = ok_t.cpu().numpy()  # one host sync per probe round
        won = idx[ok]
        self.adv[sel[ok_t]] = out[ok_t]
        self.hi[won] = eps[ok]
        self.steps_at_hi[won] = steps_t.cpu().numpy()[ok]
        self.lo[idx[~ok]] = eps[~ok]
        self.probes[idx] += 1
        if _log.isEnabledFor(logging.INFO) and self.throttle.due():
            _log.info("%s: ε search round %d done on %d clips: %d of %d fooled at some ε so far (%s)",
                      prep.spec.name, self.rounds, len(idx), int(np.isfinite(self.hi).sum()), self.n_attacked,
                      self.throttle.elapsed())
        return ok, margin_t.cpu().numpy().astype(np.float64)


def _clip_rounds(run: _Probes, *, rtol: float, atol: float, eps_low: float, eps_high: float,
                 max_iter: int) -> np.ndarray:
    """``precision="clip"``: every clip's bracket to the tolerance (module docstring); per-clip converged."""
    prep = run.prep
    n = len(prep.x)
    lo, hi = run.lo, run.hi
    lo[:] = eps_low
    eps = np.full(n, min(eps_high, max(eps_high / START_DIVISOR, eps_low)))
    finished = ~prep.attacked.cpu().numpy()
    converged = np.ones(n, dtype=bool)
    floor = eps_low if eps_low > 0 else eps_high * FLOOR
    classes = prep.targets if prep.targeted else prep.labels
    clean = batched_logits(prep.model, prep.x, prep.batch_size)
    m_lo = margins(clean, classes, targeted=prep.targeted).cpu().numpy().astype(np.float64)
    m_prev = m_lo.copy()  # margin at the failure before lo (first: the clean input, ε = 0)
    lo_prev = np.zeros(n)
    m_hi = np.full(n, np.nan)  # margin at hi where measured over every step
    streak = np.zeros(n, dtype=int)  # +k: the last k probes fooled the clip, -k: failed
    while not finished.all():
        idx = np.flatnonzero(~finished)
        # Bracketed clips keep stepping after a success: the margin reached at hi makes
        # the next probe an interpolation instead of an extrapolation.
        bracketed = np.isfinite(hi[idx]) & (lo[idx] > eps_low)
        prev_lo, prev_m = lo[idx].copy(), m_lo[idx].copy()
        ok, margin = run.probe(idx, eps[idx], full_margin=bracketed if run.early_stop and FULL_MARGIN else None)
        won, lost = idx[ok], idx[~ok]
        m_hi[won] = np.where(bracketed[ok], margin[ok], np.nan)
        lo_prev[lost], m_prev[lost] = prev_lo[~ok], prev_m[~ok]
        m_lo[lost] = margin[~ok]
        streak[won] = np.maximum(streak[won], 0) + 1
        streak[lost] = np.minimum(streak[lost], 0) - 1
        for i in idx:
            c = next_probe(lo=lo[i], hi=hi[i], m_lo=m_lo[i], m_hi=m_hi[i], lo_prev=lo_prev[i], m_prev=m_prev[i],
                           eps_low=eps_low, eps_high=eps_high, floor=floor, rtol=rtol, atol=atol,
                           tried=eps[i], streak=int(streak[i]))
            if c is None:
                finished[i] = True
            elif run.probes[i] >= max_iter:
                finished[i] = True
                converged[i] = False
            else:
                eps[i] = c
    return converged


def _quantile_rounds(run: _Probes, *, rtol: float, atol: float, eps_low: float, eps_high: float,
                     max_iter: int, fooling_rate: float) -> tuple[np.ndarray, bool]:
    """``precision="quantile"``: brackets only as tight as the budget needs (module docstring).

    ``L``/``B`` are the k-th smallest ``lo``/``hi`` (k = ⌈fooling_rate·attacked⌉); the true
    quantile of the minimal budgets lies in ``(L, B]``.  Each round probes, per clip: not yet
    fooled — up as in ``precision="clip"`` to ``eps_high`` (so +inf keeps meaning "not fooled
    up to eps_high"); bracket reaching above ``B`` — at ``B`` (a failure puts it above the
    quantile for good); reaching below ``L`` — at ``L`` (a success puts it below for good);
    inside ``[L, B]`` and around the round's ε* — at ε*.  ε* is the k-th smallest of the
    clips' estimates of their minimal ε (bracketed: the zero of the margin line through
    their last two failures; fooled only: ``ESTIMATE_SCALE`` × the distance their first
    successful iterate travelled), kept in the inner 80 % of ``(L, B)``; after ``STREAK``
    rounds on one side of the quantile, the geometric mid-point.  Stops when
    ``B - L <= max(atol, rtol·B)``.  Returns (per-clip converged, budget converged).
    """
    prep = run.prep
    n = len(prep.x)
    att = prep.attacked.cpu().numpy()
    lo, hi = run.lo, run.hi
    lo[:] = eps_low
    n_att = int(att.sum())
    k = max(1, math.ceil(fooling_rate * n_att - 1e-9))
    rel = step_settings(prep)["rel_stepsize"]
    floor = eps_low if eps_low > 0 else eps_high * FLOOR
    converged = np.ones(n, dtype=bool)
    tried = np.zeros(n)  # largest ε probed per clip
    eps0 = min(eps_high, max(eps_high / START_DIVISOR, eps_low))
    idx = np.flatnonzero(att)
    eps = np.full(len(idx), eps0)
    star, streak = None, 0  # streak: +k/-k, the last k ε* fell above/below the quantile
    classes = prep.targets if prep.targeted else prep.labels
    clean = batched_logits(prep.model, prep.x, prep.batch_size)
    m_lo = margins(clean, classes, targeted=prep.targeted).cpu().numpy().astype(np.float64)
    m_prev, lo_prev = m_lo.copy(), np.zeros(n)  # the failure before lo (first: the clean input)
    while len(idx):
        prev_lo, prev_m = lo[idx].copy(), m_lo[idx].copy()
        ok, margin = run.probe(idx, eps)
        lost = idx[~ok]
        lo_prev[lost], m_prev[lost], m_lo[lost] = prev_lo[~ok], prev_m[~ok], margin[~ok]
        tried[idx] = np.maximum(tried[idx], eps)
        L = float(np.sort(lo[att])[k - 1])
        B = float(np.sort(hi[att])[k - 1])
        if star is not None:
            side = 1 if B <= star else -1
            streak = streak + side if streak * side > 0 else side
        tol = max(atol, rtol * B) * (1 + 1e-9)  # B, L are probed values: rounding is no width
        star = None
        if math.isfinite(B) and B - L > tol:
            # The clips' own estimates (how far their first successful iterate travelled) give the
            # quantile's; after STREAK rounds on one side of it, bisect instead.
            est = np.full(n, np.inf)
            f = np.isfinite(hi)
            est[f] = hi[f] * np.minimum(1.0, np.maximum(run.steps_at_hi[f], 1) * rel) * ESTIMATE_SCALE
            for i in np.flatnonzero(f & (lo > eps_low)):
                z = _zero(lo_prev[i], m_prev[i], lo[i], m_lo[i])
                est[i] = z if z is not None else math.sqrt(lo[i] * hi[i])
            est[f] = np.clip(est[f], lo[f], hi[f])
            guess = float(np.sort(est[att])[k - 1])
            low_end = L + 0.1 * (B - L) if L > eps_low else max(B / GROWTH**2, floor)
            if abs(streak) >= STREAK or not math.isfinite(guess):
                guess = math.sqrt(L * B) if L > eps_low else B / GROWTH
            # at most B(1 - rtol): a failure there closes the bracket
            star = min(max(guess, low_end), B - max(0.1 * (B - L), 0.999 * max(atol, rtol * B)))
        want = np.full(n, np.nan)
        # not fooled yet: up as in precision "clip" (the margin line's zero, at most ×GROWTH), since at
        # large ε a few fixed-size steps can overshoot and miss a clip they fool at a smaller one
        for i in np.flatnonzero(att & ~np.isfinite(hi) & (tried < eps_high)):
            want[i] = next_probe(lo=lo[i], hi=math.inf, m_lo=m_lo[i], m_hi=math.nan, lo_prev=lo_prev[i],
                                 m_prev=m_prev[i], eps_low=eps_low, eps_high=eps_high, floor=floor, rtol=rtol,
                                 atol=atol, tried=tried[i])
        if star is not None:
            relevant = att & np.isfinite(hi) & (hi > L) & (lo < B)
            up = relevant & (hi > B)
            down = relevant & ~up & (lo < L)
            inner = relevant & ~up & ~down & (lo < star) & (hi > star)
            want[up], want[down], want[inner] = B, L, star
        over = np.isfinite(want) & (run.probes >= max_iter)
        converged[over] = False
        want[over] = np.nan
        idx = np.flatnonzero(np.isfinite(want))
        eps = want[idx]
    L = float(np.sort(lo[att])[k - 1]) if n_att else 0.0
    B = float(np.sort(hi[att])[k - 1]) if n_att else math.inf
    return converged, bool(converged[att].all()) and (not math.isfinite(B) or B - L <= max(atol, rtol * B) * (1 + 1e-9))
