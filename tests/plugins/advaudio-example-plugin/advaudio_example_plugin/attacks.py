"""``mifgsm``: momentum iterative FGSM (Dong et al. 2018), one ε per clip; ``onestep``: one ε per call."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advaudio.attacks import FIXED_BUDGET, AttackParams, AttackSpec
from advaudio.attacks.stepping import StepResult, margins


@dataclass(frozen=True, kw_only=True)
class MIFGSMParams(AttackParams):
    """mifgsm: ``steps`` signed steps of ``step_size``·ε along the momentum of L1-normalised gradients."""

    attack: ClassVar[str] = "mifgsm"
    kind: ClassVar[str] = FIXED_BUDGET
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    epsilon: float | None = None
    steps: int = 10
    step_size: float = 0.1
    decay: float = 1.0
    random_start: bool = False


def _log(record: dict) -> None:
    """Test hook: one JSON line per call when ADVAUDIO_EXAMPLE_PLUGIN_LOG names a file."""
    path = os.environ.get("ADVAUDIO_EXAMPLE_PLUGIN_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def mifgsm(model, x, classes, epsilon, *, targeted, steps, step_size, decay, noise=None, early_stop=True):
    """The attack itself: each clip within its own L∞ ball ``epsilon`` (shape (N,)); a StepResult."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    eps = epsilon.to(x.dtype).view(shape)
    adv = x.clone() if noise is None else (x + eps * noise).clamp(0, 1)
    g = torch.zeros_like(x)
    done = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    first = adv.clone()  # each clip's first successful iterate
    steps_run = torch.zeros(len(x), dtype=torch.long, device=x.device)
    best = torch.full((len(x),), float("-inf"), device=x.device)
    sign = -1.0 if targeted else 1.0  # toward the target, away from the label
    for _ in range(steps):
        xa = adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, classes, reduction="sum"), xa)
        logits = logits.detach()
        best = torch.maximum(best, margins(logits.float(), classes, targeted=targeted))
        pred = logits.argmax(1)
        hit = (pred == classes) if targeted else (pred != classes)
        first = torch.where((hit & ~done).view(shape), xa.detach(), first)
        done |= hit
        if early_stop and bool(done.all()):
            break
        steps_run += (~done).long()
        g = decay * g + grad / grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(shape)
        step = adv.detach() + sign * step_size * eps * g.sign()
        adv = (x + torch.maximum(torch.minimum(step - x, eps), -eps)).clamp(0, 1)
    with torch.no_grad():
        final = model(adv)
    best = torch.maximum(best, margins(final.float(), classes, targeted=targeted))
    if early_stop:
        adv = torch.where(done.view(shape), first, adv)
        with torch.no_grad():
            final = model(adv)
    pred = final.argmax(1)
    success = (pred == classes) if targeted else (pred != classes)
    return StepResult(adversarial=adv.detach(), success=success, steps_run=steps_run, margin=best)


class MIFGSM(AttackSpec):
    params_type = MIFGSMParams
    description = "momentum iterative FGSM (Dong et al. 2018)"
    per_clip_epsilon = True  # the per-clip budget search calls perturb with one ε per clip

    def perturb(self, step, x, labels, targets, epsilon):
        p = step.config.params
        _log({"attack": "mifgsm", "clips": len(x), "epsilons": sorted({round(float(e), 12) for e in epsilon})})
        return mifgsm(step.model, x, targets if targets is not None else labels, epsilon,
                      targeted=targets is not None, steps=step.steps or p.steps, step_size=p.step_size,
                      decay=p.decay, noise=step.noise, early_stop=step.early_stop)


@dataclass(frozen=True, kw_only=True)
class OneStepParams(AttackParams):
    """onestep: one signed gradient step of ε (an attack that takes one ε per call)."""

    attack: ClassVar[str] = "onestep"
    kind: ClassVar[str] = FIXED_BUDGET
    norms: ClassVar[tuple[str, ...]] = ("linf",)

    epsilon: float | None = None


class OneStep(AttackSpec):
    params_type = OneStepParams
    description = "one signed gradient step of ε, one ε per call (bisected)"

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        _log({"attack": "onestep", "clips": len(x), "epsilons": [float(epsilon)]})
        classes = targets if targets is not None else labels
        xa = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(run.counter(xa), classes, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xa)
        sign = -1.0 if targets is not None else 1.0
        return (x + sign * float(epsilon) * grad.sign()).clamp(0, 1)
