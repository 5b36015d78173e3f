"""Fixed-budget gradient attacks: FGSM, BIM, PGD.

Sign (L∞) or normalised (L2) gradient steps of ``step_size``·ε, projection onto the
ε-ball, clipping to [0, 1].  Targeted FGSM is one gradient step of size ε toward the
target (Kurakin et al.'s step l.l.), run as ``BasicIterative(steps=1, step=ε)``
because Foolbox's FGSM rejects targeted criteria; untargeted FGSM is Foolbox's
FGSM/FGM.  BIM has no random start; PGD starts uniformly in the ε-ball (seeded).

With one ε per clip (:meth:`GradientAttack.perturb`, the per-clip budget search) the
same steps run as one batched torch loop (:mod:`~advaudio.attacks.stepping`).
"""

from __future__ import annotations

from typing import Any

from advaudio.attacks.base import AttackSpec
from advaudio.attacks.params import BIMParams, FGSMParams, PGDParams
from advaudio.attacks.results import Note
from advaudio.attacks.stepping import gradient_attack


class GradientAttack(AttackSpec):
    """Iterated gradient steps through Foolbox's ``<Linf|L2><fb_family>Attack``."""

    fb_family = ""  # "BasicIterative" | "ProjectedGradientDescent"
    per_clip_epsilon = True

    def attack(self, fb: Any, params: Any, targeted: bool) -> Any:
        prefix = "Linf" if params.norm == "linf" else "L2"
        cls = getattr(fb.attacks, f"{prefix}{self.fb_family}Attack")
        return cls(rel_stepsize=params.step_size, steps=params.steps, random_start=params.random_start)

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        assert epsilon is not None
        attack = self.attack(run.fb, config.params, targets is not None)
        _, clipped, _ = attack(
            run.fmodel, x, self.criterion(run, labels, targets), epsilons=float(epsilon)
        )
        return clipped

    def perturb(self, step, x, labels, targets, epsilon):
        # FGSM has no steps parameter: one step of step_size·ε (Foolbox's FGSM/FGM).
        p = step.config.params
        return gradient_attack(step.model, x, targets if targets is not None else labels, epsilon,
                               targeted=targets is not None, norm=p.norm,
                               steps=step.steps or int(getattr(p, "steps", 1)), rel_stepsize=float(p.step_size),
                               noise=step.noise, early_stop=step.early_stop, full_margin=step.full_margin)


class FGSM(GradientAttack):
    params_type = FGSMParams
    description = "fast gradient sign method (one step of size ε; L2: fast gradient method)"

    def plan(self, config):
        if config.targeted:
            return True, [Note(
                "fgsm-targeted-step",
                "fgsm targeted: one gradient step of size ε toward the target class "
                "(x - ε·sign(∇ CE(x, target)), Kurakin et al.'s step-l.l.), run as "
                "Foolbox's BasicIterativeAttack(steps=1, rel_stepsize=1) because "
                "Foolbox's FGSM rejects targeted criteria",
            )]
        return False, []

    def attack(self, fb, params, targeted):
        prefix = "Linf" if params.norm == "linf" else "L2"
        if targeted:
            cls = getattr(fb.attacks, f"{prefix}BasicIterativeAttack")
            return cls(rel_stepsize=params.step_size, steps=1, random_start=params.random_start)
        cls = getattr(fb.attacks, f"{prefix}FastGradientAttack")
        attack = cls(random_start=params.random_start)
        attack.rel_stepsize = params.step_size
        return attack


class BIM(GradientAttack):
    params_type = BIMParams
    description = "basic iterative method (iterated FGSM, no random start)"
    fb_family = "BasicIterative"


class PGD(GradientAttack):
    params_type = PGDParams
    description = "projected gradient descent (Madry et al.), random start in the ε-ball"
    fb_family = "ProjectedGradientDescent"
