"""Minimisation attacks that search each sample's smallest perturbation: DeepFool, CW, EAD, FMN.

DeepFool always runs untargeted: Foolbox accepts a targeted criterion but only walks
to the nearest boundary (noted).  CW and EAD binary-search the constant c; samples
that miss their target are retried with a larger constant and more steps
(``const_retries``, noted).  Foolbox's CW/EAD return zeros where they fail; the
engine puts the clean input there.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from advaudio.attacks.base import AttackSpec
from advaudio.attacks.params import AttackParams, CarliniWagnerParams, DeepFoolParams, EADParams, FMNParams
from advaudio.attacks.results import Note


class MinimisationAttack(AttackSpec):
    """One Foolbox call with ``epsilons=None``: the raw (unbounded) adversarials."""

    def attack(self, fb: Any, params: AttackParams) -> Any:
        raise NotImplementedError

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        attack = self.attack(run.fb, config.params)
        raw, _, _ = attack(run.fmodel, x, self.criterion(run, labels, targets), epsilons=None)
        return raw


class DeepFool(MinimisationAttack):
    params_type = DeepFoolParams
    targetable = False
    description = "DeepFool: linearised steps to the nearest decision boundary"

    def plan(self, config):
        if config.targeted:
            return False, [Note(
                "untargeted",
                "deepfool runs untargeted: Foolbox's DeepFool accepts a targeted criterion "
                "but only walks to the nearest class boundary, so success means "
                "predicted != label",
            )]
        return False, []

    def attack(self, fb, params):
        cls = fb.attacks.L2DeepFoolAttack if params.norm == "l2" else fb.attacks.LinfDeepFoolAttack
        return cls(steps=params.steps, candidates=params.candidates, overshoot=params.overshoot)


class ConstSearchAttack(MinimisationAttack):
    """CW-type attacks with a binary search over the constant c; samples that miss
    their target are retried with a larger constant and more steps."""

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        adv = super().execute(
            run, x, labels, targets, config=config, epsilon=epsilon, counters=counters
        )
        ok = self.verify(run, adv, labels, targets)
        params = config.params
        const, steps = params.initial_const, params.steps
        for attempt in range(params.const_retries):
            missing = (~ok).nonzero().flatten()
            if len(missing) == 0:
                break
            if attempt == 0:
                counters["retried"] = counters.get("retried", 0) + len(missing)
            const *= 10.0 ** max(params.binary_search_steps, 1)
            steps *= 2
            retry = dataclasses.replace(params, initial_const=const, steps=steps)
            t = targets[missing] if targets is not None else None
            raw, _, _ = self.attack(run.fb, retry)(
                run.fmodel, x[missing], self.criterion(run, labels[missing], t), epsilons=None
            )
            adv[missing] = raw
            ok[missing] = self.verify(run, raw, labels[missing], t)
            counters["last_const"] = const  # type: ignore[assignment]
            counters["last_steps"] = steps
        counters["failed"] = counters.get("failed", 0) + int((~ok).sum())
        return adv

    def chunk_notes(self, counters, config):
        if not counters.get("retried"):
            return []
        params = config.params
        counts = {"retried": counters["retried"], "const_retries": params.const_retries,
                  "last_const": counters["last_const"], "last_steps": counters["last_steps"],
                  "failed": counters.get("failed", 0)}
        return [Note(
            "const-retries",
            f"{self.name}: {counts['retried']} sample(s) missed after the first constant "
            f"search (initial_const={params.initial_const:g}); retried up to "
            f"{params.const_retries} time(s), last with initial_const="
            f"{counts['last_const']:g}, steps={counts['last_steps']}; "
            f"{counts['failed']} still failed",
            counts,
        )]


class CarliniWagnerL2(ConstSearchAttack):
    params_type = CarliniWagnerParams
    description = "Carlini-Wagner L2 (Adam in tanh space, binary search over c)"

    def attack(self, fb, params):
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=params.binary_search_steps,
            steps=params.steps,
            stepsize=params.step_size,
            confidence=params.confidence,
            initial_const=params.initial_const,
            abort_early=True,
        )


class EAD(ConstSearchAttack):
    params_type = EADParams
    description = "elastic-net attack (EAD, L1 + L2 regularised CW); budget in L1"

    def attack(self, fb, params):
        return fb.attacks.EADAttack(
            binary_search_steps=params.binary_search_steps,
            steps=params.steps,
            initial_stepsize=params.step_size,
            confidence=params.confidence,
            initial_const=params.initial_const,
            regularization=params.regularization,
            decision_rule=params.decision_rule,
            abort_early=True,
        )


class FastMinimumNorm(MinimisationAttack):
    """Foolbox's ``L2FMNAttack`` / ``LInfFMNAttack`` / ``L1FMNAttack``, targeted where asked."""

    params_type = FMNParams
    description = "fast minimum-norm attack (Pintor et al. 2021): ε adapted along one gradient trajectory"

    def attack(self, fb, params):
        cls = {"l2": fb.attacks.L2FMNAttack, "linf": fb.attacks.LInfFMNAttack, "l1": fb.attacks.L1FMNAttack}
        return cls[params.norm](steps=params.steps, max_stepsize=params.max_stepsize, gamma=params.gamma,
                                binary_search_steps=params.binary_search_steps)
