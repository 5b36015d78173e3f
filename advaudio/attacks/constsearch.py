"""CW-L2 and EAD in plain torch: a constant per clip, early abort per clip, a bracket learned on the batch.

Foolbox's ``L2CarliniWagnerAttack`` and ``EADAttack`` step every sample of a batch
``steps`` times at each of ``binary_search_steps`` constants (their early abort
looks at the batch's *summed* loss, so one slow clip keeps the whole batch
running): 9 × 1000 gradient steps per clip at their defaults.  Here each clip
has its own constant, bracket and stopping rule, and leaves the batch as soon as
it is done:

* **early abort per clip** (Carlini & Wagner's code aborts when the loss stalls;
  here the rule is per clip): every ``patience`` steps a clip is checked, and it
  leaves the optimisation at its constant when it fools and its smallest fooling
  perturbation shrank by less than ``min_improvement`` (relative) since the last
  check, or when its objective fell by less than that (the loss has plateaued:
  a larger constant is needed, or nothing more is to be had at this one);
* **a bracket learned on the batch**: a pilot of ``pilot`` evenly spaced clips
  runs the full search from ``initial_const`` (×10 until a constant fools, then
  bisection); the others start at the geometric median of the pilot's smallest
  fooling constants, move by the pilot's spread (one standard deviation of their
  logarithms, ×2 to ×10) until bracketed, then bisect on the log scale, so their
  ``binary_search_steps`` refine instead of searching for the decade;
* **per-clip binary search**: C&W's — a fooling constant is an upper bound, a
  failing one a lower bound, the next is their mean (×growth while unbounded);
* **a polish** (``polish_steps``): the early abort stops each constant before it has
  converged (on ESC-10, budget ×1.10 of the long run's at the 90 % threshold), so
  every clip that fooled then optimises at its smallest fooling constant and at the
  largest that failed, from its smallest fooling point, with a slower stopping rule
  (:func:`polish`; measured at 19 % of the long run's steps: per clip median ×1.01; at the
  threshold ×1.001–1.09, as one clip's two basins fall — the long run's own moves ×1.08
  between two machines' kernels: README, Attack cost).

With ``abort_early=False`` and ``pilot=0`` the arithmetic is Foolbox's (same
transformation to tanh space, Adam, losses, FISTA step and shrinkage, binary
search; tested against Foolbox on a tiny model).  The gradient of the summed loss
w.r.t. one clip's input depends on that clip only (the model is in eval mode), so
dropping finished clips from the batch changes no other clip's trajectory; the
learned start does depend on the batch (a job-array slice learns its own), so for
slices that must merge exactly to one run give ``start_const`` (every clip's
search is then its own).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from advaudio.attacks._model import BOUNDS
from advaudio.attacks.stepping import margins
from advaudio.progress import Throttle

__all__ = ["METHODS", "SearchOutcome", "const_search", "pilot_rows"]

METHODS = ("cw", "ead")
#: C&W's search grows an unbounded constant ×10 per binary-search step.
GROWTH = 10.0
#: The learned growth stays within these factors (a pilot of similar clips would otherwise give ×1).
LEARNED_GROWTH = (2.0, 10.0)
#: Foolbox's tanh-space margin: inputs are scaled by this before arctanh.
_TANH_SHRINK = 0.999999
_ADAM = (0.9, 0.999, 1e-8)
#: Progress lines (INFO, at most one per :class:`~advaudio.progress.Throttle` interval): a search on a
#: batch of real clips runs for minutes, EAD's for half an hour.
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchOutcome:
    """Per clip: the smallest fooling input found (the clean input where none), its norm
    (+inf where none; cw: L2, ead: the decision rule's), the smallest constant that fooled
    (+inf where none) and the gradient steps the clip took."""

    adversarial: torch.Tensor
    norm: torch.Tensor
    const: torch.Tensor
    steps: torch.Tensor
    pilot: np.ndarray  # rows of the pilot (empty: none)
    start_const: float | None  # the constant learned from the pilot (None: initial_const)
    growth: float  # the factor an unbounded constant grows by


def pilot_rows(n: int, pilot: int) -> np.ndarray:
    """``pilot`` evenly spaced rows of ``n`` (a store's clips come in class order: several classes)."""
    if pilot <= 0 or n <= pilot:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, pilot).round().astype(np.int64))


def _to_attack_space(x: torch.Tensor) -> torch.Tensor:
    lo, hi = BOUNDS
    a, b = (lo + hi) / 2, (hi - lo) / 2
    return torch.atanh((x - a) / b * _TANH_SHRINK)


def _to_model_space(w: torch.Tensor) -> torch.Tensor:
    lo, hi = BOUNDS
    a, b = (lo + hi) / 2, (hi - lo) / 2
    return torch.tanh(w) * b + a


def _hinge(logits: torch.Tensor, classes: torch.Tensor, *, targeted: bool, confidence: float) -> torch.Tensor:
    """C&W's f: how far the clip is from its goal by ``confidence`` (0 once it is there)."""
    return (confidence - margins(logits, classes, targeted=targeted)).clamp_min(0.0)


def _is_adv(logits: torch.Tensor, classes: torch.Tensor, *, targeted: bool, confidence: float) -> torch.Tensor:
    """Foolbox's criterion with the confidence: the goal reached by ``confidence`` logits."""
    if confidence:
        shift = torch.zeros_like(logits).scatter_(1, classes.view(-1, 1), -confidence if targeted else confidence)
        logits = logits + shift
    pred = logits.argmax(1)
    return pred == classes if targeted else pred != classes


def _flat(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1)


def _shrink(z: torch.Tensor, x0: torch.Tensor, beta: float) -> torch.Tensor:
    """EAD's projected shrinkage-thresholding (Foolbox's threshold: β itself)."""
    lo, hi = BOUNDS
    d = z - x0
    out = torch.where(d > beta, (z - beta).clamp(max=hi), x0)
    return torch.where(d < -beta, (z + beta).clamp(min=lo), out)


class _Run:
    """What one search shares: the clips, their goal, the settings and the best found so far."""

    def __init__(self, model: nn.Module, x0: torch.Tensor, classes: torch.Tensor, *, targeted: bool, method: str,
                 steps: int, step_size: float, confidence: float, regularization: float, decision_rule: str,
                 abort_early: bool, patience: int, min_improvement: float, loss_patience: int | None = None,
                 warm_start: bool = False):
        self.model, self.x0, self.classes = model, x0, classes
        self.targeted, self.method, self.steps, self.step_size = targeted, method, steps, step_size
        self.confidence, self.beta, self.rule = confidence, regularization, decision_rule
        self.abort_early, self.patience, self.min_improvement = abort_early, max(1, patience), min_improvement
        self.loss_patience = self.patience if loss_patience is None else max(1, loss_patience)
        self.warm_start = warm_start
        n = len(x0)
        self.best = x0.clone()
        self.best_norm = torch.full((n,), math.inf, device=x0.device)
        self.steps_run = torch.zeros(n, dtype=torch.long, device=x0.device)
        self.lower_const = torch.zeros(n, dtype=torch.float64, device=x0.device)  # largest that failed
        self.throttle = Throttle()
        if method == "cw":
            self.w0 = _to_attack_space(x0)
            self.recon = _to_model_space(self.w0)

    def norm_of(self, xk: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        d = _flat(xk - x0)
        if self.method == "cw":
            return d.norm(dim=1)
        if self.rule == "EN":
            return self.beta * d.abs().sum(1) + d.square().sum(1)
        return d.abs().sum(1)

    def record(self, rows: torch.Tensor, xk: torch.Tensor, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep ``xk`` where it fools and is the smallest so far; returns (fools, its norm)."""
        adv = _is_adv(logits, self.classes[rows], targeted=self.targeted, confidence=self.confidence)
        norm = self.norm_of(xk, self.x0[rows])
        better = adv & (norm < self.best_norm[rows])
        if bool(better.any()):
            r = rows[better]
            self.best[r] = xk[better]
            self.best_norm[r] = norm[better]
        return adv, norm

    def status(self, what: str, rows: torch.Tensor) -> None:
        """A progress line on clips ``rows`` after ``what``, when one is due."""
        if not _log.isEnabledFor(logging.INFO) or not self.throttle.due():
            return
        _log.info("%s: %s done on %d clips of the batch: %d fooled, %.0f gradient steps per clip, %s into the batch",
                  self.method, what, len(rows), int(torch.isfinite(self.best_norm[rows]).sum()),
                  float(self.steps_run[rows].double().mean()), self.throttle.elapsed())

    def at_constants(self, rows: torch.Tensor, consts: torch.Tensor) -> torch.Tensor:
        """Optimise clips ``rows`` at their constants; returns whether each fooled at its constant."""
        found = torch.zeros(len(rows), dtype=torch.bool, device=self.x0.device)
        if len(rows) == 0:
            return found
        step = self._cw if self.method == "cw" else self._ead
        return step(rows, consts, found)

    def _leave(self, live: torch.Tensor, loss: torch.Tensor, found: torch.Tensor, state: dict,
               t: int) -> torch.Tensor | None:
        """Per-clip early abort after step ``t``: the clips (positions in ``live``) that stay
        (None: no check at this step)."""
        check_norm, check_loss = t % self.patience == 0, t % self.loss_patience == 0
        if not (check_norm or check_loss):
            return None
        tol = 1.0 - self.min_improvement
        stalled = torch.zeros(len(live), dtype=torch.bool, device=live.device)
        if check_loss:
            stalled |= loss > tol * state["loss_prev"][live]
            state["loss_prev"][live] = loss
        if check_norm:
            norm_at = state["norm_at_const"][live]
            stalled |= found[live] & (norm_at > tol * state["norm_prev"][live])
            state["norm_prev"][live] = norm_at
        return ~stalled

    def _cw(self, rows: torch.Tensor, consts: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        b1, b2, eps = _ADAM
        n = len(rows)
        dev = self.x0.device
        w0, recon, cls = self.w0[rows], self.recon[rows], self.classes[rows]
        delta = torch.zeros_like(w0)
        if self.warm_start:  # from the smallest fooling point so far (clamped off the tanh's ends)
            have = torch.isfinite(self.best_norm[rows])
            if bool(have.any()):
                w_best = _to_attack_space(self.best[rows][have].clamp(*BOUNDS))
                delta[have] = w_best - w0[have]
        m, v = torch.zeros_like(w0), torch.zeros_like(w0)
        live = torch.arange(n, device=dev)  # positions (into rows) still optimising
        state = {"loss_prev": torch.full((n,), math.inf, device=dev),
                 "norm_prev": torch.full((n,), math.inf, device=dev),
                 "norm_at_const": torch.full((n,), math.inf, device=dev)}
        for t in range(1, self.steps + 1):
            d = delta.detach().requires_grad_(True)
            with torch.enable_grad():
                xk = _to_model_space(w0[live] + d)
                logits = self.model(xk)
                hinge = _hinge(logits, cls[live], targeted=self.targeted, confidence=self.confidence)
                loss = consts[live].float() * hinge + _flat(xk - recon[live]).square().sum(1)
                (g,) = torch.autograd.grad(loss.sum(), d)
            self.steps_run[rows[live]] += 1
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g.square()
            delta = d.detach() - self.step_size * (m / (1 - b1**t)) / (torch.sqrt(v / (1 - b2**t)) + eps)
            xk = xk.detach()
            adv, norm = self.record(rows[live], xk, logits.detach())
            found[live] |= adv
            state["norm_at_const"][live] = torch.where(adv, torch.minimum(norm, state["norm_at_const"][live]),
                                                       state["norm_at_const"][live])
            keep = self._leave(live, loss.detach(), found, state, t) if self.abort_early else None
            if keep is not None:
                if not bool(keep.all()):
                    live, delta, m, v = live[keep], delta[keep], m[keep], v[keep]
                    if len(live) == 0:
                        break
        return found

    def _ead(self, rows: torch.Tensor, consts: torch.Tensor, found: torch.Tensor) -> torch.Tensor:
        n = len(rows)
        dev = self.x0.device
        x0, cls = self.x0[rows], self.classes[rows]
        xk, yk = x0.clone(), x0.clone()
        if self.warm_start:
            have = torch.isfinite(self.best_norm[rows])
            xk[have] = self.best[rows][have]
            yk = xk.clone()
        live = torch.arange(n, device=dev)
        state = {"loss_prev": torch.full((n,), math.inf, device=dev),
                 "norm_prev": torch.full((n,), math.inf, device=dev),
                 "norm_at_const": torch.full((n,), math.inf, device=dev)}
        for it in range(self.steps):
            step = self.step_size * (1.0 - it / self.steps) ** 0.5  # square-root decay, as EAD
            y = yk.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(y)
                hinge = _hinge(logits, cls[live], targeted=self.targeted, confidence=self.confidence)
                loss = consts[live].float() * hinge + _flat(y - x0[live]).square().sum(1)
                (g,) = torch.autograd.grad(loss.sum(), y)
            self.steps_run[rows[live]] += 1
            x_old = xk
            xk = _shrink(y.detach() - step * g, x0[live], self.beta)
            yk = xk + it / (it + 3.0) * (xk - x_old)
            with torch.no_grad():
                logits_k = self.model(xk)
            adv, norm = self.record(rows[live], xk, logits_k)
            found[live] |= adv
            state["norm_at_const"][live] = torch.where(adv, torch.minimum(norm, state["norm_at_const"][live]),
                                                       state["norm_at_const"][live])
            keep = None
            if self.abort_early:
                # the elastic-net objective, the one the FISTA steps minimise
                objective = loss.detach() + self.beta * _flat(y.detach() - x0[live]).abs().sum(1)
                keep = self._leave(live, objective, found, state, it + 1)
            if keep is not None:
                if not bool(keep.all()):
                    live, xk, yk = live[keep], xk[keep], yk[keep]
                    if len(live) == 0:
                        break
        return found

    def binary_search(self, rows: torch.Tensor, consts: torch.Tensor, searches: int, growth: float, *,
                      geometric: bool = False, label: str = "") -> torch.Tensor:
        """Per-clip search over the constant for clips ``rows`` from ``consts``; returns the smallest
        constant that fooled each (+inf where none did).  C&W's (``geometric=False``): ×``growth``
        while no constant fooled, else the mean of the bounds (0 below the first).  From a learned
        start (``geometric=True``): ×/÷ ``growth`` until bracketed, then the geometric mean — the
        constants of one batch spread over decades, so a bracket is halved on the log scale.
        ``label`` names the search in its progress lines."""
        c = consts.clone()
        lower = torch.zeros_like(c)
        upper = torch.full_like(c, math.inf)
        for s in range(searches):
            if s == searches - 1 and searches >= 10:  # Foolbox: the last step repeats the best constant
                c = torch.clamp(upper, max=1e10)
            found = self.at_constants(rows, c)
            self.status(f"{label}constant {s + 1} of {searches}", rows)
            upper = torch.where(found, c, upper)
            lower = torch.where(found, lower, c)
            if geometric:
                mid = torch.where(lower > 0, torch.sqrt(lower * upper), upper / growth)
            else:
                mid = (lower + upper) / 2
            c = torch.where(torch.isinf(upper), c * growth, mid)
        self.lower_const[rows] = torch.maximum(self.lower_const[rows], lower)
        return upper


def polish(run: _Run, const: torch.Tensor, *, steps: int, patience: int, min_improvement: float,
           start: str = "best") -> None:
    """Every clip that fooled optimises twice more, for up to ``steps`` steps each with the slower
    stopping rule given: at its smallest fooling constant, from its smallest fooling point
    (``start="best"``) or from the clean clip (``"clean"``), then at the largest constant that failed
    (half the fooling one when none did) from its smallest fooling point.

    The binary search's constants are cut short by the early abort; warm-started, the first run
    converges onto the boundary near the point found, and the second, whose pull toward the clean
    clip is stronger, slides along it to smaller perturbations (each fooling iterate is recorded).
    EAD's first run starts clean: FISTA's shrinkage builds a sparse perturbation from zero, while
    from the search's dense point its L1 stays up.
    """
    rows = torch.nonzero(torch.isfinite(const)).flatten()
    if len(rows) == 0:
        return
    upper, lower = const[rows], run.lower_const[rows]
    saved = (run.steps, run.patience, run.loss_patience, run.min_improvement, run.warm_start)
    run.steps, run.patience, run.loss_patience = steps, max(1, patience), max(1, patience)
    run.min_improvement = min_improvement
    try:
        run.warm_start = start == "best"
        run.at_constants(rows, upper)
        run.status("polish run 1 of 2", rows)
        run.warm_start = True
        run.at_constants(rows, torch.where(lower > 0, lower, upper / 2))
        run.status("polish run 2 of 2", rows)
    finally:
        run.steps, run.patience, run.loss_patience, run.min_improvement, run.warm_start = saved


def const_search(
    model: nn.Module,
    x0: torch.Tensor,
    classes: torch.Tensor,
    *,
    targeted: bool,
    method: str,
    steps: int,
    step_size: float,
    binary_search_steps: int,
    initial_const: float,
    confidence: float = 0.0,
    regularization: float = 1e-2,
    decision_rule: str = "EN",
    abort_early: bool = True,
    patience: int = 10,
    min_improvement: float = 1e-3,
    loss_patience: int | None = None,
    pilot: int = 0,
    pilot_extra: int = 0,
    start_const: float | None = None,
    const_growth: float = 4.0,
    warm_start: bool = False,
    polish_steps: int = 0,
    polish_patience: int = 50,
    polish_min_improvement: float = 1e-4,
    polish_start: str = "best",
) -> SearchOutcome:
    """Per-clip CW-L2 (``method="cw"``) or EAD (``"ead"``) on ``x0`` toward ``classes``.

    Args:
        model: maps inputs in [0, 1] to logits (eval mode, frozen weights: the caller's);
            every forward is a query, every differentiated one a gradient step.
        classes: the target class (``targeted``) or the true label per clip.
        steps, step_size: optimisation steps per constant (Adam's learning rate in tanh
            space / EAD's initial FISTA step).
        binary_search_steps: constants tried per clip (the pilot: ``pilot_extra`` more).
        abort_early, patience, min_improvement: the per-clip early abort (module docstring).
        pilot: clips that learn the starting constant and growth for the others (0: none).
        start_const, const_growth: instead of a pilot, every clip starts at ``start_const`` and
            moves ×/÷ ``const_growth`` until bracketed, then bisects on the log scale.
        warm_start: each constant starts from the clip's smallest fooling point so far (measured:
            ~25 % fewer steps, 2-3 % larger norms; off by default).
        polish_steps, polish_patience, polish_min_improvement, polish_start: after the search,
            :func:`polish` (0 steps: none); the early abort of its two runs checks every
            ``polish_patience`` steps for a relative gain of ``polish_min_improvement``; its first
            run starts from the clip's smallest fooling point ("best") or the clean clip ("clean").
        loss_patience: steps between the early abort's checks of the objective (None: ``patience``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    run = _Run(model, x0, classes, targeted=targeted, method=method, steps=steps, step_size=step_size,
               confidence=confidence, regularization=regularization, decision_rule=decision_rule,
               abort_early=abort_early, patience=patience, min_improvement=min_improvement,
               loss_patience=loss_patience, warm_start=warm_start)
    n = len(x0)
    dev = x0.device
    const = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
    first = pilot_rows(n, pilot)
    start, growth = None, GROWTH
    if start_const is not None:  # given: no pilot, every clip's search is its own
        first, start, growth = np.zeros(0, dtype=np.int64), float(start_const), float(const_growth)
    c0 = torch.full((n,), float(initial_const), dtype=torch.float64, device=dev)  # numpy's, as Foolbox
    if len(first):
        sel = torch.as_tensor(first, device=dev)
        const[sel] = run.binary_search(sel, c0[sel], binary_search_steps + pilot_extra, GROWTH, label="pilot ")
        learned = const[sel][torch.isfinite(const[sel])]
        if len(learned):
            logs = torch.log(learned.double())
            start = float(torch.exp(logs.median()))
            spread = float(torch.exp(logs.std())) if len(learned) > 1 else GROWTH  # one standard deviation
            growth = min(max(spread, LEARNED_GROWTH[0]), LEARNED_GROWTH[1])
    rest = np.setdiff1d(np.arange(n), first)
    if len(rest):
        sel = torch.as_tensor(rest, device=dev)
        init = c0[sel] if start is None else torch.full((len(rest),), start, dtype=torch.float64, device=dev)
        const[sel] = run.binary_search(sel, init, binary_search_steps, growth, geometric=start is not None)
    if polish_steps > 0:
        polish(run, const, steps=polish_steps, patience=polish_patience, min_improvement=polish_min_improvement,
               start=polish_start)
    return SearchOutcome(adversarial=run.best, norm=run.best_norm, const=const, steps=run.steps_run,
                         pilot=first, start_const=start, growth=growth)
