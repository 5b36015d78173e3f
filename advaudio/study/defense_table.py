"""The study report's defense table: one row per dataset × model × view (× width × size) × defense.

A study with a ``[grid] defenses`` axis trains, per grid point and test fold, one cell
of clean training (``none``, whose shard-retraining rounds are the paper's ``shards``
defense) and one cell per on-the-fly defense (``pgd-at``, ``trades``, ``fast-at``).
Each row gives:

* **clean accuracy**: mean ± std (ddof=1) over the row's cells (CV folds × seeds): round 0's
  test accuracy, or for ``shards`` the last round's (its attacked cells only);
* **AutoAttack robust accuracy** per (norm, ε): robust clips / test clips pooled over the
  attacked cells, with the Clopper–Pearson 95 % interval, and AutoAttack's flags;
* per attack, the paper's **budget** at the fooling-rate threshold with its stratified
  bootstrap interval, and its ratio to ``none``'s on the same folds with the paired
  interval (clips paired by store row);
* the **training cost**: seconds of training per cell (``shards``: clean training plus the
  attacks on training clips and the retraining), and its ratio to ``none``'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from advaudio.reporting.bootstrap import BudgetInterval, RatioInterval, budget_interval, ratio_interval
from advaudio.study.tables import Accuracy, cell_source

if TYPE_CHECKING:
    from advaudio.study.cellfile import CellSummary, RoundOutcome

__all__ = ["DefenseAttack", "DefenseRow", "defense_of", "defense_rows", "has_defense_axis"]

ORDER = ("none", "shards", "pgd-at", "trades", "fast-at")


def defense_of(summary: CellSummary) -> str:
    """The training of a cell: its ``defense`` key, ``none`` for a study without the axis."""
    return str(summary.key.get("defense") or "none")


def has_defense_axis(summaries: Iterable[CellSummary]) -> bool:
    return any("defense" in s.key for s in summaries)


@dataclass(frozen=True)
class RobustRow:
    norm: str
    eps: float
    robust_accuracy: float
    ci_low: float
    ci_high: float
    n: int
    n_robust: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class DefenseAttack:
    attack: str
    norm: str
    budget: BudgetInterval | None
    ratio: RatioInterval | None  # to none's budget on the same folds


@dataclass(frozen=True)
class DefenseRow:
    dataset: str
    model: str
    view: str
    width: Any
    input_size: Any
    defense: str
    accuracy: Accuracy
    robust: tuple[RobustRow, ...] = ()
    attacks: dict[str, DefenseAttack] = field(default_factory=dict)
    train_seconds: float = math.nan  # mean per cell
    cost_ratio: float = math.nan  # to none's mean
    sources: tuple[str, ...] = ()

    @property
    def key(self) -> tuple:
        return (self.dataset, self.model, self.view, self.width, self.input_size)


def _round(s: CellSummary, defense: str) -> RoundOutcome:
    return s.last_round if defense == "shards" else s.round(0)


def _cost(s: CellSummary, defense: str) -> float:
    w = s.wall_time_s or {}
    train = float(w.get("train") or math.nan)
    if defense == "shards":
        # the clean training, the attacks that made the training shards, the retraining
        return train + float(w.get("retrain") or 0.0) + _train_attack_seconds(s)
    return train


def _train_attack_seconds(s: CellSummary) -> float:
    w = s.wall_time_s or {}
    test = sum(float(a.wall_time_s) for r in s.rounds for a in r.attacks.values() if math.isfinite(a.wall_time_s))
    return max(0.0, float(w.get("attack") or 0.0) - test)


def _robust(cells: list[CellSummary], defense: str) -> tuple[RobustRow, ...]:
    from advaudio.attacks.autoattack import binomial_interval

    pooled: dict[tuple[str, float], list[int]] = {}
    flags: dict[tuple[str, float], list[str]] = {}
    for s in cells:
        for a in _round(s, defense).autoattack:
            k = (str(a["norm"]), float(a["eps"]))
            acc = pooled.setdefault(k, [0, 0])
            acc[0] += int(a["n_robust"])
            acc[1] += int(a["n"])
            flags.setdefault(k, []).extend(w for w in a.get("warnings") or [] if w not in flags.get(k, []))
    out = []
    for (norm, eps), (k, n) in sorted(pooled.items()):
        lo, hi = binomial_interval(k, n)
        out.append(RobustRow(norm=norm, eps=eps, robust_accuracy=k / n if n else math.nan, ci_low=lo, ci_high=hi,
                             n=n, n_robust=k, warnings=tuple(flags[(norm, eps)])))
    return tuple(out)


def defense_rows(summaries: Iterable[CellSummary], *, resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> list[DefenseRow]:
    """The defense table's rows (see the module docstring), in dataset, grid and :data:`ORDER` order."""
    summaries = list(summaries)
    groups: dict[tuple, dict[str, list[CellSummary]]] = {}
    for s in summaries:
        k = s.key
        if str(k.get("domain") or "feature") != "feature":  # the threat-model table's (:mod:`.domain_table`)
            continue
        key = (k["dataset"], k["model"], k["view"], k["width"],
               tuple(k["input_size"]) if k.get("input_size") else None)
        by = groups.setdefault(key, {})
        d = defense_of(s)
        by.setdefault(d, []).append(s)
        if d == "none" and s.key.get("attacked") and s.last_round.round > 0:
            by.setdefault("shards", []).append(s)
    rows = []
    for key, by in groups.items():
        none_cells = by.get("none", [])
        none_cost = _mean([_cost(s, "none") for s in none_cells])
        for defense in sorted(by, key=lambda d: (ORDER.index(d) if d in ORDER else len(ORDER), d)):
            cells = by[defense]
            if defense == "shards":
                cells = [s for s in cells if s.last_round.round > 0]
            counted = cells
            accuracy = Accuracy(tuple(float(_round(s, defense).test_accuracy) for s in counted),
                                tuple(cell_source(s) for s in counted))
            attacked = [s for s in cells if s.key.get("attacked")]
            attacks = {}
            names: list[str] = []
            for s in attacked:
                names += [n for n in _round(s, defense).attacks if n not in names]
            for name in names:
                outcomes = [_round(s, defense).attacks.get(name) for s in attacked]
                outcomes = [o for o in outcomes if o is not None]
                if not outcomes:
                    continue
                threshold = outcomes[0].threshold
                budget = None
                try:
                    budget = budget_interval([o.minimal_norms for o in outcomes], threshold, resamples=resamples,
                                             confidence=confidence, seed=seed)
                except Exception:  # no attacked clip
                    budget = None
                ratio = None
                pairs = []
                for s in attacked:
                    o = _round(s, defense).attacks.get(name)
                    ref = next((c for c in none_cells if c.key.get("attacked")
                                and c.key["test_fold"] == s.key["test_fold"] and c.key["seed"] == s.key["seed"]),
                               None)
                    r0 = ref.round(0).attacks.get(name) if ref is not None else None
                    if o is not None and r0 is not None:
                        pairs.append(((r0.clip_rows, r0.minimal_norms), (o.clip_rows, o.minimal_norms)))
                if pairs and defense != "none":
                    try:
                        ratio = ratio_interval(pairs, threshold, resamples=resamples, confidence=confidence,
                                               seed=seed)
                    except Exception:
                        ratio = None
                attacks[name] = DefenseAttack(attack=name, norm=outcomes[0].norm, budget=budget, ratio=ratio)
            cost = _mean([_cost(s, defense) for s in cells])
            rows.append(DefenseRow(dataset=key[0], model=key[1], view=key[2], width=key[3], input_size=key[4],
                                   defense=defense, accuracy=accuracy, robust=_robust(attacked, defense),
                                   attacks=attacks, train_seconds=cost,
                                   cost_ratio=cost / none_cost if none_cost and math.isfinite(none_cost) else math.nan,
                                   sources=tuple(cell_source(s) for s in cells)))
    return rows


def _mean(values: list[float]) -> float:
    values = [v for v in values if math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def _num(v: float, digits: int = 4) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def defense_table_text(rows: list[DefenseRow]) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the defense table as text cells."""
    header = ["dataset", "model", "view", "defense", "clean accuracy", "AutoAttack robust accuracy [95 % CI]",
              "budget at threshold [CI]", "× none [CI]", "training s/cell (× none)"]
    out = []
    for r in rows:
        acc = r.accuracy
        clean = (f"{100 * acc.mean:.1f} % ± {100 * acc.std:.1f} (n={acc.n})" if acc.n > 1 and math.isfinite(acc.std)
                 else f"{100 * acc.mean:.1f} % (n={acc.n})" if acc.n else "–")
        robust = "; ".join(f"{a.norm} {a.eps:.4g}: {100 * a.robust_accuracy:.1f} % "
                           f"[{100 * a.ci_low:.1f}, {100 * a.ci_high:.1f}] (n={a.n})" for a in r.robust) or "–"
        budgets = "; ".join(f"{a.attack} ({a.norm}) {_num(a.budget.budget)} [{_num(a.budget.low)}, "
                            f"{_num(a.budget.high)}]" for a in r.attacks.values() if a.budget is not None) or "–"
        ratios = "; ".join(f"{a.attack} ×{_num(a.ratio.ratio, 3)} [×{_num(a.ratio.low, 3)}, ×{_num(a.ratio.high, 3)}]"
                           for a in r.attacks.values() if a.ratio is not None) or "–"
        cost = f"{_num(r.train_seconds, 4)} (×{_num(r.cost_ratio, 3)})"
        out.append([r.dataset, r.model, r.view, r.defense, clean, robust, budgets, ratios, cost])
    return header, out


def defense_rows_json(rows: list[DefenseRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append({
            "dataset": r.dataset, "model": r.model, "view": r.view, "width": r.width,
            "input_size": list(r.input_size) if r.input_size else None, "defense": r.defense,
            "clean_accuracy": {"mean": r.accuracy.mean, "std": r.accuracy.std, "n": r.accuracy.n,
                               "values": list(r.accuracy.values)},
            "autoattack": [{"norm": a.norm, "eps": a.eps, "robust_accuracy": a.robust_accuracy, "ci_low": a.ci_low,
                            "ci_high": a.ci_high, "n": a.n, "n_robust": a.n_robust, "warnings": list(a.warnings)}
                           for a in r.robust],
            "attacks": {n: {"norm": a.norm,
                            "budget": None if a.budget is None else {"value": a.budget.budget, "ci_low": a.budget.low,
                                                                     "ci_high": a.budget.high, "n": a.budget.n},
                            "ratio_to_none": None if a.ratio is None else {"value": a.ratio.ratio,
                                                                           "ci_low": a.ratio.low,
                                                                           "ci_high": a.ratio.high}}
                        for n, a in r.attacks.items()},
            "train_seconds_per_cell": r.train_seconds, "train_cost_vs_none": r.cost_ratio,
            "sources": list(r.sources),
        })
    return out


def tradeoff_figure(rows: list[DefenseRow], path) -> Any:
    """Clean vs AutoAttack robust accuracy, one point per defense (per grid point and (norm, ε))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for r in rows:
        for a in r.robust:
            ax.errorbar(100 * r.accuracy.mean, 100 * a.robust_accuracy,
                        xerr=100 * r.accuracy.std if r.accuracy.n > 1 and math.isfinite(r.accuracy.std) else None,
                        yerr=[[100 * (a.robust_accuracy - a.ci_low)], [100 * (a.ci_high - a.robust_accuracy)]],
                        fmt="o", capsize=3)
            ax.annotate(f"{r.defense}", (100 * r.accuracy.mean, 100 * a.robust_accuracy),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("clean accuracy (%)")
    eps = sorted({f"{a.norm} ε={a.eps:.3g}" for r in rows for a in r.robust})
    ax.set_ylabel(f"AutoAttack robust accuracy (%) [{', '.join(eps)}]")
    ax.set_title("clean vs robust accuracy per defense")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
