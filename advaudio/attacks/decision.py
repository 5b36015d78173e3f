"""Decision-based black-box attacks and their starting points: Boundary, HopSkipJump.

*Starting points* (``start_rule``): for each sample the nearest (L2) input of the
starting pool (default: the attacked batch itself) that the model classifies as the
target (targeted) or not as the true label (untargeted); if none, the nearest of
``noise_draws`` seeded uniform-noise images classified that way; if none either, the
sample is not attacked and counts as a failure, with a note.  ``start_rule="noise"``
skips the pool.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from advaudio.attacks._model import batched_logits, chunk_seed
from advaudio.attacks.base import AttackContext
from advaudio.attacks.minimisation import MinimisationAttack
from advaudio.attacks.params import AttackConfig, BoundaryParams, HopSkipJumpParams
from advaudio.attacks.results import Note


class DecisionAttack(MinimisationAttack):
    """Decision-based black-box attacks started from adversarial starting points."""

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
            raw, _, _ = self.attack(run.fb, config.params)(
                run.fmodel,
                x[idx],
                self.criterion(run, labels[idx], t),
                epsilons=None,
                starting_points=starts[idx],
            )
            adv[idx] = raw
        return adv

    def chunk_notes(self, counters, config):
        what = "classified as the target" if config.targeted else "misclassified"
        counts = {"pool": counters.get("pool", 0), "noise": counters.get("noise", 0),
                  "noise_draws": config.params.noise_draws, "none": counters.get("none", 0)}
        notes = [Note(
            "starting-points",
            f"{self.name} starting points ({what}): {counts['pool']} nearest from "
            f"the pool, {counts['noise']} from {counts['noise_draws']} uniform-noise "
            f"draws, {counts['none']} without any",
            counts,
        )]
        if counts["none"]:
            notes.append(Note(
                "no-starting-point",
                f"{self.name}: {counts['none']} sample(s) had no starting point and were "
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

