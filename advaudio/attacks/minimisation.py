"""Minimisation attacks that search each sample's smallest perturbation: DeepFool, CW, EAD, FMN.

DeepFool always runs untargeted: Foolbox accepts a targeted criterion but only walks
to the nearest boundary (noted).  CW and EAD run in plain torch
(:mod:`~advaudio.attacks.constsearch`: Foolbox's arithmetic, with a constant, a
bracket and an early abort per clip); samples that miss their target are retried
with a larger constant and more steps (``const_retries``, noted).  Where an attack
finds nothing the engine puts the clean input.
"""

from __future__ import annotations

from typing import Any

from advaudio.attacks.base import AttackSpec
from advaudio.attacks.constsearch import SearchOutcome, const_search
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


class ConstSearchAttack(AttackSpec):
    """CW-type attacks in plain torch (:mod:`~advaudio.attacks.constsearch`): per clip a binary
    search over the constant c with early abort, from a bracket learned on the batch; clips that
    miss their target are retried with a larger constant and more steps."""

    method = ""  # "cw" | "ead"

    def search(self, run, x, classes, targeted: bool, params, *, initial_const: float, steps: int,
               retry: bool = False) -> SearchOutcome:
        extra = {"regularization": params.regularization, "decision_rule": params.decision_rule} \
            if self.method == "ead" else {}
        return const_search(run.counter, x, classes, targeted=targeted, method=self.method, steps=steps,
                            step_size=params.step_size, binary_search_steps=params.binary_search_steps,
                            initial_const=initial_const, confidence=params.confidence,
                            abort_early=params.abort_early, patience=params.patience,
                            min_improvement=params.min_improvement, loss_patience=params.loss_patience,
                            pilot=0 if retry else params.pilot,
                            pilot_extra=params.pilot_extra,
                            start_const=None if retry else params.start_const,  # retries: C&W's search
                            const_growth=params.const_growth,
                            polish_steps=params.polish_steps,
                            polish_patience=params.polish_patience,
                            polish_min_improvement=params.polish_min_improvement,
                            polish_start=params.polish_start, **extra)

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        params = config.params
        targeted = targets is not None
        classes = targets if targeted else labels
        out = self.search(run, x, classes, targeted, params, initial_const=params.initial_const,
                          steps=params.steps)
        adv = out.adversarial.clone()
        ok = self.verify(run, adv, labels, targets)
        counters["chunks"] = counters.get("chunks", 0) + 1
        if out.start_const is not None:
            counters["pilot"] = counters.get("pilot", 0) + len(out.pilot)
            counters["start_const"] = out.start_const  # type: ignore[assignment]  # the last chunk's
            counters["growth"] = out.growth  # type: ignore[assignment]
        const, steps = params.initial_const, params.steps
        for attempt in range(params.const_retries):
            missing = (~ok).nonzero().flatten()
            if len(missing) == 0:
                break
            if attempt == 0:
                counters["retried"] = counters.get("retried", 0) + len(missing)
            const *= 10.0 ** max(params.binary_search_steps, 1)
            steps *= 2
            t = targets[missing] if targeted else None
            retry = self.search(run, x[missing], classes[missing], targeted, params, initial_const=const,
                                steps=steps, retry=True)
            adv[missing] = retry.adversarial
            ok[missing] = self.verify(run, retry.adversarial, labels[missing], t)
            counters["last_const"] = const  # type: ignore[assignment]
            counters["last_steps"] = steps
        counters["failed"] = counters.get("failed", 0) + int((~ok).sum())
        return adv

    def chunk_notes(self, counters, config):
        params = config.params
        notes = []
        if counters.get("pilot"):
            counts = {"pilot": counters["pilot"], "start_const": counters["start_const"],
                      "growth": counters["growth"]}
            notes.append(Note(
                "const-bracket",
                f"{counts['pilot']} pilot clip(s) searched the constant from initial_const="
                f"{params.initial_const:g}; the others started at {counts['start_const']:.4g} (their median "
                f"smallest fooling constant) growing ×{counts['growth']:.3g}",
                counts,
            ))
        if not counters.get("retried"):
            return notes
        counts = {"retried": counters["retried"], "const_retries": params.const_retries,
                  "last_const": counters["last_const"], "last_steps": counters["last_steps"],
                  "failed": counters.get("failed", 0)}
        notes.append(Note(
            "const-retries",
            f"{counts['retried']} sample(s) missed after the first constant "
            f"search (initial_const={params.initial_const:g}); retried up to "
            f"{params.const_retries} time(s), last with initial_const="
            f"{counts['last_const']:g}, steps={counts['last_steps']}; "
            f"{counts['failed']} still failed",
            counts,
        ))
        return notes


class CarliniWagnerL2(ConstSearchAttack):
    params_type = CarliniWagnerParams
    description = "Carlini-Wagner L2 (Adam in tanh space, per-clip constant search with early abort)"
    method = "cw"


class EAD(ConstSearchAttack):
    params_type = EADParams
    description = "elastic-net attack (EAD, L1 + L2 regularised CW, FISTA, per-clip early abort); budget in L1"
    method = "ead"


class FastMinimumNorm(MinimisationAttack):
    """Foolbox's ``L2FMNAttack`` / ``LInfFMNAttack`` / ``L1FMNAttack``, targeted where asked."""

    params_type = FMNParams
    description = "fast minimum-norm attack (Pintor et al. 2021): ε adapted along one gradient trajectory"

    def attack(self, fb, params):
        cls = {"l2": fb.attacks.L2FMNAttack, "linf": fb.attacks.LInfFMNAttack, "l1": fb.attacks.L1FMNAttack}
        return cls[params.norm](steps=params.steps, max_stepsize=params.max_stepsize, gamma=params.gamma,
                                binary_search_steps=params.binary_search_steps)
