"""The report's numbers: clean accuracy per round, budgets, and the before/after comparisons.

"Before" is the earliest round of a run (normally 0), "after" each later round.
Comparisons made:

* **budget ratio** = budget(after) / budget(before), both at the fooling-rate
  threshold in the same norm; when the later round did not reach the threshold,
  ``budget_ratio_lower_bound`` = largest ε tried (fixed-budget) or largest
  finite minimal norm (minimisation) / budget(before), a lower bound;
* **fooling rate at a fixed budget**: ε fixed at the earlier round's budget;
  the later round's rate at that ε is read from its recorded evaluations with
  :func:`fooling_rate_at` (exact for minimisation attacks, whose evaluations are
  the empirical CDF of per-clip minimal norms; linear interpolation between the
  bracketing bisection probes, with rate 0 at ε = 0, for fixed-budget attacks).

Every number shown is also a tidy row (:data:`VALUE_COLUMNS`) naming the file and
the JSON pointer it was read from, or ``derived``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from advaudio.reporting.discovery import AttackEntry, ReportData, RunData

__all__ = ["VALUE_COLUMNS", "FIXED_BUDGET", "MINIMISATION", "ValueRows", "analyse", "finite_number",
           "fooling_rate_at", "resolve_pointer"]

#: Columns of ``report.csv`` (and keys of ``report.json["values"]`` rows).
VALUE_COLUMNS = ("run", "round", "model", "view", "split", "attack", "norm", "metric", "value",
                 "source", "pointer", "note")
FIXED_BUDGET = "fixed-budget"
MINIMISATION = "minimisation"
# Per-attack numbers copied from an attack record: metric name → JSON pointer below the record.
RECORD_METRICS = (
    ("threshold", "/threshold"),
    ("budget", "/budget"),
    ("fooling_rate", "/fooling_rate"),
    ("success_rate", "/success_rate"),
    ("n_samples", "/n_samples"),
    ("n_attacked", "/n_attacked"),
    ("l2_median", "/stats/l2/median"),
    ("linf_median", "/stats/linf/median"),
    ("snr_db_median", "/stats/snr_db/median"),
    ("queries", "/queries"),
    ("wall_time_s", "/wall_time_s"),
)


def resolve_pointer(document: Any, pointer: str) -> Any:
    """Value at a JSON pointer (RFC 6901) in a parsed JSON document."""
    if pointer in ("", "/"):
        return document
    node = document
    for token in pointer.lstrip("/").split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(token)]
        else:
            node = node[token]
    return node


def _get(document: Any, pointer: str) -> Any:
    try:
        return resolve_pointer(document, pointer)
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def finite_number(v: Any) -> float | None:
    """``v`` as a float when it is a finite number (not a bool); else None."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v)):
        return float(v)
    return None


def fooling_rate_at(evaluations: Iterable[Sequence[float]], epsilon: float, kind: str) -> dict[str, Any]:
    """Fooling rate at ``epsilon`` read from an attack record's ``evaluations``.

    * ``kind="minimisation"``: the evaluations are the empirical CDF of the per-clip
      minimal norms (ε_i sorted, fraction of attacked clips fooled with norm ≤ ε_i);
      the rate at ε is the fraction of the largest ε_i ≤ ε (0 below the smallest):
      exact.
    * ``kind="fixed-budget"``: the evaluations are bisection probes (ε, rate); sorted
      by ε, with the point (0, 0) added (an unperturbed input fools no correctly
      classified clip), the rate at ε is interpolated linearly between the two probes
      bracketing it; above the largest probe it is the largest probe's rate.
      Exact where ε was probed, an estimate between probes.

    Returns ``{"value", "method", "bracket"}`` (``bracket``: the evaluation points used);
    ``value`` is None when there are no evaluations or ``epsilon`` is not finite.
    """
    eps = finite_number(epsilon)
    pts = sorted((float(e), float(r)) for e, r in (evaluations or [])
                 if finite_number(e) is not None and finite_number(r) is not None)
    if eps is None or not pts:
        return {"value": None, "method": "no evaluations" if not pts else "no budget", "bracket": []}
    if kind == MINIMISATION:
        below = [p for p in pts if p[0] <= eps]
        if not below:
            return {"value": 0.0, "method": "empirical CDF of minimal norms (below the smallest)",
                    "bracket": [list(pts[0])]}
        return {"value": below[-1][1], "method": "empirical CDF of minimal norms (exact)",
                "bracket": [list(below[-1])]}
    # fixed-budget: several probes at one ε cannot happen in a bisection, but average them if so
    merged: dict[float, list[float]] = {}
    for e, r in [(0.0, 0.0)] + pts:
        merged.setdefault(e, []).append(r)
    xs = sorted(merged)
    ys = [float(np.mean(merged[x])) for x in xs]
    if eps in merged:
        y = ys[xs.index(eps)]
        return {"value": y, "method": "probed at this ε (exact)", "bracket": [[eps, y]]}
    if eps > xs[-1]:
        return {"value": ys[-1], "method": "above the largest probe: its rate (a lower bound)",
                "bracket": [[xs[-1], ys[-1]]]}
    k = int(np.searchsorted(xs, eps))
    x0, x1, y0, y1 = xs[k - 1], xs[k], ys[k - 1], ys[k]
    value = y0 + (y1 - y0) * (eps - x0) / (x1 - x0)
    return {"value": float(value), "method": "linear interpolation between bisection probes",
            "bracket": [[x0, y0], [x1, y1]]}


def _metrics_accuracy(data: dict) -> tuple[float | None, str | None]:
    for pointer in ("/test/accuracy", "/test_accuracy"):
        v = _get(data, pointer)
        if finite_number(v) is not None:
            return float(v), pointer
    return None, None


class ValueRows:
    """Collects the tidy rows of every number shown."""

    def __init__(self):
        self.rows: list[dict[str, Any]] = []

    def add(self, *, run: RunData, round: int | None, metric: str, value: Any, source: str | Path,
            pointer: str = "", split: str = "", attack: str = "", norm: str = "", note: str = "") -> Any:
        v = value
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (float, np.floating)):
            v = float(v) if math.isfinite(float(v)) else None
        self.rows.append({
            "run": run.label, "round": round if round is not None else "", "model": run.model_label,
            "view": run.view, "split": split, "attack": attack, "norm": norm, "metric": metric, "value": v,
            "source": str(source), "pointer": pointer, "note": note,
        })
        return v


def analyse(data: ReportData) -> dict[str, Any]:
    """The report's numbers as a JSON-able dict (the content of ``report.json`` without files)."""
    values = ValueRows()
    runs_out = []
    for run in data.runs:
        rounds = run.rounds
        out: dict[str, Any] = {
            "label": run.label, "path": str(run.path.resolve()), "model": run.model,
            "model_label": run.model_label, "view": run.view, "test_fold": run.test_fold, "rounds": rounds,
            "accuracy": [], "accuracy_change": [], "attacks": [],
        }
        # ---- clean accuracy per round
        acc_by_round: dict[int, float | None] = {}
        for r in rounds:
            m = run.metrics.get(r)
            value, source, pointer, note = None, "", "", ""
            if m is not None:
                value, pointer = _metrics_accuracy(m.data)
                source = str(m.path)
                if value is None:
                    note = "training not complete: no test accuracy"
            else:
                a = next((a for a in run.attacks if a.round == r
                          and finite_number(a.document.clean_test_accuracy) is not None), None)
                if a is not None:
                    value, source, pointer = float(a.document.clean_test_accuracy), str(a.path), \
                        "/clean_test_accuracy"
                    note = "from the attack results (no metrics.json found for this round)"
                else:
                    note = "no metrics.json for this round"
            acc_by_round[r] = value
            entry = {"round": r, "value": value, "source": source, "pointer": pointer, "note": note}
            if m is not None:
                entry.update(
                    round_from=m.round_from,
                    per_class_accuracy=_get(m.data, "/test/per_class_accuracy"),
                    test_clips=_get(m.data, "/test/n"),
                    epochs=_get(m.data, "/epochs_done"),
                    samples_per_second=finite_number(_get(m.data, "/samples_per_second")),
                    wall_seconds=finite_number(_get(m.data, "/wall_seconds")),
                )
            out["accuracy"].append(entry)
            if source:
                values.add(run=run, round=r, metric="clean_test_accuracy", value=value, source=source,
                           pointer=pointer, note=note)
        base_round = rounds[0] if rounds else 0
        base_acc = acc_by_round.get(base_round)
        for r in rounds[1:]:
            a = acc_by_round.get(r)
            change = a - base_acc if a is not None and base_acc is not None else None
            out["accuracy_change"].append({"round": r, "base_round": base_round, "value": change})
            values.add(run=run, round=r, metric="clean_test_accuracy_change", value=change, source="derived",
                       note=f"round {r} minus round {base_round}")
        # ---- attacks, grouped by (split, attack, slice)
        groups: dict[tuple, list[AttackEntry]] = {}
        for a in run.attacks:
            groups.setdefault(a.key, []).append(a)
        for key in sorted(groups, key=lambda k: (k[0] != "test", k[0], k[1], k[2] or "")):
            entries = sorted(groups[key], key=lambda a: a.round)
            split, attack, sl = key
            first = entries[0].record
            norm, kind = first.norm, first.kind
            g: dict[str, Any] = {"split": split, "attack": attack, "slice": sl, "label": entries[0].label,
                                 "norm": norm, "kind": kind, "rounds": [], "comparisons": []}
            for e in entries:
                rec = e.record
                as_written = rec.to_json()  # what the JSON pointers of the value rows point into
                row = {
                    "round": e.round, "source": str(e.path), "pointer": e.pointer,
                    "kind": rec.kind, "norm": rec.norm, "reached": rec.reached, "reason": rec.reason,
                    "targeted": rec.targeted, "evaluations": as_written.get("evaluations") or [],
                    "shard": rec.shard, "notes": [n.to_json() for n in rec.notes],
                    "checkpoint": e.document.checkpoint,
                    "search": rec.search, "checks": [c.to_json() for c in rec.checks],
                }
                for metric, ptr in RECORD_METRICS:
                    v = _get(as_written, ptr)
                    row[metric] = v
                    note = ""
                    if metric == "budget" and not rec.reached:
                        note = f"not reached: {rec.reason or 'unknown reason'}"
                    values.add(run=run, round=e.round, metric=metric, value=v, source=e.path,
                               pointer=e.pointer + ptr, split=split, attack=e.label, norm=norm, note=note)
                g["rounds"].append(row)
            base = entries[0]
            b_rec = base.record
            b_budget = finite_number(b_rec.budget) if b_rec.reached else None
            for e in entries[1:]:
                rec = e.record
                comp: dict[str, Any] = {"round": e.round, "base_round": base.round, "budget_ratio": None,
                                        "budget_ratio_lower_bound": None, "epsilon": b_budget,
                                        "fooling_rate_before": (finite_number(b_rec.fooling_rate)
                                                                if b_budget is not None else None),
                                        "fooling_rate_after": None, "method": None, "bracket": [], "note": ""}
                if rec.norm != b_rec.norm:
                    comp["note"] = f"norms differ ({b_rec.norm} vs {rec.norm}): not compared"
                elif b_budget is None:
                    comp["note"] = f"round {base.round} did not reach the threshold: {b_rec.reason or 'no budget'}"
                else:
                    a_budget = finite_number(rec.budget)
                    if rec.reached and a_budget is not None and b_budget > 0:
                        comp["budget_ratio"] = a_budget / b_budget
                    elif a_budget is not None and b_budget > 0:
                        comp["budget_ratio_lower_bound"] = a_budget / b_budget
                        comp["note"] = f"round {e.round} not reached: {rec.reason or ''}".strip()
                    else:
                        comp["note"] = f"round {e.round} not reached: {rec.reason or 'no budget'}"
                    # a per-clip search records the empirical CDF of minimal ε, as minimisation attacks do
                    read = fooling_rate_at(rec.evaluations, b_budget,
                                           MINIMISATION if rec.search == "per-clip" else rec.kind)
                    comp.update(fooling_rate_after=read["value"], method=read["method"], bracket=read["bracket"])
                common = dict(run=run, round=e.round, split=split, attack=e.label, norm=norm, source="derived")
                values.add(metric="budget_ratio", value=comp["budget_ratio"],
                           note=f"budget round {e.round} / round {base.round}", **common)
                if comp["budget_ratio_lower_bound"] is not None:
                    values.add(metric="budget_ratio_lower_bound", value=comp["budget_ratio_lower_bound"],
                               note=comp["note"], **common)
                values.add(metric="fixed_budget_epsilon", value=b_budget,
                           note=f"round {base.round}'s budget", **common)
                values.add(metric="fooling_rate_at_fixed_budget", value=comp["fooling_rate_after"],
                           note=comp["method"] or comp["note"], **common)
                g["comparisons"].append(comp)
            out["attacks"].append(g)
        # ---- evaluation checks and robust accuracy, one entry per results file
        out["evaluation"] = []
        for a in sorted({a.path: a for a in run.attacks}.values(), key=lambda a: (a.round, str(a.path))):
            ev = a.document.evaluation
            if ev is not None:
                out["evaluation"].append({"round": a.round, "split": a.key[0], "source": str(a.path),
                                          "checks": [c.to_json() for c in ev.checks or ()],
                                          "robust_accuracy": dict(ev.robust_accuracy or {})})
        runs_out.append(out)
    return {"runs": runs_out, "values": values.rows}
