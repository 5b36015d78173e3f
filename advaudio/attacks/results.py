"""What an attack run returns: per-sample results, tuning results, perturbation norms, notes.

:class:`AttackResult` is one run (:func:`~advaudio.attacks.run_attack`),
:class:`TuningResult` one budget search (:func:`~advaudio.attacks.tune_budget`);
:meth:`TuningResult.to_record` makes the :class:`~advaudio.store.results.AttackRecord`
of a results file.  :class:`Note` (a code, counts and a sentence) is the store's
(:mod:`advaudio.store.results`): results files and shards hold notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from advaudio.store.results import AttackRecord, Check, Note, excluded_note

__all__ = ["AttackResult", "Note", "TuningResult", "excluded_note", "perturbation_norms"]


def perturbation_norms(clean: Any, adversarial: Any) -> dict[str, np.ndarray]:
    """Per-sample L1, L2, L∞ of ``adversarial - clean`` and SNR in dB (float64).

    ``snr_db = 10·log10(||x||² / ||δ||²)``: +inf where δ = 0.
    """
    x = np.asarray(clean, dtype=np.float64).reshape(len(clean), -1)
    d = np.asarray(adversarial, dtype=np.float64).reshape(len(clean), -1) - x
    energy_d = np.square(d).sum(axis=1)
    energy_x = np.square(x).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10.0 * np.log10(energy_x / energy_d)
    snr = np.where(energy_d == 0, np.inf, snr)
    return {
        "l1": np.abs(d).sum(axis=1),
        "l2": np.sqrt(energy_d),
        "linf": np.abs(d).max(axis=1) if d.shape[1] else np.zeros(len(d)),
        "snr_db": snr,
    }


def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, "median": math.nan}
    return {"mean": float(v.mean()), "median": float(np.median(v))}


@dataclass
class AttackResult:
    """Outcome of :func:`run_attack`; arrays are numpy, one row per input sample.

    ``adversarial`` is float32 in [0, 1] (the clean input for excluded samples and for
    minimisation failures); ``success``/``predicted`` come from re-running the model
    on it; norms are those of ``adversarial - clean``.
    """

    attack: str
    kind: str
    norm: str
    epsilon: float | None
    targeted: bool
    target_rule: str | None
    config: dict[str, Any]
    adversarial: np.ndarray
    labels: np.ndarray
    clean_predicted: np.ndarray
    predicted: np.ndarray
    targets: np.ndarray | None
    attacked: np.ndarray
    success: np.ndarray
    l1: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    snr_db: np.ndarray
    queries: int
    gradient_queries: int
    wall_time_s: float
    notes: list[Note] = field(default_factory=list)
    #: per-clip search of a fixed-budget attack: the smallest ε found to fool each
    #: sample (+inf: not fooled up to the largest ε tried, nan: excluded); else None
    minimal_budget: np.ndarray | None = None
    #: per-clip search: the largest ε found not to fool each sample (its minimal ε lies in
    #: ``(minimal_budget_low, minimal_budget]``; ``eps_low`` where no probe failed); else None
    minimal_budget_low: np.ndarray | None = None

    @property
    def n_attacked(self) -> int:
        return int(self.attacked.sum())

    @property
    def n_excluded(self) -> int:
        return int(len(self.attacked) - self.attacked.sum())

    @property
    def fooling_rate(self) -> float:
        """Fraction of attacked samples that succeed (nan when none attacked)."""
        n = self.n_attacked
        return float(self.success[self.attacked].sum() / n) if n else math.nan

    success_rate = fooling_rate

    @property
    def misclassification_rate(self) -> float:
        n = self.n_attacked
        wrong = self.predicted[self.attacked] != self.labels[self.attacked]
        return float(wrong.sum() / n) if n else math.nan

    @property
    def gradient_steps(self) -> float:
        """Input-gradient evaluations per attacked sample."""
        n = self.n_attacked
        return self.gradient_queries / n if n else 0.0

    def norm_values(self, norm: str | None = None) -> np.ndarray:
        return getattr(self, norm or self.norm)

    def budget_norms(self) -> np.ndarray:
        """Per-sample perturbation norm in the budget norm: +inf for failures, nan for
        excluded samples (for minimisation attacks, the minimal perturbations; for a
        per-clip search, :attr:`minimal_budget`)."""
        if self.minimal_budget is not None:
            v = np.asarray(self.minimal_budget, dtype=np.float64).copy()
            v[~self.attacked] = np.nan
            return v
        v = self.norm_values().astype(np.float64).copy()
        v[~self.success] = np.inf
        v[~self.attacked] = np.nan
        return v

    def stats(self, mask: np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """Mean/median of l1, l2, linf, snr_db over ``mask`` (default: successes)."""
        m = self.success if mask is None else mask
        return {k: _stats(getattr(self, k)[m]) for k in ("l1", "l2", "linf", "snr_db")}

    def summary(self) -> dict[str, Any]:
        """JSON-able summary without the per-sample arrays."""
        return {
            "attack": self.attack,
            "kind": self.kind,
            "norm": self.norm,
            "epsilon": self.epsilon,
            "targeted": self.targeted,
            "target_rule": self.target_rule,
            "config": self.config,
            "n_samples": int(len(self.labels)),
            "n_attacked": self.n_attacked,
            "n_excluded": self.n_excluded,
            "fooling_rate": self.fooling_rate,
            "success_rate": self.success_rate,
            "misclassification_rate": self.misclassification_rate,
            "stats": self.stats(),
            "queries": self.queries,
            "gradient_queries": self.gradient_queries,
            "gradient_steps": self.gradient_steps,
            "wall_time_s": self.wall_time_s,
            "notes": [n.to_json() for n in self.notes],
        }


@dataclass
class TuningResult:
    """Outcome of :func:`tune_budget`.

    ``budget`` is ε in ``norm``; ``evaluations`` the (ε, fooling rate) pairs — the
    probes in order for fixed-budget attacks, the empirical CDF of the minimal norms
    for minimisation attacks; ``stats`` are over the samples fooled within the budget;
    ``result`` is the :class:`AttackResult` at the budget (minimisation: the single run,
    ``within_budget`` marks the samples fooled with norm ≤ budget).
    """

    attack: str
    kind: str
    norm: str
    threshold: float
    budget: float
    fooling_rate: float
    success_rate: float
    reached: bool
    reason: str | None
    evaluations: list[tuple[float, float]]
    stats: dict[str, dict[str, float]]
    n_attacked: int
    n_excluded: int
    queries: int
    gradient_queries: int
    wall_time_s: float
    tolerance: dict[str, float] | None
    converged: bool
    result: AttackResult | None
    within_budget: np.ndarray | None
    notes: list[Note] = field(default_factory=list)
    #: how the budget was found: "per-clip" (fixed-budget, per-clip ε search),
    #: "bisection" (fixed-budget, the batch's fooling rate bisected), "minimisation"
    search: str = "bisection"
    #: evaluation checks (:mod:`advaudio.attacks.checks`) of this attack
    checks: list[Check] = field(default_factory=list)

    def to_record(self, *, shard: str | None = None, n_samples: int | None = None, split: str | None = None,
                  round: int | None = None, slice: tuple[int, int] | None = None,
                  checks: list[Check] | None = None) -> AttackRecord:
        """The record of this search in a results file, placed: its shard, clips, split, round, slice
        (and ``checks``, default :attr:`checks`)."""
        return AttackRecord(
            attack=self.attack, kind=self.kind, norm=self.norm, threshold=self.threshold, budget=self.budget,
            reached=self.reached, reason=self.reason, fooling_rate=self.fooling_rate,
            success_rate=self.success_rate, evaluations=tuple((float(e), float(r)) for e, r in self.evaluations),
            stats=self.stats, n_samples=n_samples, n_attacked=self.n_attacked, n_excluded=self.n_excluded,
            queries=self.queries, gradient_queries=self.gradient_queries, wall_time_s=self.wall_time_s,
            tolerance=self.tolerance, converged=self.converged, notes=tuple(self.notes), search=self.search,
            checks=tuple(self.checks if checks is None else checks),
            config=self.result.config if self.result is not None else None,
            targeted=self.result.targeted if self.result is not None else None,
            shard=shard, split=split, round=round, slice=slice,
        )

    def to_dict(self) -> dict[str, Any]:
        """The search's part of its record (:meth:`to_record`) as JSON, without the placement."""
        placement = ("shard", "n_samples", "split", "round", "slice")
        return {k: v for k, v in self.to_record().to_json().items() if k not in placement}
