"""Evaluation checks (Carlini et al. 2019, "On Evaluating Adversarial Robustness") and robust accuracy.

Run on the attacks of one stage, on the same clips; each check is a
:class:`~advaudio.store.results.Check` (in a results file
``{"check", "status": "pass"|"warn", "attacks", "text", **numbers}``).  A failed
check is a symptom of gradient masking or an under-run attack, never silent:

``success-at-large-eps``  (a) the success rate over every ε tried is ≥ 99 %.
``iterative-beats-fgsm``  (b) an iterative attack (bim, pgd, and a plugin that takes one
                          ε per clip and has ``steps``) fools at least as many
                          clips as one FGSM step at the same ε (its tuned budget).
``more-steps-no-gain``    (c) twice the steps at the tuned budget raise the fooling
                          rate by < 2 pp or by one clip (on at most ``subset`` clips).
                          cw/ead: twice the steps, the constants and the early-abort
                          patience (about 4× the gradient steps per clip, from the
                          run's learned start constant) on the clips above the
                          budget, nearest first (at most ``EFFORT_CLIPS``): the only
                          ones that can change sides (a rerun keeps each clip's
                          smaller norm); the fooling rate of all attacked clips at
                          the budget rises by < 2 pp or one clip.
``black-box-not-better``  (d) a decision-based attack's budget is not below the best
                          white-box budget of the same norm (said with the queries
                          per clip it was reached at, and its query budget); without a
                          white-box attack of that norm in the run it warns and says so.

:func:`robust_accuracy`: for each ε of a norm, the fraction of all clips that every
attack of that norm fails to fool within ε (clips misclassified when clean count as
not robust) — each clip facing the worst attack run; with per-clip brackets wider than
the tolerance, a lower bound beside it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from advaudio.attacks._model import CountingModel, attack_mode
from advaudio.attacks.engine import prepare, run_attack
from advaudio.attacks.params import AttackConfig
from advaudio.attacks.results import TuningResult
from advaudio.attacks.search import attack_at, sample_seeds, step_settings
from advaudio.attacks.stepping import unit_noise
from advaudio.store.results import Check, Evaluation

__all__ = ["DECISION_BASED", "ROBUST_EPSILONS", "evaluation_checks", "robust_accuracy"]

DECISION_BASED = ("boundary", "hopskipjump")
ITERATIVE = ("bim", "pgd")
CONST_SEARCH = ("cw", "ead")
#: what check (d) suggests when a run has a decision-based attack but no white-box one of its norm
WHITE_BOX_OF = {"l2": "cw", "linf": "pgd", "l1": "ead"}
#: cw/ead check (c) reruns at most this many clips: those above the budget, nearest first.
EFFORT_CLIPS = 8
MIN_SUCCESS = 0.99
MAX_STEP_GAIN = 0.02
#: ε per norm at which robust accuracy is reported (inputs in [0, 1]).
ROBUST_EPSILONS: dict[str, tuple[float, ...]] = {
    "linf": (1 / 255, 2 / 255, 4 / 255, 8 / 255),
    "l2": (0.25, 0.5, 1.0, 2.0),
    "l1": (2.0, 5.0, 10.0, 20.0),
}


def _check(name: str, ok: bool, attacks: list[str], text: str, **numbers: Any) -> Check:
    return Check(check=name, status="pass" if ok else "warn", attacks=tuple(attacks), text=text, values=numbers)


def _fooled_at(model, x, y, config: AttackConfig, eps: float, *, targets, sample_ids, batch_size,
               steps: int | None = None, rows: np.ndarray | None = None) -> tuple[float, int]:
    """Fooling rate and gradient queries of ``config`` at one ε on ``rows`` (default: every attacked clip)."""
    prep = prepare(model, x, y, config=config, targets=targets, batch_size=batch_size, starting_pool=None)
    idx = np.flatnonzero(prep.attacked.cpu().numpy())
    if rows is not None:
        idx = np.intersect1d(idx, rows)
    if len(idx) == 0:
        return math.nan, 0
    noise = None
    if step_settings(prep)["random_start"]:
        noise = unit_noise(tuple(prep.x.shape[1:]), norm=config.params.norm,
                           seeds=sample_seeds(config.seed, sample_ids), device=prep.device)
    counter = CountingModel(model)
    sel = torch.as_tensor(idx, device=prep.device)
    with attack_mode(model):
        _, ok, _ = attack_at(prep, counter, sel, torch.full((len(idx),), float(eps), device=prep.device),
                             noise=noise, early_stop=True, steps=steps)
    return float(ok.float().mean()), counter.gradient_queries


def evaluation_checks(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    tunings: Mapping[str, TuningResult],
    *,
    targets: Any = None,
    sample_ids: Any = None,
    batch_size: int = 256,
    seed: int = 0,
    subset: int = 16,
    robust_epsilons: Mapping[str, tuple[float, ...]] = ROBUST_EPSILONS,
) -> Evaluation:
    """The checks that apply to ``tunings`` (attack name → result on ``inputs``) and robust accuracy."""
    ids = np.arange(len(labels)) if sample_ids is None else np.asarray(sample_ids)
    checks: list[Check] = []
    done = {n: t for n, t in tunings.items() if t.result is not None}
    for name, t in done.items():
        ok = t.success_rate >= MIN_SUCCESS
        checks.append(_check("success-at-large-eps", ok, [name],
                             f"{name}: success rate {t.success_rate:.3f} over every ε tried "
                             f"({'≥' if ok else '<'} {MIN_SUCCESS})", success_rate=t.success_rate))
    for name, t in done.items():
        if not _iterative(name, t) or not (t.reached and math.isfinite(t.budget)):
            continue
        cfg = AttackConfig.from_dict({k: v for k, v in t.result.config.items()
                                      if k not in ("early_stop", "precision")})  # the search's, not the attack's
        fgsm = AttackConfig.create("fgsm", norm=cfg.params.norm, targeted=cfg.targeted,
                                   target_rule=cfg.target_rule, seed=cfg.seed)
        rate_fgsm, _ = _fooled_at(model, inputs, labels, fgsm, t.budget, targets=targets, sample_ids=ids,
                                  batch_size=batch_size)
        ok = t.fooling_rate >= rate_fgsm
        checks.append(_check("iterative-beats-fgsm", ok, [name, "fgsm"],
                             f"{name} fools {t.fooling_rate:.3f} at ε={t.budget:.4g}, one FGSM step "
                             f"{rate_fgsm:.3f}", epsilon=t.budget, rate=t.fooling_rate, rate_fgsm=rate_fgsm))
        steps = step_settings_of(cfg)
        rng = np.random.default_rng(seed)
        att = np.flatnonzero(t.result.attacked)
        rows = np.sort(rng.choice(att, size=min(subset, len(att)), replace=False))
        base, _ = _fooled_at(model, inputs, labels, cfg, t.budget, targets=targets, sample_ids=ids,
                             batch_size=batch_size, rows=rows)
        more, _ = _fooled_at(model, inputs, labels, cfg, t.budget, targets=targets, sample_ids=ids,
                             batch_size=batch_size, rows=rows, steps=2 * steps)
        gain = more - base
        # The budget is some clip's minimal ε (the quantile clip), so one clip of the subset may
        # sit right at it: a single clip's flip is not a symptom.
        ok = gain < MAX_STEP_GAIN or round(gain * len(rows)) <= 1
        checks.append(_check("more-steps-no-gain", ok, [name],
                             f"{name} at ε={t.budget:.4g} on {len(rows)} clips: {steps} steps fool {base:.3f}, "
                             f"{2 * steps} steps {more:.3f} (gain {100 * gain:+.1f} pp, limit {100 * MAX_STEP_GAIN:g} pp or one clip)",
                             epsilon=t.budget, steps=steps, rate=base, rate_doubled=more, clips=len(rows)))
    for name, t in done.items():
        if name in CONST_SEARCH and t.reached and math.isfinite(t.budget):
            checks.append(_more_effort_check(model, inputs, labels, name, t, subset=min(subset, EFFORT_CLIPS),
                                             batch_size=batch_size))
    for name, t in done.items():
        if name not in DECISION_BASED:
            continue
        white = {n: w for n, w in done.items() if n not in DECISION_BASED and w.norm == t.norm}
        # the clips' own queries (the shared starting-point pools are charged to none)
        budget_note = next((n.counts for n in t.notes if n.code == "query-budget"), {})
        per_clip = float(budget_note.get("queries_per_clip", t.queries / max(1, t.n_attacked)))
        max_queries = (t.result.config or {}).get("max_queries")
        if not white:  # said, not skipped: alone, a decision-based budget cannot show a masked gradient
            checks.append(_check("black-box-not-better", False, [name],
                                 f"{name} ({t.norm}) budget {t.budget:.4g} at {per_clip:.0f} queries per clip "
                                 f"(budget {max_queries} per clip): no white-box {t.norm} attack in this run to "
                                 f"compare with (add one, e.g. {WHITE_BOX_OF.get(t.norm, 'pgd')})",
                                 budget=t.budget, white_box_budget=None, white_box=None, queries_per_clip=per_clip,
                                 max_queries=max_queries))
            continue
        # a white-box attack that never reached the threshold has no budget: +inf
        reach = {n: (w.budget if w.reached else math.inf) for n, w in white.items()}
        best_name = min(reach, key=reach.get)
        best = reach[best_name]
        ok = not (t.reached and t.budget < best)
        checks.append(_check("black-box-not-better", ok, [name, *white],
                             f"{name} ({t.norm}) budget {t.budget:.4g} at {per_clip:.0f} queries per clip "
                             f"(budget {max_queries} per clip) vs best white-box {best_name} {best:.4g}",
                             budget=t.budget, white_box_budget=best if math.isfinite(best) else None,
                             white_box=best_name, queries_per_clip=per_clip, max_queries=max_queries))
    return Evaluation(checks=tuple(checks), robust_accuracy=robust_accuracy(done, robust_epsilons=robust_epsilons))


def _more_effort_check(model, inputs, labels, name: str, t: TuningResult, *, subset: int,
                       batch_size: int) -> Check:
    """Check (c) of a constant-search attack: twice the effort on the clips above the budget.

    The rerun keeps each clip's smaller norm, so a clip already within the budget cannot
    change sides: only those above it are rerun, nearest first (an unfooled clip last; at
    the 90 % threshold of 40 clips that is all of them, 4 at most), and the rate is over
    every attacked clip, as the budget's is."""
    res = t.result
    cfg = AttackConfig.from_dict(res.config)
    p = cfg.params
    # from the run's learned start (no pilot: of a few clips it would be most), twice as many constants
    bracket = next((n.counts for n in t.notes if n.code == "const-bracket"), {})
    start = {"start_const": bracket["start_const"], "const_growth": max(1.01, bracket["growth"])} if bracket else {}
    more = cfg.replace(steps=2 * p.steps, binary_search_steps=2 * p.binary_search_steps, patience=2 * p.patience,
                       loss_patience=None if p.loss_patience is None else 2 * p.loss_patience,
                       polish_steps=2 * p.polish_steps, polish_patience=2 * p.polish_patience, **start)
    norms = res.budget_norms()
    att = np.flatnonzero(res.attacked)
    above = att[~(norms[att] <= t.budget)]  # nan (none found) counts as above
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.nan_to_num(np.log(norms[above] / t.budget), nan=np.inf, posinf=np.inf)
    rows = np.sort(above[np.argsort(distance, kind="stable")[:subset]])
    doubled = norms.copy()
    base = float((norms[att] <= t.budget).mean())
    gradient_steps = 0
    if len(rows):
        x = torch.as_tensor(np.asarray(inputs))[rows] if not torch.is_tensor(inputs) else inputs[rows]
        y = torch.as_tensor(np.asarray(labels))[rows] if not torch.is_tensor(labels) else labels[rows]
        targets = None if res.targets is None else res.targets[rows]
        again = run_attack(model, x, y, config=more, targets=targets, batch_size=batch_size)
        # the best of both runs per clip (a longer run with other constants may miss where the short one fooled)
        doubled[rows] = np.where(again.attacked, np.fmin(again.budget_norms(), norms[rows]), norms[rows])
        gradient_steps = again.gradient_steps
    rate = float((doubled[att] <= t.budget).mean())
    gain = rate - base
    ok = gain < MAX_STEP_GAIN or round(gain * len(att)) <= 1
    return _check("more-steps-no-gain", ok, [name],
                  f"{name} at {t.norm} budget {t.budget:.4g}: twice the effort (steps {p.steps}→{2 * p.steps}, "
                  f"constants {p.binary_search_steps}→{2 * p.binary_search_steps}, patience {p.patience}→"
                  f"{2 * p.patience}, polish {p.polish_steps}→{2 * p.polish_steps}) on the {len(rows)} of "
                  f"{len(above)} clips above the budget nearest it: {len(att)} clips fooled "
                  f"{base:.3f} → {rate:.3f} (gain {100 * gain:+.1f} pp, limit {100 * MAX_STEP_GAIN:g} pp or one clip)",
                  epsilon=t.budget, steps=p.steps, rate=base, rate_doubled=rate, clips=len(rows),
                  clips_above=len(above), gradient_steps=gradient_steps)


def _iterative(name: str, tuning: TuningResult) -> bool:
    """bim, pgd, or a plugin attack the per-clip search ran (its own steps, one ε per clip) that has
    ``steps`` and a norm FGSM takes: checks (b) and (c) rerun it through the same ``perturb``."""
    if name in ITERATIVE:
        return True
    from advaudio.attacks.params import FGSMParams
    from advaudio.attacks.registry import ATTACKS

    spec = ATTACKS.get(name)
    return (ATTACKS.plugin(name) is not None and spec is not None and spec.per_clip_epsilon
            and tuning.search == "per-clip" and "steps" in spec.params_type.names()
            and tuning.norm in FGSMParams.norms)


def step_settings_of(config: AttackConfig) -> int:
    return int(getattr(config.resolved().params, "steps", 1))


def robust_accuracy(tunings: Mapping[str, TuningResult], *,
                    robust_epsilons: Mapping[str, tuple[float, ...]] = ROBUST_EPSILONS) -> dict[str, Any]:
    """Per norm: ``{"attacks", "epsilons", "accuracy", "accuracy_low"}``, each clip facing the
    worst attack of that norm.

    ``accuracy``: clips whose smallest fooling budget (over the attacks) exceeds ε.  A per-clip
    search brackets each clip's minimal ε in ``(minimal_budget_low, minimal_budget]``; where a
    bracket contains ε (``precision="quantile"`` leaves clips far from the budget coarse) the
    clip's outcome at ε is unknown, so ``accuracy_low`` counts only the clips every attack is
    known to fail on at ε (its lower bound ≥ ε): the attacks' robust accuracy lies in
    ``[accuracy_low, accuracy]`` (equal for minimisation attacks and tight brackets).
    """
    out: dict[str, Any] = {}
    by_norm: dict[str, list[str]] = {}
    for name, t in tunings.items():
        if t.result is not None and t.norm in robust_epsilons:
            by_norm.setdefault(t.norm, []).append(name)
    for norm, names in by_norm.items():
        worst = worst_low = None
        for n in names:
            r = tunings[n].result
            v = np.where(r.attacked, np.nan_to_num(r.budget_norms(), nan=0.0), 0.0)  # misclassified: 0
            low = v if r.minimal_budget_low is None else np.where(r.attacked, np.nan_to_num(
                np.asarray(r.minimal_budget_low, np.float64), nan=0.0), 0.0)
            worst = v if worst is None else np.minimum(worst, v)
            worst_low = low if worst_low is None else np.minimum(worst_low, low)
        eps = [float(e) for e in robust_epsilons[norm]]
        out[norm] = {"attacks": names, "epsilons": eps,
                     "accuracy": [float((worst > e).mean()) for e in eps],
                     "accuracy_low": [float(((worst_low >= e) & (worst > e)).mean()) for e in eps]}
    return out
