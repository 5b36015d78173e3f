"""The study report's numbers: per dataset, one row per model × view (× width × input size).

A *row* pools the cells (CV test folds × seeds) of one (dataset, model, view,
width, input_size):

* **clean accuracy before**: round 0's test accuracy of every cell of the row,
  mean ± std (ddof=1) over the cells; a (seed, test fold) present twice
  (attacked and not) counts once, the attacked cell's;
* **after**: the last round's test accuracy of the attacked cells; **change**: the
  mean over attacked cells of after − before *of the same cell*;
* per attack, the **budget** at the fooling-rate threshold over the pooled
  attacked clips of the attacked cells, before (round 0) and after (last round),
  with stratified bootstrap intervals, and the **after/before ratio** with its
  paired interval (:mod:`advaudio.reporting.bootstrap`); the evaluation checks
  that did not pass are counted and listed as warnings.

Every number keeps its sources: the ``cell.json`` files (and the attack results
files) it came from. :func:`tidy_values` flattens the tables into rows of
:data:`STUDY_COLUMNS` for the CSV/JSON files.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from advaudio.errors import ParameterError
from advaudio.reporting.bootstrap import BudgetInterval, RatioInterval, budget_interval, mean_std, ratio_interval

if TYPE_CHECKING:  # imported where used: the study package may import the report
    from advaudio.study.cellfile import AttackOutcome, CellSummary

__all__ = ["ROW_KEY", "STUDY_COLUMNS", "Accuracy", "AttackRow", "StudyRow", "StudyTables", "cell_source",
           "study_tables", "tidy_values"]

#: The key fields that make a table row; the others (seed, test_fold, attacked) are pooled.
ROW_KEY = ("dataset", "model", "view", "width", "input_size")
#: Columns of ``study.csv`` (and keys of ``study.json["values"]`` rows).
STUDY_COLUMNS = ("dataset", "model", "view", "width", "input_size", "attack", "metric", "value", "ci_low",
                 "ci_high", "n", "cell", "sources", "note")


def cell_source(summary: CellSummary) -> str:
    """The file a summary was read from (its cell id when it was never read from disk)."""
    return summary.path or f"{summary.cell_id} (cell.json not read from disk)"


@dataclass(frozen=True)
class Accuracy:
    """mean ± std (ddof=1) of ``values`` (one per cell), with the cells' ``cell.json`` paths."""

    values: tuple[float, ...]
    sources: tuple[str, ...]

    @property
    def mean(self) -> float:
        return mean_std(self.values)[0]

    @property
    def std(self) -> float:
        return mean_std(self.values)[1]

    @property
    def n(self) -> int:
        return mean_std(self.values)[2]


@dataclass(frozen=True)
class AttackRow:
    """One attack of a row: budgets before/after with intervals, their ratio, the checks."""

    attack: str
    norm: str
    kind: str
    threshold: float
    cells: int
    before: BudgetInterval | None
    after: BudgetInterval | None
    ratio: RatioInterval | None
    checks: int
    failed_checks: tuple[str, ...]
    sources: tuple[str, ...]  # cell.json files, then the attack results files

    @property
    def all_passed(self) -> bool:
        return not self.failed_checks


@dataclass(frozen=True)
class StudyRow:
    """One (dataset, model, view, width, input_size) and what its cells measured."""

    dataset: str
    model: str
    view: str
    width: Any
    input_size: Any
    cells: tuple[CellSummary, ...]
    before: Accuracy
    after: Accuracy | None
    change: Accuracy | None
    attacks: dict[str, AttackRow] = field(default_factory=dict)

    @property
    def key(self) -> tuple:
        return (self.dataset, self.model, self.view, self.width, self.input_size)

    @property
    def label(self) -> str:
        extra = [f"width {self.width}" if self.width is not None else "",
                 f"input {self.input_size}" if self.input_size is not None else ""]
        return " · ".join([self.dataset, self.model, self.view] + [e for e in extra if e])

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(cell_source(s) for s in self.cells)

    @property
    def attacked_cells(self) -> tuple[CellSummary, ...]:
        return tuple(s for s in self.cells if s.key.get("attacked"))

    @property
    def wall_time_s(self) -> float:
        times = [_wall_time(s) for s in self.cells]
        return float(sum(t for t in times if math.isfinite(t)))


@dataclass(frozen=True)
class StudyTables:
    """Every row, the bootstrap settings, and the warnings found while building them."""

    rows: tuple[StudyRow, ...]
    resamples: int
    confidence: float
    seed: int
    warnings: tuple[str, ...]

    @property
    def datasets(self) -> dict[str, list[StudyRow]]:
        out: dict[str, list[StudyRow]] = {}
        for row in self.rows:
            out.setdefault(row.dataset, []).append(row)
        return out

    @property
    def summaries(self) -> tuple[CellSummary, ...]:
        return tuple(s for row in self.rows for s in row.cells)


def _wall_time(s: CellSummary) -> float:
    v = (s.wall_time_s or {}).get("total")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def _sort_key(v: Any) -> tuple:
    return (v is not None, str(type(v).__name__), v if isinstance(v, (int, float)) else str(v))


def _row_key(s: CellSummary) -> tuple:
    missing = [k for k in ROW_KEY + ("seed", "test_fold") if k not in s.key]
    if missing:
        raise ParameterError(f"{cell_source(s)}: the cell's key lacks {', '.join(missing)}")
    # input sizes as "HxW" (JSON gives them back as lists): hashable, and read as a user writes them
    return tuple(("x".join(str(int(d)) for d in v) if isinstance(v, (list, tuple)) else v) if k == "input_size"
                 else v for k, v in ((k, s.key[k]) for k in ROW_KEY))


def _unique_cells(summaries: Iterable[CellSummary]) -> list[CellSummary]:
    from advaudio.study.cellfile import CellSummary

    seen: dict[tuple, CellSummary] = {}
    for s in summaries:
        if not isinstance(s, CellSummary):
            raise ParameterError(f"study_tables needs CellSummary objects, got {type(s).__name__}")
        key = tuple(sorted((k, str(v)) for k, v in s.key.items()))
        if key in seen:
            raise ParameterError(f"two cells with the same key ({seen[key].cell_id}, {s.cell_id}): "
                                 f"{cell_source(seen[key])} and {cell_source(s)}")
        seen[key] = s
        if s.round(0) is None:
            raise ParameterError(f"{cell_source(s)}: the cell has no round 0 (clean training)")
    return list(seen.values())


def _one(values: set, what: str, label: str) -> Any:
    if len(values) > 1:
        raise ParameterError(f"{label}: the cells ran with different {what} ({', '.join(map(str, sorted(values)))});"
                             f" pooled budgets need one")
    return next(iter(values))


def _attack_row(row_label: str, name: str, cells: Sequence[CellSummary], warnings: list[str], *,
                resamples: int, confidence: float, seed: int) -> AttackRow:
    pairs: list[tuple[CellSummary, AttackOutcome | None, AttackOutcome | None]] = []
    for s in cells:
        last = s.last_round
        b = s.round(0).attacks.get(name)
        a = last.attacks.get(name) if last.round > 0 else None
        if b is None:
            warnings.append(f"{row_label} · {name}: cell {s.cell_id} has no {name} result before retraining")
        if a is None and last.round > 0:
            warnings.append(f"{row_label} · {name}: cell {s.cell_id} has no {name} result in round {last.round}")
        pairs.append((s, b, a))
    outcomes = [o for _, b, a in pairs for o in (b, a) if o is not None]
    norm = _one({o.norm for o in outcomes}, f"norms for {name}", row_label)
    threshold = _one({float(o.threshold) for o in outcomes}, f"fooling-rate thresholds for {name}", row_label)
    kind = _one({o.kind for o in outcomes}, f"kinds for {name}", row_label)
    settings = dict(resamples=resamples, confidence=confidence, seed=seed)

    def interval(which: int) -> BudgetInterval | None:
        norms = [p[which].minimal_norms for p in pairs if p[which] is not None]
        if not sum(len(v) for v in norms):
            return None
        return budget_interval(norms, threshold, **settings)

    before, after = interval(1), interval(2)
    both = [((b.clip_rows, b.minimal_norms), (a.clip_rows, a.minimal_norms)) for _, b, a in pairs
            if b is not None and a is not None and len(b.clip_rows) and len(a.clip_rows)]
    ratio = None
    if both:
        try:
            ratio = ratio_interval(both, threshold, **settings)
        except ParameterError:  # no clip in one of the rounds: no ratio to give
            ratio = None
    failed, checks = [], 0
    for s, b, a in pairs:
        for o, rnd in ((b, 0), (a, s.last_round.round)):
            if o is None:
                continue
            checks += len(o.checks)
            for c in o.failed_checks:
                failed.append(f"cell {s.cell_id} round {rnd}: {c.get('check', '?')} ({c.get('status', '?')}): "
                              f"{c.get('text', '')}".rstrip(": "))
    warnings += [f"{row_label} · {name}: evaluation check {f}" for f in failed]
    for when, iv in (("before retraining", before), ("after retraining", after)):
        if iv is not None and not iv.reached:
            warnings.append(f"{row_label} · {name}: the fooling-rate threshold {threshold:g} was not reached "
                            f"{when} (largest finite minimal {norm} norm {iv.budget:.4g}, {iv.n} clips)")
    results = sorted({o.results for o in outcomes if o.results})
    return AttackRow(attack=name, norm=norm, kind=kind, threshold=threshold, cells=len(pairs), before=before,
                     after=after, ratio=ratio, checks=checks, failed_checks=tuple(failed),
                     sources=tuple(cell_source(s) for s in cells) + tuple(results))


def _build_row(key: tuple, cells: list[CellSummary], warnings: list[str], **settings) -> StudyRow:
    dataset, model, view, width, input_size = key
    label = StudyRow(dataset=dataset, model=model, view=view, width=width, input_size=input_size, cells=(),
                     before=Accuracy((), ()), after=None, change=None).label
    # clean accuracy: one value per (seed, test fold); the attacked cell's round 0 when both exist
    per_fold: dict[tuple, CellSummary] = {}
    for s in sorted(cells, key=lambda s: not s.key.get("attacked")):
        fk = (str(s.key["seed"]), str(s.key["test_fold"]))
        if fk in per_fold:
            warnings.append(f"{label}: seed {fk[0]} fold {fk[1]} has an attacked and an unattacked cell "
                            f"({per_fold[fk].cell_id}, {s.cell_id}); its clean accuracy counts once")
            continue
        per_fold[fk] = s
    counted = list(per_fold.values())
    before = Accuracy(tuple(float(s.round(0).test_accuracy) for s in counted),
                      tuple(cell_source(s) for s in counted))
    attacked = [s for s in cells if s.key.get("attacked")]
    retrained = [s for s in attacked if s.last_round.round > 0]
    for s in attacked:
        if s.last_round.round == 0:
            warnings.append(f"{label}: attacked cell {s.cell_id} has no retraining round")
    if len({s.last_round.round for s in retrained}) > 1:
        warnings.append(f"{label}: the attacked cells end at different rounds "
                        f"({', '.join(str(s.last_round.round) for s in retrained)})")
    after = change = None
    if retrained:
        src = tuple(cell_source(s) for s in retrained)
        after = Accuracy(tuple(float(s.last_round.test_accuracy) for s in retrained), src)
        change = Accuracy(tuple(float(s.last_round.test_accuracy) - float(s.round(0).test_accuracy)
                                for s in retrained), src)
    names: list[str] = []
    for s in attacked:
        for r in s.rounds:
            names += [n for n in r.attacks if n not in names]
    attacks = {n: _attack_row(label, n, attacked, warnings, **settings) for n in names}
    return StudyRow(dataset=dataset, model=model, view=view, width=width, input_size=input_size,
                    cells=tuple(cells), before=before, after=after, change=change, attacks=attacks)


def study_tables(
    summaries: Iterable[CellSummary],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> StudyTables:
    """The study's rows from finished cells' summaries (see the module docstring).

    Parameters
    ----------
    summaries : the cells' :class:`CellSummary` objects (``read_cell_summary``)
    resamples : bootstrap resamples per interval (default 2000)
    confidence : the intervals' coverage (default 0.95)
    seed : the bootstrap's seed (default 0: the same intervals on every run)

    Raises
    ------
    ParameterError : no summary, two cells with one key, a cell without round 0, or an
        attack whose cells in one row ran with different norms or thresholds
    """
    # the on-the-fly defenses of a defense axis have their own table (:mod:`.defense_table`)
    # and the waveform-domain cells of a domain axis theirs (:mod:`.domain_table`): these rows are the paper's
    cells = [c for c in _unique_cells(summaries) if str(c.key.get("defense") or "none") == "none"
             and str(c.key.get("domain") or "feature") == "feature"]
    if not cells:
        raise ParameterError("study_tables needs at least one finished cell")
    warnings: list[str] = []
    groups: dict[tuple, list[CellSummary]] = {}
    for s in cells:
        groups.setdefault(_row_key(s), []).append(s)
    rows = [_build_row(k, groups[k], warnings, resamples=resamples, confidence=confidence, seed=seed)
            for k in sorted(groups, key=lambda k: tuple(_sort_key(v) for v in k))]
    # a row lacking a (seed, fold) that other rows of its dataset have: cells missing
    by_dataset: dict[str, set] = {}
    for row in rows:
        by_dataset.setdefault(row.dataset, set()).update((str(s.key["seed"]), str(s.key["test_fold"]))
                                                         for s in row.cells)
    for row in rows:
        have = {(str(s.key["seed"]), str(s.key["test_fold"])) for s in row.cells}
        lacking = sorted(by_dataset[row.dataset] - have)
        if lacking:
            warnings.append(f"{row.label}: no finished cell for " + ", ".join(f"seed {s} fold {f}" for s, f in lacking)
                            + f" (its mean is over {row.before.n} cells)")
    return StudyTables(rows=tuple(rows), resamples=int(resamples), confidence=float(confidence), seed=int(seed),
                       warnings=tuple(warnings))


# --------------------------------------------------------------------------- #
# tidy rows
# --------------------------------------------------------------------------- #
def _num(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _interval_note(iv: BudgetInterval | RatioInterval, point_ok: bool) -> str:
    notes = [] if point_ok else ["threshold not reached"]
    if iv.high == math.inf:
        notes.append("ci_high not reached")
    if iv.low == math.inf:
        notes.append("ci_low not reached")
    return "; ".join(notes)


def tidy_values(tables: StudyTables) -> list[dict[str, Any]]:
    """Every number of ``tables`` as a row of :data:`STUDY_COLUMNS` (inf and NaN → None, said in ``note``).

    Row-level numbers have an empty ``cell``; the per-cell values they were computed
    from follow with the cell's id, so each mean can be recomputed from the file.
    Accuracies and their change are fractions (× 100: %, pp); budgets are in the
    attack's norm (``note``), ``n`` counts cells (accuracies) or clips (budgets).
    """
    out: list[dict[str, Any]] = []

    def add(row: StudyRow, metric: str, value: Any, *, attack: str = "", low: Any = None, high: Any = None,
            n: Any = None, cell: str = "", sources: Sequence[str] = (), note: str = "") -> None:
        out.append({"dataset": row.dataset, "model": row.model, "view": row.view, "width": row.width,
                    "input_size": row.input_size, "attack": attack, "metric": metric, "value": _num(value),
                    "ci_low": _num(low), "ci_high": _num(high), "n": n, "cell": cell, "sources": list(sources),
                    "note": note})

    for row in tables.rows:
        for name, acc in (("accuracy_before", row.before), ("accuracy_after", row.after),
                          ("accuracy_change", row.change)):
            if acc is None:
                continue
            add(row, name, acc.mean, n=acc.n, sources=acc.sources, note="mean over cells")
            add(row, name + "_std", acc.std, n=acc.n, sources=acc.sources, note="std over cells, ddof=1")
        add(row, "wall_time_s", row.wall_time_s, n=len(row.cells), sources=row.sources, note="sum over cells")
        for name, a in row.attacks.items():
            for metric, iv in (("budget_before", a.before), ("budget_after", a.after)):
                if iv is not None:
                    add(row, metric, iv.budget, attack=name, low=iv.low, high=iv.high, n=iv.n, sources=a.sources,
                        note="; ".join(filter(None, [a.norm, _interval_note(iv, iv.reached)])))
            if a.ratio is not None:
                r = a.ratio
                note = _interval_note(r, math.isfinite(r.ratio))
                if math.isinf(r.ratio) and math.isfinite(r.lower_bound):
                    note += f"; ratio > {r.lower_bound:.6g}"
                if math.isnan(r.ratio):
                    note = "undefined: before did not reach the threshold"
                add(row, "budget_ratio", r.ratio, attack=name, low=r.low, high=r.high, n=r.n, sources=a.sources,
                    note=note.strip("; "))
            add(row, "checks_failed", len(a.failed_checks), attack=name, n=a.checks, sources=a.sources,
                note="evaluation checks that did not pass, of n")
        for s in row.cells:
            src = [cell_source(s)]
            add(row, "cell_accuracy_before", s.round(0).test_accuracy, n=s.round(0).test_clips, cell=s.cell_id,
                sources=src, note=f"round 0, seed {s.key['seed']}, fold {s.key['test_fold']}")
            if s.key.get("attacked") and s.last_round.round > 0:
                last = s.last_round
                add(row, "cell_accuracy_after", last.test_accuracy, n=last.test_clips, cell=s.cell_id, sources=src,
                    note=f"round {last.round}")
            add(row, "cell_wall_time_s", _wall_time(s), cell=s.cell_id, sources=src)
            for r in s.rounds:
                for name, o in r.attacks.items():
                    add(row, f"cell_budget_round{r.round}", o.budget, attack=name, n=len(o.minimal_norms),
                        cell=s.cell_id, sources=src + ([o.results] if o.results else []),
                        note=f"{o.norm}; " + ("reached" if o.reached else "threshold not reached"))
    return out

