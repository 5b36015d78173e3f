"""The study report's threat-model table: the attacker's budget in both domains, before and after retraining.

A study with ``[attacks] domains = ["feature", "waveform"]`` runs, per attacked grid point and
fold, one cell per domain (the same round-0 model; each domain's rounds retrain on its own
shards).  Each row is one dataset × model × view (× width × size) × attack and gives:

* the **feature-domain budget** (the paper's, in model-input units) at the fooling-rate
  threshold before retraining (round 0) and after (the last round), each with its stratified
  bootstrap interval, and their ratio with the paired interval;
* the **waveform-domain budget** (the attack's norm of the perturbation of the clip's samples
  in [-1, 1]) the same way;
* the **SNR at the threshold** in dB (signal to perturbation of the waveform, the unit a
  listener hears): the largest SNR at which the threshold's share of the clips is fooled,
  before and after, and its change in dB.  Its intervals are those of the budget of the
  per-clip amplitude ratio ``10**(-snr/20)`` (= ‖δ‖₂ / ‖x‖₂), so the change's interval is
  ``-20·log10`` of that budget's paired ratio interval: quantiles commute with the monotone
  map, no new statistic is made up;
* the clean test accuracy of each domain's last round (retraining on waveform-domain shards
  trains on what the front end makes of adversarial waveforms).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from advaudio.errors import ParameterError
from advaudio.reporting.bootstrap import BudgetInterval, RatioInterval, budget_interval, ratio_interval
from advaudio.study.tables import Accuracy, cell_source

if TYPE_CHECKING:
    from advaudio.study.cellfile import AttackOutcome, CellSummary

__all__ = ["DomainBudget", "DomainRow", "SNRInterval", "domain_of", "domain_rows", "has_domain_axis",
           "snr_interval"]

FEATURE, WAVEFORM = "feature", "waveform"


def domain_of(summary: CellSummary) -> str:
    """The threat model of a cell's attacks: its ``domain`` key, the feature domain when it has none."""
    return str(summary.key.get("domain") or FEATURE)


def has_domain_axis(summaries: Iterable[CellSummary]) -> bool:
    return any(domain_of(s) != FEATURE for s in summaries)


@dataclass(frozen=True)
class SNRInterval:
    """The SNR (dB) at the threshold with its bootstrap interval; -inf where not reached."""

    snr_db: float
    reached: bool
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class DomainBudget:
    """One domain's budgets of one attack: before (round 0), after (last round), their ratio."""

    norm: str
    before: BudgetInterval | None
    after: BudgetInterval | None
    ratio: RatioInterval | None
    rounds: int  # the last round (0: none retrained)


@dataclass(frozen=True)
class DomainRow:
    dataset: str
    model: str
    view: str
    width: Any
    input_size: Any
    attack: str
    threshold: float
    feature: DomainBudget | None
    waveform: DomainBudget | None
    snr_before: SNRInterval | None
    snr_after: SNRInterval | None
    #: after − before in dB, with the paired interval (−20·log10 of the amplitude-ratio budgets' ratio)
    snr_change_db: tuple[float, float, float] | None
    accuracy_after: dict[str, Accuracy]  # per domain: the last round's clean test accuracy
    sources: tuple[str, ...] = ()

    @property
    def key(self) -> tuple:
        return (self.dataset, self.model, self.view, self.width, self.input_size)


def _amplitude(snr_db: np.ndarray) -> np.ndarray:
    """Per clip ‖δ‖₂/‖x‖₂ from its SNR in dB (+inf for -inf dB: never fooled)."""
    with np.errstate(over="ignore"):
        return np.power(10.0, -np.asarray(snr_db, np.float64) / 20.0)


def _db(amplitude: float) -> float:
    """The SNR in dB of an amplitude ratio (-inf for +inf: not reached; +inf for 0; NaN stays NaN)."""
    with np.errstate(divide="ignore"):
        return float(-20.0 * np.log10(np.float64(amplitude)))


def snr_interval(cells: list[np.ndarray], threshold: float, **settings) -> SNRInterval:
    """The SNR at ``threshold`` pooled over ``cells`` (per-clip SNRs in dB, -inf: not fooled), with the
    bootstrap interval of :func:`~advaudio.reporting.bootstrap.budget_interval` mapped to dB."""
    b = budget_interval([_amplitude(c) for c in cells], threshold, **settings)
    # a larger amplitude ratio is a smaller SNR: the interval's ends swap
    return SNRInterval(snr_db=_db(b.budget), reached=b.reached, low=_db(b.high), high=_db(b.low), n=b.n)


def _budgets(name: str, cells: list[CellSummary], **settings) -> DomainBudget | None:
    pairs: list[tuple[AttackOutcome | None, AttackOutcome | None]] = []
    for s in cells:
        before = s.round(0).attacks.get(name)
        after = s.last_round.attacks.get(name) if s.last_round.round > 0 else None
        pairs.append((before, after))
    outcomes = [o for p in pairs for o in p if o is not None]
    if not outcomes:
        return None
    threshold = float(outcomes[0].threshold)

    def interval(which: int) -> BudgetInterval | None:
        norms = [p[which].minimal_norms for p in pairs if p[which] is not None]
        return budget_interval(norms, threshold, **settings) if sum(len(v) for v in norms) else None

    both = [((b.clip_rows, b.minimal_norms), (a.clip_rows, a.minimal_norms)) for b, a in pairs
            if b is not None and a is not None and len(b.clip_rows) and len(a.clip_rows)]
    ratio = None
    if both:
        try:
            ratio = ratio_interval(both, threshold, **settings)
        except ParameterError:
            ratio = None
    return DomainBudget(norm=outcomes[0].norm, before=interval(0), after=interval(1), ratio=ratio,
                        rounds=max(s.last_round.round for s in cells))


def _snr(name: str, cells: list[CellSummary], threshold: float, **settings):
    before = [s.round(0).attacks.get(name) for s in cells]
    after = [s.last_round.attacks.get(name) if s.last_round.round > 0 else None for s in cells]
    have = lambda o: o is not None and o.clip_snr_db is not None and len(o.clip_snr_db)  # noqa: E731
    b = [o.clip_snr_db for o in before if have(o)]
    a = [o.clip_snr_db for o in after if have(o)]
    snr_b = snr_interval(b, threshold, **settings) if b else None
    snr_a = snr_interval(a, threshold, **settings) if a else None
    change = None
    paired = [((x.clip_rows, _amplitude(x.clip_snr_db)), (y.clip_rows, _amplitude(y.clip_snr_db)))
              for x, y in zip(before, after) if have(x) and have(y)]
    if paired:
        try:
            r = ratio_interval(paired, threshold, **settings)
        except ParameterError:
            r = None
        if r is not None and math.isfinite(r.ratio):
            # a ratio of the amplitude budgets r is an SNR change of -20·log10(r) dB; the ends swap
            change = (_db(r.ratio), _db(r.high), _db(r.low))
    return snr_b, snr_a, change


def domain_rows(summaries: Iterable[CellSummary], *, resamples: int = 2000, confidence: float = 0.95,
                seed: int = 0) -> list[DomainRow]:
    """The table's rows (module docstring): attacked cells of clean training (no on-the-fly defense),
    grouped by grid point, one row per attack, in the order the cells name them."""
    settings = dict(resamples=resamples, confidence=confidence, seed=seed)
    groups: dict[tuple, dict[str, list[CellSummary]]] = {}
    for s in summaries:
        k = s.key
        if not k.get("attacked") or str(k.get("defense") or "none") != "none":
            continue
        key = (k["dataset"], k["model"], k["view"], k["width"],
               tuple(k["input_size"]) if k.get("input_size") else None)
        groups.setdefault(key, {}).setdefault(domain_of(s), []).append(s)
    rows = []
    for key, by in groups.items():
        if WAVEFORM not in by:
            continue
        names: list[str] = []
        for cells in by.values():
            for s in cells:
                for r in s.rounds:
                    names += [n for n in r.attacks if n not in names]
        accuracy = {d: Accuracy(tuple(float(s.last_round.test_accuracy) for s in cells),
                                tuple(cell_source(s) for s in cells)) for d, cells in sorted(by.items())}
        for name in names:
            feature = _budgets(name, by.get(FEATURE, []), **settings)
            waveform = _budgets(name, by[WAVEFORM], **settings)
            if waveform is None:
                continue
            threshold = next(float(o.threshold) for s in by[WAVEFORM] for r in s.rounds
                             for n, o in r.attacks.items() if n == name)
            snr_b, snr_a, change = _snr(name, by[WAVEFORM], threshold, **settings)
            rows.append(DomainRow(dataset=key[0], model=key[1], view=key[2], width=key[3], input_size=key[4],
                                  attack=name, threshold=threshold, feature=feature, waveform=waveform,
                                  snr_before=snr_b, snr_after=snr_a, snr_change_db=change,
                                  accuracy_after=accuracy,
                                  sources=tuple(cell_source(s) for cells in by.values() for s in cells)))
    return rows


def _interval_json(iv: BudgetInterval | None) -> dict[str, Any] | None:
    return None if iv is None else {"value": iv.budget, "reached": iv.reached, "ci_low": iv.low,
                                    "ci_high": iv.high, "n": iv.n}


def _budget_json(b: DomainBudget | None) -> dict[str, Any] | None:
    if b is None:
        return None
    return {"norm": b.norm, "rounds": b.rounds, "before": _interval_json(b.before), "after": _interval_json(b.after),
            "ratio": None if b.ratio is None else {"value": b.ratio.ratio, "lower_bound": b.ratio.lower_bound,
                                                   "ci_low": b.ratio.low, "ci_high": b.ratio.high}}


def _snr_json(s: SNRInterval | None) -> dict[str, Any] | None:
    return None if s is None else {"value": s.snr_db, "reached": s.reached, "ci_low": s.low, "ci_high": s.high,
                                   "n": s.n}


def domain_rows_json(rows: list[DomainRow]) -> list[dict[str, Any]]:
    return [{"dataset": r.dataset, "model": r.model, "view": r.view, "width": r.width,
             "input_size": list(r.input_size) if r.input_size else None, "attack": r.attack,
             "threshold": r.threshold, "feature": _budget_json(r.feature), "waveform": _budget_json(r.waveform),
             "snr_db_before": _snr_json(r.snr_before), "snr_db_after": _snr_json(r.snr_after),
             "snr_db_change": None if r.snr_change_db is None else dict(zip(("value", "ci_low", "ci_high"),
                                                                            r.snr_change_db)),
             "accuracy_after": {d: {"mean": a.mean, "std": a.std, "n": a.n, "values": list(a.values)}
                                for d, a in r.accuracy_after.items()},
             "sources": list(r.sources)} for r in rows]
