"""Adversarial attacks on spectrogram classifiers, tuned to a fooling rate.

Modules, in the order a run uses them:

================ ==================================================================
``params``       one frozen parameter dataclass per attack, :class:`AttackConfig`
                 (an attack's parameters plus the settings all share); no torch
``registry``     :data:`ATTACKS` (name → spec, built-ins then plugins), :func:`list_attacks`
``base``         :class:`~advaudio.attacks.base.AttackSpec`, the interface of a spec
                 (``execute`` at one ε, ``perturb`` at one ε per clip), :class:`StepContext`
``gradient``     fixed-budget specs: fgsm, bim, pgd
``minimisation`` minimisation specs: deepfool, cw, ead
``decision``     decision-based specs and their starting points: boundary, hopskipjump
``stepping``     fgsm/bim/pgd with one ε per sample and early stopping (torch)
``search``       the per-clip minimal-ε search of fixed-budget attacks
``checks``       evaluation checks (Carlini et al. 2019), robust accuracy at fixed ε
``targets``      :func:`choose_targets`
``engine``       :func:`run_attack`: clean classification, chunks, verification
``tuning``       :func:`tune_budget`, :func:`fooling_rate_curve`,
                 :func:`quantile_budget`, :func:`minimisation_budget`
``merging``      the arithmetic of merging a job array's slices (the union's budget,
                 bracket, curve and notes; :mod:`advaudio.stages.merge` does the files)
``results``      :class:`AttackResult`, :class:`TuningResult` (its ``to_record``: a results
                 file's record), :class:`Note` (the store's), :func:`perturbation_norms`
``_model``       eval mode with frozen weights, query counting, seeding, input checks
``_foolbox``     the only import of Foolbox 3, lazy (on the first attack run)
================ ==================================================================

Registry (every attack runs through ``foolbox.PyTorchModel(model, bounds=(0, 1))``;
parameters and defaults: :mod:`advaudio.attacks.params`):

=========== ============ ================== ======== ========================================
name        kind         budget norm        targeted Foolbox attack / notes
=========== ============ ================== ======== ========================================
fgsm        fixed-budget linf (or l2)       yes      targeted: BasicIterative(steps=1, step=ε),
                                                     because Foolbox's FGSM rejects targeted
                                                     criteria; untargeted: Foolbox's FGSM/FGM
bim         fixed-budget linf (or l2)       yes      BasicIterativeAttack (no random start)
pgd         fixed-budget linf (or l2)       yes      ProjectedGradientDescentAttack (random
                                                     start in the ε-ball, seeded)
deepfool    minimisation l2 (or linf)       **no**   DeepFoolAttack; always untargeted — noted
cw          minimisation l2                 yes      L2CarliniWagnerAttack; samples that miss
                                                     the target are retried with a larger
                                                     constant (``const_retries``) — noted
ead         minimisation l1 (L2 also kept)  yes      EADAttack, same retry rule as cw
fmn         minimisation l2 (or linf, l1)   yes      L2FMNAttack / LInfFMNAttack / L1FMNAttack
boundary    minimisation l2                 yes      BoundaryAttack (decision-based), from
                                                     starting points (see ``decision``)
hopskipjump minimisation l2 (or linf)       yes      HopSkipJumpAttack (decision-based), idem
=========== ============ ================== ======== ========================================

Plugins (entry-point group ``advaudio.attacks``, :mod:`advaudio.plugins`) join this
table: a spec class with its own parameter dataclass; one with ``per_clip_epsilon`` runs
its own ``perturb`` in the per-clip search, one without is bisected (noted).

The definitions (attacked samples, success, fooling rate, queries) are in
:mod:`advaudio.attacks.engine`, the budget search in :mod:`advaudio.attacks.tuning`.
"""

from advaudio.lazy import exports, names

# Imported on first use (advaudio.lazy): the parameter classes (:mod:`.params`) stay importable
# without torch and Foolbox, so that option listings and --help are fast.
_EXPORTS = {
    "._foolbox": ["foolbox_version"],
    "._model": ["attack_mode"],
    ".base": ["AttackSpec", "StepContext"],
    ".engine": ["run_attack"],
    ".params": ["FIXED_BUDGET", "MINIMISATION", "PARAMS", "AttackConfig", "AttackParams", "BIMParams",
                "BoundaryParams", "CarliniWagnerParams", "DeepFoolParams", "EADParams", "FGSMParams", "FMNParams",
                "HopSkipJumpParams", "PGDParams"],
    ".registry": ["ATTACKS", "attack_plugin", "list_attacks"],
    ".results": ["AttackResult", "Note", "TuningResult", "perturbation_norms"],
    ".targets": ["choose_targets"],
    ".tuning": ["fooling_rate_curve", "minimisation_budget", "quantile_budget", "tune_budget"],
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)
__all__ = names(_EXPORTS)
