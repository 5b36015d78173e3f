"""Per-clip minimal budget of a fixed-budget attack: a batched search with one ε bracket per clip.

Every attacked clip ``i`` keeps a bracket ``(lo_i, hi_i]``: the attack at ``hi_i``
fooled it, at ``lo_i`` it did not (``lo_i`` starts at ``eps_low``).  Each round
attacks all unfinished clips at once, each at its own ε (:mod:`~advaudio.attacks.stepping`):

* no success yet: ε ×= ``GROWTH`` (up to ``eps_high``; a clip not fooled there
  has minimal budget +inf);
* no failure yet: ε /= ``GROWTH`` (down to ``eps_low``, or ``eps_high·2⁻²⁰``);
* bracketed: the geometric mid-point, until ``hi - lo <= max(atol, rtol·hi)``.

The search starts at ``eps_high / 16`` and goes *down* from successes because,
with early stopping, a success far above a clip's minimal ε costs a few steps while
every failure costs all ``steps``.  A clip leaves the batch when its bracket meets
the tolerance (or after ``max_iter`` probes, then ``converged`` is False).  Its
minimal budget is ``hi_i``; the budget at the threshold is their inverted-CDF
quantile and the fooling-rate curve their empirical CDF
(:func:`~advaudio.attacks.tuning.minimisation_budget`), exactly as for minimisation
attacks — so job-array slices merge exactly.

A clip's probes depend on its own outcomes only, and its random start on its own
seed (``sample_ids``), so a clip gets the same minimal budget in any batch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from advaudio.attacks._model import CountingModel, attack_mode, batched_logits
from advaudio.attacks.engine import Prepared
from advaudio.attacks.results import AttackResult, Note, perturbation_norms
from advaudio.attacks.stepping import gradient_attack, margins, unit_noise

__all__ = ["GROWTH", "START_DIVISOR", "per_clip_search", "step_settings"]

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


def step_settings(prep: Prepared) -> dict[str, Any]:
    """steps, relative step size and random start of a fixed-budget attack's config."""
    p = prep.config.params
    return {"steps": int(getattr(p, "steps", 1)), "rel_stepsize": float(p.step_size),
            "random_start": bool(p.random_start)}


def sample_seeds(seed: int, sample_ids: np.ndarray) -> list[int]:
    """Random-start seed of each clip, from the run's seed and the clip's id (its store row)."""
    return [int(np.random.SeedSequence([seed, 0x5EED, int(i)]).generate_state(1)[0]) for i in sample_ids]


def attack_at(prep: Prepared, counter: CountingModel, sel: torch.Tensor, eps: torch.Tensor, *,
              noise: torch.Tensor | None, early_stop: bool, steps: int | None = None,
              full_margin: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attack on rows ``sel`` at per-row ``eps``, in chunks of the batch size:
    (adversarial, success, best margin); rows where ``full_margin`` is True keep
    stepping after their success (see :func:`~advaudio.attacks.stepping.gradient_attack`)."""
    if full_margin is not None and bool(full_margin.any()) and not bool(full_margin.all()):
        parts = [attack_at(prep, counter, sel[m], eps[m], noise=noise, early_stop=early_stop, steps=steps,
                           full_margin=m.new_full((int(m.sum()),), flag))
                 for m, flag in ((~full_margin, False), (full_margin, True))]
        order = torch.cat([(~full_margin).nonzero().flatten(), full_margin.nonzero().flatten()])
        inv = torch.empty_like(order)
        inv[order] = torch.arange(len(order), device=order.device)
        return tuple(torch.cat([a[k] for a in parts])[inv] for k in range(3))  # type: ignore[return-value]
    full = bool(full_margin.all()) if full_margin is not None and len(full_margin) else False
    s = step_settings(prep)
    classes = prep.targets if prep.targeted else prep.labels
    advs, oks, runs = [], [], []
    for a in range(0, len(sel), prep.batch_size):
        rows = sel[a:a + prep.batch_size]
        r = gradient_attack(counter, prep.x[rows], classes[rows], eps[a:a + prep.batch_size],
                            targeted=prep.targeted, norm=prep.config.params.norm,
                            steps=steps or s["steps"], rel_stepsize=s["rel_stepsize"],
                            noise=None if noise is None else noise[rows], early_stop=early_stop,
                            full_margin=full)
        advs.append(r.adversarial)
        oks.append(r.success)
        runs.append(r.margin)
    if not advs:
        none = torch.zeros(0, device=prep.device)
        return prep.x[:0], none.bool(), none
    return torch.cat(advs), torch.cat(oks), torch.cat(runs)


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
) -> tuple[AttackResult, bool, int]:
    """Run the search; returns the result (``minimal_budget`` set), whether every clip
    converged, and the number of probe rounds."""
    t0 = time.perf_counter()
    cfg = prep.config
    n = len(prep.x)
    attacked = prep.attacked.cpu().numpy()
    lo = np.full(n, float(eps_low))
    hi = np.full(n, np.inf)
    eps = np.full(n, min(eps_high, max(eps_high / START_DIVISOR, eps_low)))
    probes = np.zeros(n, dtype=int)
    finished = ~attacked
    converged = np.ones(n, dtype=bool)
    floor = eps_low if eps_low > 0 else eps_high * FLOOR
    adv = prep.x.clone()
    s = step_settings(prep)
    noise = None
    if s["random_start"]:
        noise = unit_noise(tuple(prep.x.shape[1:]), norm=cfg.params.norm,
                           seeds=sample_seeds(cfg.seed, sample_ids), device=prep.device)
    counter = CountingModel(prep.model)
    rounds = 0
    classes = prep.targets if prep.targeted else prep.labels
    with attack_mode(prep.model):
        counter.eval()
        clean = batched_logits(prep.model, prep.x, prep.batch_size)
        m_lo = margins(clean, classes, targeted=prep.targeted).cpu().numpy().astype(np.float64)
        m_prev = m_lo.copy()  # margin at the failure before lo (first: the clean input, ε = 0)
        lo_prev = np.zeros(n)
        m_hi = np.full(n, np.nan)  # margin at hi where measured over every step
        streak = np.zeros(n, dtype=int)  # +k: the last k probes fooled the clip, -k: failed
        while not finished.all():
            rounds += 1
            idx = np.flatnonzero(~finished)
            sel = torch.as_tensor(idx, device=prep.device)
            e = torch.as_tensor(eps[idx], dtype=prep.x.dtype, device=prep.device)
            # Bracketed clips keep stepping after a success: the margin reached at hi makes
            # the next probe an interpolation instead of an extrapolation.
            bracketed = torch.as_tensor(np.isfinite(hi[idx]) & (lo[idx] > eps_low), device=prep.device)
            out, ok_t, margin_t = attack_at(prep, counter, sel, e, noise=noise, early_stop=early_stop,
                                            full_margin=bracketed if early_stop and FULL_MARGIN else None)
            ok = ok_t.cpu().numpy()  # one host sync per probe round
            margin = margin_t.cpu().numpy().astype(np.float64)
            won = idx[ok]
            adv[sel[torch.as_tensor(ok, device=prep.device)]] = out[ok_t]
            hi[won] = eps[won]
            m_hi[won] = np.where(bracketed.cpu().numpy()[ok], margin[ok], np.nan)
            lost, m_lost = idx[~ok], margin[~ok]
            lo_prev[lost], m_prev[lost] = lo[lost], m_lo[lost]
            lo[lost], m_lo[lost] = eps[lost], m_lost
            streak[won] = np.maximum(streak[won], 0) + 1
            streak[lost] = np.minimum(streak[lost], 0) - 1
            probes[idx] += 1
            for i in idx:
                c = next_probe(lo=lo[i], hi=hi[i], m_lo=m_lo[i], m_hi=m_hi[i], lo_prev=lo_prev[i], m_prev=m_prev[i],
                               eps_low=eps_low, eps_high=eps_high, floor=floor, rtol=rtol, atol=atol,
                               tried=eps[i], streak=int(streak[i]))
                if c is None:
                    finished[i] = True
                elif probes[i] >= max_iter:
                    finished[i] = True
                    converged[i] = False
                else:
                    eps[i] = c
        pred = batched_logits(prep.model, adv, prep.batch_size).argmax(1)
    success_t = (pred == prep.targets if prep.targeted else pred != prep.labels) & prep.attacked
    success = success_t.cpu().numpy()
    # A clip whose stored adversarial does not verify (a numerical edge) counts as not fooled.
    unverified = int((np.isfinite(hi) & attacked & ~success).sum())
    hi[~success] = np.inf
    adv[~success_t] = prep.x[~success_t]
    pred = torch.where(success_t, pred, prep.clean_pred)
    minimal = np.where(attacked, hi, np.nan)
    notes = list(prep.notes)
    if unverified:
        notes.append(Note("unverified", f"{unverified} clip(s) whose adversarial did not verify: not fooled",
                          {"count": unverified}))
    if not converged[attacked].all():
        k = int((~converged & attacked).sum())
        notes.append(Note("search-max-iter", f"{k} clip(s) stopped after max_iter={max_iter} probes with a "
                          "bracket wider than the tolerance", {"count": k, "max_iter": max_iter}))
    x_np, adv_np = prep.x.cpu().numpy(), adv.cpu().numpy()
    norms = perturbation_norms(x_np, adv_np)
    result = AttackResult(
        attack=prep.spec.name, kind=prep.spec.kind, norm=cfg.params.norm, epsilon=None,
        targeted=prep.targeted, target_rule=cfg.target_rule if prep.targeted else None,
        config=dict(cfg.to_dict(), targeted=prep.targeted, early_stop=early_stop),
        adversarial=adv_np, labels=prep.labels.cpu().numpy(), clean_predicted=prep.clean_pred.cpu().numpy(),
        predicted=pred.cpu().numpy(),
        targets=prep.targets.cpu().numpy() if prep.targets is not None else None,
        attacked=attacked, success=success, **norms,
        queries=counter.queries, gradient_queries=counter.gradient_queries,
        wall_time_s=time.perf_counter() - t0 + prep.prep_time_s, notes=notes, minimal_budget=minimal,
    )
    return result, bool(converged[attacked].all()), rounds
