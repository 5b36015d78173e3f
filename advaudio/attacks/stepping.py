"""Gradient steps with one ε per sample: FGSM, BIM and PGD as one batched torch loop.

Foolbox 3's fixed-epsilon attacks take one scalar ε per call, so a search in which
every clip has its own bracket cannot go through them.  :func:`gradient_attack`
is the same algorithm as Foolbox's ``BaseGradientDescent`` (its ``run``: the summed
cross-entropy, gradient ascent untargeted / descent toward the target, sign (L∞)
or L2-normalised gradients, steps of ``rel_stepsize·ε``, projection onto the
ε-ball, clipping to [0, 1]; FGSM/FGM are one step with ``rel_stepsize`` 1) with ε a
tensor of shape ``(N,)``.  With ``early_stop=False`` and a common ε it returns what
Foolbox returns (tested against ``LinfBasicIterativeAttack``).

``early_stop=True`` freezes a sample at the first iterate that reaches its goal
(target class, or any other class) and drops it from the batch; success then means
"some iterate within ``steps`` succeeded", never less than the last iterate does.

Random starts are drawn per sample (``noise``: one unit draw per sample, scaled by
its ε), so a sample's trajectory does not depend on which other samples share its
batch: job-array slices reproduce an unsliced run.

Device: everything stays on the model's device; the only host round trip is the
compaction of finished samples every ``compact_every`` steps (default: every step
on CPU, every 8 on CUDA), never a per-step ``.item()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from advaudio.attacks._model import BOUNDS

__all__ = ["StepResult", "gradient_attack", "unit_noise"]


@dataclass(frozen=True)
class StepResult:
    """Adversarial inputs, per-sample success of the returned input, steps run and best margin."""

    adversarial: torch.Tensor
    success: torch.Tensor
    steps_run: torch.Tensor  # (N,) gradient steps each sample took
    margin: torch.Tensor  # (N,) best margin over the iterates (> 0: goal reached), see margins()


def unit_noise(shape: tuple[int, ...], *, norm: str, seeds: list[int], device: torch.device) -> torch.Tensor:
    """One random-start draw per sample, seeded per sample: uniform in [-1, 1]^d (L∞) or
    uniform in the unit L2 ball (Voelker et al., as Foolbox)."""
    out = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s))
        if norm == "linf":
            out.append(torch.rand(shape, generator=g) * 2 - 1)
        else:
            n = int(torch.tensor(shape).prod())
            v = torch.randn(n + 2, generator=g)
            out.append((v / v.norm())[:n].reshape(shape))
    if not out:
        return torch.empty((0, *shape), device=device)
    return torch.stack(out).to(device)


def margins(logits: torch.Tensor, classes: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """How far each sample is past its goal: ``z_target - max_other`` (targeted) or
    ``max_other - z_label`` (untargeted); > 0 where the goal is reached."""
    own = logits.gather(1, classes.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, classes.view(-1, 1), float("-inf")).amax(1)
    return own - other if targeted else other - own


def _flat_norm(v: torch.Tensor) -> torch.Tensor:
    return v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.ndim - 1)))


def gradient_attack(
    model: nn.Module,
    x0: torch.Tensor,
    classes: torch.Tensor,
    epsilon: torch.Tensor,
    *,
    targeted: bool,
    norm: str = "linf",
    steps: int = 1,
    rel_stepsize: float = 1.0,
    noise: torch.Tensor | None = None,
    early_stop: bool = True,
    full_margin: bool = False,
    compact_every: int | None = None,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> StepResult:
    """``steps`` gradient steps from ``x0`` (or ``x0 + ε·noise``) within each sample's ε-ball.

    Args:
        model: maps inputs in [0, 1] to logits (eval mode, frozen weights: the caller's).
        classes: the target class (``targeted``) or the true label per sample.
        epsilon: ``(N,)`` budget per sample in ``norm`` (``"linf"`` or ``"l2"``).
        noise: ``(N, ...)`` unit random-start draws (:func:`unit_noise`); None: no random start.
        early_stop: return each sample's first successful iterate and stop stepping it.
        full_margin: with ``early_stop``, keep stepping successful samples (their output
            stays the first successful iterate) so that ``margin`` is the best over every step.
        compact_every: drop finished samples from the batch every this many steps.
        objective: ``objective(logits, rows)``, the summed loss of the samples at ``rows`` (indices
            into the batch) that the steps ascend (untargeted) or descend (targeted); None: the
            cross-entropy toward ``classes``. TRADES's inner maximisation of the KL divergence
            from the clean output uses it (:mod:`advaudio.training.defenses`).
    """
    if compact_every is None:
        compact_every = 1 if x0.device.type == "cpu" else 8
    shape = (-1,) + (1,) * (x0.ndim - 1)
    eps = epsilon.to(x0.dtype).view(shape)
    step = eps * rel_stepsize
    sign = -1.0 if targeted else 1.0
    x = x0.clone() if noise is None else (x0 + eps * noise).clamp(*BOUNDS)
    n = len(x0)
    done = torch.zeros(n, dtype=torch.bool, device=x0.device)
    steps_run = torch.zeros(n, dtype=torch.long, device=x0.device)
    active = torch.arange(n, device=x0.device)
    out = x.clone() if full_margin else x  # full_margin: the first successful iterate per sample
    best = torch.full((n,), float("-inf"), device=x0.device)

    def reached(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(1)
        return pred == cls if targeted else pred != cls

    for t in range(steps):
        if len(active) == 0:
            break
        xa = x[active].detach().requires_grad_(True)
        cls = classes[active]
        with torch.enable_grad():
            logits = model(xa)
            loss = (F.cross_entropy(logits, cls, reduction="sum") if objective is None
                    else objective(logits, active))
        (grad,) = torch.autograd.grad(loss, xa)
        best[active] = torch.maximum(best[active], margins(logits.detach().float(), cls, targeted=targeted))
        if norm == "linf":
            grad = grad.sign()
        else:
            grad = grad / _flat_norm(grad)
        xd = xa.detach()
        new = xd + sign * step[active] * grad
        delta = new - x0[active]
        if norm == "linf":
            delta = torch.maximum(torch.minimum(delta, eps[active]), -eps[active])
        else:
            delta = delta * torch.clamp(eps[active] / _flat_norm(delta), max=1.0)
        new = (x0[active] + delta).clamp(*BOUNDS)
        if early_stop:
            hit = reached(logits.detach(), cls)  # the iterate this step started from
            first = hit & ~done[active]
            if full_margin:  # the output is the first success; the trajectory goes on
                out[active] = torch.where(first.view(shape), xd, out[active])
            else:
                new = torch.where(hit.view(shape), xd, new)
            done[active] |= hit
            steps_run[active] += (~done[active]).long()
        else:
            steps_run[active] += 1
        x[active] = new
        if early_stop and not full_margin and ((t + 1) % compact_every == 0):
            active = active[~done[active]]  # the one host sync, every compact_every steps
    with torch.no_grad():
        final = model(x) if n else None
        if n:
            best = torch.maximum(best, margins(final.float(), classes, targeted=targeted))
        if full_margin and early_stop and n:
            x = torch.where(done.view(shape), out, x)
            final = model(x)
    success = reached(final, classes) if n else done
    return StepResult(adversarial=x.detach(), success=success, steps_run=steps_run, margin=best)
