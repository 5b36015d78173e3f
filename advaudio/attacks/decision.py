"""Decision-based black-box attacks and their starting points: Boundary, HopSkipJump.

*Starting points* (``start_rule``): for each sample the nearest (L2) input of the
starting pool (default: the attacked batch itself) that the model classifies as the
target (targeted) or not as the true label (untargeted); if none, the nearest of
``noise_draws`` seeded uniform-noise images classified that way; if none either, the
sample is not attacked and counts as a failure, with a note.  ``start_rule="noise"``
skips the pool.

*Query budget* (``max_queries`` per clip): Foolbox's Boundary and HopSkipJump run
for ``steps`` iterations whatever they cost.  Here the model they query is a
:class:`QueryBudget`: it counts every forward of every clip — the starting point's
check, Foolbox's own checks, gradient-estimation samples and binary searches —
and stops the attack before a query past the budget.  A decision-based attacker
sees the label of every point it queries, so each clip's result is the smallest
adversarial (in the budget norm) among all its queries, the starting point
included.  The pools' classification (the batch's clean predictions, the
``noise_draws`` noise images) is done once per run for every clip; it is counted
in the run's queries but charged to no clip.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from advaudio.attacks._model import BOUNDS, batched_logits, chunk_seed
from advaudio.attacks.base import AttackContext
from advaudio.attacks.minimisation import MinimisationAttack
from advaudio.attacks.params import AttackConfig, BoundaryParams, HopSkipJumpParams
from advaudio.attacks.results import Note
from advaudio.attacks.stepping import margins


class QueryBudgetExhausted(Exception):
    """Raised by :class:`QueryBudget` instead of a query past the budget: ends the attack."""


class QueryBudget(nn.Module):
    """The model as a decision-based attack sees it: at most ``budget`` queries per clip.

    Foolbox's Boundary and HopSkipJump query every clip of their batch in each call
    (row i is clip i); a call of another size is charged ⌈size / clips⌉ to every
    clip.  ``used`` starts at the queries already spent per clip (the starting
    point's check).  Keeps, per clip, the smallest adversarial queried so far
    (``best``, ``best_norm``; the attacker saw its label).
    """

    def __init__(self, model: nn.Module, x0: torch.Tensor, classes: torch.Tensor, starts: torch.Tensor, *,
                 targeted: bool, norm: str, budget: int, used: int = 1):
        super().__init__()
        self.model, self.x0, self.classes = model, x0, classes
        self.targeted, self.norm, self.budget, self.used = targeted, norm, budget, used
        self.best = starts.clone()
        self.best_norm = self._norm(starts)
        self.exhausted = False
        self.eval()  # the wrapped model is in eval mode (attack_mode); say so to Foolbox

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - self.x0).flatten(1)
        return d.norm(dim=1) if self.norm == "l2" else d.abs().amax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(self.x0)
        cost = 1 if len(x) == n else math.ceil(len(x) / max(1, n))
        if self.used + cost > self.budget:
            self.exhausted = True
            raise QueryBudgetExhausted
        self.used += cost
        logits = self.model(x)
        if len(x) == n:
            with torch.no_grad():
                x = x.detach().to(self.x0.dtype).clamp(*BOUNDS)
                ok = margins(logits.detach().float(), self.classes, targeted=self.targeted) > 0
                norm = self._norm(x)
                better = ok & (norm < self.best_norm)
                if bool(better.any()):
                    self.best[better] = x[better]
                    self.best_norm[better] = norm[better]
        return logits


class DecisionAttack(MinimisationAttack):
    """Decision-based black-box attacks started from adversarial starting points, within a query
    budget per clip."""

    def uses_pool(self, params):
        return params.start_rule == "nearest"

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        starts, source = _starting_points(run, x, labels, targets, config)
        for key in ("pool", "noise", "none"):
            counters[key] = counters.get(key, 0) + int((source == key).sum())
        adv = x.clone()
        have = (source != "none").nonzero()[0]
        if len(have):
            idx = torch.from_numpy(have).to(x.device)
            t = targets[idx] if targets is not None else None
            params = config.params
            budget = QueryBudget(run.counter, x[idx], t if t is not None else labels[idx], starts[idx],
                                 targeted=t is not None, norm=params.norm, budget=params.max_queries)
            fmodel = run.fb.PyTorchModel(budget, bounds=BOUNDS, device=run.device)
            try:
                self.attack(run.fb, params)(fmodel, x[idx], self.criterion(run, labels[idx], t), epsilons=None,
                                            starting_points=starts[idx])
            except QueryBudgetExhausted:
                pass  # the budget is spent: each clip keeps the smallest adversarial it queried
            adv[idx] = budget.best
            counters["attacked"] = counters.get("attacked", 0) + len(idx)
            counters["exhausted"] = counters.get("exhausted", 0) + (len(idx) if budget.exhausted else 0)
            counters["most_used"] = max(counters.get("most_used", 0), budget.used)
            counters["used"] = counters.get("used", 0) + budget.used * len(idx)
        return adv

    def chunk_notes(self, counters, config):
        notes = []
        if counters.get("attacked"):
            counts = {"max_queries": config.params.max_queries, "most_used": counters["most_used"],
                      "queries_per_clip": counters["used"] / counters["attacked"],
                      "exhausted": counters["exhausted"], "attacked": counters["attacked"]}
            notes.append(Note(
                "query-budget",
                f"at most {counts['max_queries']} queries per clip (its starting point's check, "
                f"Foolbox's checks, estimates and binary searches); {counts['exhausted']} of "
                f"{counts['attacked']} clip(s) stopped at the budget, the most used {counts['most_used']}; "
                "each clip's result is the smallest adversarial it queried",
                counts,
            ))
        what = "classified as the target" if config.targeted else "misclassified"
        counts = {"pool": counters.get("pool", 0), "noise": counters.get("noise", 0),
                  "noise_draws": config.params.noise_draws, "none": counters.get("none", 0)}
        notes.append(Note(
            "starting-points",
            f"{self.name} starting points ({what}): {counts['pool']} nearest from "
            f"the pool, {counts['noise']} from {counts['noise_draws']} uniform-noise "
            f"draws, {counts['none']} without any",
            counts,
        ))
        if counts["none"]:
            notes.append(Note(
                "no-starting-point",
                f"{counts['none']} sample(s) had no starting point and were "
                "not attacked (counted as failures)",
                {"count": counts["none"]},
            ))
        return notes


class Boundary(DecisionAttack):
    params_type = BoundaryParams
    description = "boundary attack (Brendel et al.), decision-based random walk"

    def attack(self, fb, params):
        return fb.attacks.BoundaryAttack(
            steps=params.steps,
            spherical_step=params.step_size,
            source_step=params.step_size,
            tensorboard=False,
        )


class HopSkipJump(DecisionAttack):
    params_type = HopSkipJumpParams
    description = "HopSkipJump (Chen et al.), decision-based with gradient estimates"

    def attack(self, fb, params):
        return fb.attacks.HopSkipJumpAttack(
            steps=params.steps,
            initial_gradient_eval_steps=params.gradient_eval_steps,
            max_gradient_eval_steps=params.max_gradient_eval_steps,
            constraint=params.norm,
            tensorboard=False,
        )


def _nearest_valid(
    x: torch.Tensor,
    cand: torch.Tensor,
    cand_pred: torch.Tensor,
    want: torch.Tensor,
    targeted: bool,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest (L2) candidate with the required class, per row of ``x``."""
    flat = x.reshape(len(x), -1)
    best_d = torch.full((len(x),), math.inf, device=x.device)
    best_i = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for s in range(0, len(cand), batch_size):
        c = cand[s : s + batch_size].reshape(-1, flat.shape[1])
        p = cand_pred[s : s + batch_size]
        d = torch.cdist(flat, c)
        valid = p[None, :] == want[:, None] if targeted else p[None, :] != want[:, None]
        d = torch.where(valid, d, torch.full_like(d, math.inf))
        m, i = d.min(dim=1)
        better = m < best_d
        best_d = torch.where(better, m, best_d)
        best_i = torch.where(better, i + s, best_i)
    return best_i, torch.isfinite(best_d)


@torch.no_grad()
def _starting_points(
    run: AttackContext,
    x: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    config: AttackConfig,
) -> tuple[torch.Tensor, np.ndarray]:
    targeted = targets is not None
    want = targets if targeted else labels
    starts = x.clone()
    source = np.full(len(x), "none", dtype=object)
    todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
    pools = []
    params = config.params
    if params.start_rule == "nearest" and run.pool_x is not None:
        pools.append(("pool", run.pool_x, run.pool_pred))
    if params.noise_draws > 0:
        if run.noise_x is None:
            g = torch.Generator().manual_seed(chunk_seed(config.seed, 2**31 - 1))
            noise = torch.rand((params.noise_draws, *x.shape[1:]), generator=g)
            run.noise_x = noise.to(x.device)
            run.noise_pred = batched_logits(run.counter, run.noise_x, run.batch_size).argmax(1)
        pools.append(("noise", run.noise_x, run.noise_pred))
    for key, cand, pred in pools:
        if not bool(todo.any()):
            break
        rows = todo.nonzero().flatten()
        idx, found = _nearest_valid(x[rows], cand, pred, want[rows], targeted, run.batch_size)
        rows, idx = rows[found], idx[found]
        if len(rows) == 0:
            continue
        # check with the counted model, as Foolbox will (it raises on a non-adversarial start)
        p = batched_logits(run.counter, cand[idx], run.batch_size).argmax(1)
        ok = p == want[rows] if targeted else p != want[rows]
        rows, idx = rows[ok], idx[ok]
        starts[rows] = cand[idx]
        todo[rows] = False
        source[rows.cpu().numpy()] = key
    return starts, source

