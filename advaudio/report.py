"""The report stage: run directories → Markdown, HTML, figures, JSON/CSV and WAV files.

The question answered: *how much clean accuracy does adversarial training cost,
and how much larger a budget does the attacker then need?*

A **run directory** holds a model and the attacks on it, round after round::

    RUN_DIR/
      checkpoint.pt, metrics.json               round 0: trained on clean data
      attack-round00-test.json                  attacks on round 0's test fold
      attack-round00-train.json                 attacks on the training folds (retraining data)
      round01/checkpoint.pt, round01/metrics.json
      round01/attack-round01-test.json …

:func:`collect_runs` finds every ``metrics.json`` and ``attack-round*-*.json``
below each RUN_DIR (recursively, any layout) and groups them by round:

* an attack record's round is its ``"round"`` field (else the file's
  ``config.round``, else the ``roundNN`` of its file name);
* a ``metrics.json``'s round is its top-level ``"round"``; else the round of the
  attack results that attacked the checkpoint beside it (same resolved path, or
  results files in the same directory); else a ``roundNN`` directory name; else 0.

:func:`write_report` writes ``report.md``, ``report.html`` (self-contained apart
from the PNGs it links relatively), ``figures/*.png``, ``report.json`` and
``report.csv`` (every number shown, in a tidy layout: one row per run, round,
model, view, split, attack, metric — with the file and the JSON pointer it was
read from, or ``derived``), and ``audio/*.wav`` for runs on the ``stft`` view.

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
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from advaudio import layout
from advaudio.attacks.results import Note
from advaudio.errors import ParameterError, StoreError
from advaudio.store import jsonable

__all__ = [
    "AttackEntry",
    "MetricsEntry",
    "RunData",
    "ReportData",
    "collect_runs",
    "fooling_rate_at",
    "analyse",
    "write_report",
    "resolve_pointer",
    "VALUE_COLUMNS",
]

REPORT_FORMAT = "advaudio-report"
REPORT_VERSION = 1
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


# --------------------------------------------------------------------------- #
# Collected files
# --------------------------------------------------------------------------- #
@dataclass
class MetricsEntry:
    """One ``metrics.json`` (a trained checkpoint) and the round it belongs to."""

    path: Path
    round: int
    round_from: str  # "metrics.json", "attack results", "directory name", "default"
    data: dict


@dataclass
class AttackEntry:
    """One attack record (one attack of one results file)."""

    path: Path  # the results JSON
    index: int  # position in its "attacks" list
    round: int
    split: str
    attack: str
    slice: str | None
    record: dict
    document: dict  # the whole results file (shared between its records)

    @property
    def pointer(self) -> str:
        return f"/attacks/{self.index}"

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.split, self.attack, self.slice)

    @property
    def label(self) -> str:
        return self.attack if self.slice is None else f"{self.attack} [slice {self.slice}]"


@dataclass
class RunData:
    """Everything found below one run directory."""

    path: Path
    label: str
    metrics: dict[int, MetricsEntry] = field(default_factory=dict)
    attacks: list[AttackEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> list[int]:
        return sorted(set(self.metrics) | {a.round for a in self.attacks})

    def _first(self, getter):
        for r in sorted(self.metrics):
            v = getter(self.metrics[r].data)
            if v:
                return v
        for a in self.attacks:
            v = getter(a.document)
            if v:
                return v
        return None

    @property
    def model(self) -> dict:
        return self._first(lambda d: d.get("model") if isinstance(d.get("model"), dict) else None) or {}

    @property
    def model_label(self) -> str:
        m = self.model
        name = str(m.get("name", "?"))
        width = m.get("width")
        if isinstance(width, (int, float)) and width != 1:
            name += f" (width {width:g})"
        return name

    @property
    def view(self) -> str:
        def get(d):
            v = d.get("view")
            return v.get("name") if isinstance(v, dict) else v

        return str(self._first(get) or "?")

    @property
    def test_fold(self) -> int | None:
        return self._first(lambda d: (d.get("split") or {}).get("test_fold")
                           if isinstance(d.get("split"), dict) else None)


@dataclass
class ReportData:
    runs: list[RunData]
    warnings: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[Path]:
        files = []
        for run in self.runs:
            files += [m.path for m in run.metrics.values()]
            files += sorted({a.path for a in run.attacks})
        return files


def _read_json(path: Path, warnings: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        warnings.append(f"skipped {path}: not readable JSON ({exc})")
        return None
    if not isinstance(data, dict):
        warnings.append(f"skipped {path}: not a JSON object")
        return None
    return data


def _resolved(p: Any) -> str | None:
    if not p:
        return None
    try:
        return str(Path(p).resolve())
    except (OSError, ValueError):
        return str(p)


def _labels(paths: list[Path]) -> list[str]:
    """Short unique labels: the directory name, with parents added until unique."""
    parts = [p.resolve().parts for p in paths]
    depth = 1
    while True:
        labels = ["/".join(pt[-depth:]) if pt else str(p) for pt, p in zip(parts, paths)]
        if len(set(labels)) == len(labels) or depth > max((len(pt) for pt in parts), default=1):
            return labels
        depth += 1


def collect_runs(run_dirs: Sequence[str | Path] | str | Path) -> ReportData:
    """Find and group the metrics and attack results below each run directory (module docstring).

    Raises ParameterError when a run directory does not exist or none holds any result.
    Unreadable files are skipped with a warning (``ReportData.warnings``).
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ParameterError("give at least one run directory")
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ParameterError(f"no run directory at {', '.join(missing)}")
    runs = []
    for d, label in zip(dirs, _labels(dirs)):
        run = RunData(path=d, label=label)
        # ---- attack results first: they also date the checkpoints beside them
        for path in sorted(d.rglob(layout.ATTACK_RESULTS_GLOB)):
            if not path.is_file() or ".tmp" in path.name:
                continue
            doc = _read_json(path, run.warnings)
            if doc is None:
                continue
            records = doc.get("attacks")
            if not isinstance(records, list):
                run.warnings.append(f"skipped {path}: no 'attacks' list (not an attack results file)")
                continue
            cfg = doc.get("config") or {}
            named = layout.parse_attack_results_name(path.name)
            file_round = cfg.get("round", named.round if named else 0)
            for i, rec in enumerate(records):
                if not isinstance(rec, dict) or "attack" not in rec:
                    run.warnings.append(f"{path}: attack record {i} has no 'attack' name; skipped")
                    continue
                sl = rec.get("slice")
                sl = f"{sl[0]}/{sl[1]}" if isinstance(sl, (list, tuple)) and len(sl) == 2 else None
                run.attacks.append(AttackEntry(
                    path=path, index=i, round=int(rec.get("round", file_round) or 0),
                    split=str(rec.get("split", cfg.get("split", "test"))), attack=str(rec["attack"]),
                    slice=sl, record=rec, document=doc,
                ))
        # duplicates (same round, split, attack, slice from two files): the newest file wins
        seen: dict[tuple, AttackEntry] = {}
        for a in sorted(run.attacks, key=lambda a: (a.path.stat().st_mtime, str(a.path))):
            k = (a.round,) + a.key
            if k in seen:
                run.warnings.append(f"{a.label} round {a.round} ({a.split}) appears in {seen[k].path} and "
                                    f"{a.path}; the newer file ({a.path.name}) is used")
            seen[k] = a
        run.attacks = sorted(seen.values(), key=lambda a: (a.round, a.split != "test", a.split, a.path.name,
                                                           a.index))
        # A job array's slices are represented by their merged results once those exist.
        merged = {(a.round, a.split, a.attack) for a in run.attacks if a.slice is None}
        run.attacks = [a for a in run.attacks if a.slice is None or (a.round, a.split, a.attack) not in merged]
        by_ckpt: dict[str, set[int]] = {}
        by_dir: dict[str, set[int]] = {}
        for a in run.attacks:
            c = _resolved(a.document.get("checkpoint"))
            if c:
                by_ckpt.setdefault(c, set()).add(a.round)
            by_dir.setdefault(str(a.path.parent.resolve()), set()).add(a.round)
        # ---- metrics
        for path in sorted(d.rglob(layout.METRICS_NAME), key=lambda p: (len(p.parts), str(p))):
            data = _read_json(path, run.warnings)
            if data is None:
                continue
            if "test" not in data and "history" not in data and "model" not in data:
                run.warnings.append(f"skipped {path}: not a training metrics file")
                continue
            rnd, source = None, None
            if isinstance(data.get("round"), (int, float)) and not isinstance(data.get("round"), bool):
                rnd, source = int(data["round"]), "metrics.json"
            else:
                ckpt = _resolved(layout.checkpoint_path(path.parent))
                cands = by_ckpt.get(ckpt) or by_dir.get(str(path.parent.resolve()))
                if cands and len(cands) == 1:
                    rnd, source = next(iter(cands)), "attack results"
                else:
                    named = layout.round_of_directory(path.parent.name)
                    rnd, source = (named, "directory name") if named is not None else (0, "default")
            if rnd in run.metrics:
                run.warnings.append(f"two metrics files for round {rnd}: {run.metrics[rnd].path} and {path}; "
                                    f"the first is used")
                continue
            run.metrics[rnd] = MetricsEntry(path=path, round=rnd, round_from=source, data=data)
        if not run.metrics and not run.attacks:
            run.warnings.append(f"{d}: no {layout.METRICS_NAME} and no {layout.ATTACK_RESULTS_GLOB} found")
        runs.append(run)
    data = ReportData(runs=runs, warnings=[w for r in runs for w in r.warnings])
    if not any(r.metrics or r.attacks for r in runs):
        raise ParameterError(f"no {layout.METRICS_NAME} or attack results below {', '.join(map(str, dirs))}")
    return data


# --------------------------------------------------------------------------- #
# Numbers
# --------------------------------------------------------------------------- #
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


def _num(v: Any) -> float | None:
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
    eps = _num(epsilon)
    pts = sorted((float(e), float(r)) for e, r in (evaluations or []) if _num(e) is not None and _num(r) is not None)
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
        if _num(v) is not None:
            return float(v), pointer
    return None, None


class _Values:
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
    values = _Values()
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
                a = next((a for a in run.attacks if a.round == r and _num(a.document.get("clean_test_accuracy"))
                          is not None), None)
                if a is not None:
                    value, source, pointer = float(a.document["clean_test_accuracy"]), str(a.path), \
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
                    samples_per_second=_num(_get(m.data, "/samples_per_second")),
                    wall_seconds=_num(_get(m.data, "/wall_seconds")),
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
            norm = str(first.get("norm", ""))
            kind = str(first.get("kind", ""))
            g: dict[str, Any] = {"split": split, "attack": attack, "slice": sl, "label": entries[0].label,
                                 "norm": norm, "kind": kind, "rounds": [], "comparisons": []}
            for e in entries:
                rec = e.record
                row = {
                    "round": e.round, "source": str(e.path), "pointer": e.pointer,
                    "kind": rec.get("kind"), "norm": rec.get("norm"),
                    "reached": bool(rec.get("reached")), "reason": rec.get("reason"),
                    "targeted": rec.get("targeted"), "evaluations": rec.get("evaluations") or [],
                    "shard": rec.get("shard"), "notes": [Note.from_json(n).to_json() for n in rec.get("notes") or []],
                    "checkpoint": e.document.get("checkpoint"),
                }
                for metric, ptr in RECORD_METRICS:
                    v = _get(rec, ptr)
                    row[metric] = v
                    note = ""
                    if metric == "budget" and not rec.get("reached"):
                        note = f"not reached: {rec.get('reason') or 'unknown reason'}"
                    values.add(run=run, round=e.round, metric=metric, value=v, source=e.path,
                               pointer=e.pointer + ptr, split=split, attack=e.label, norm=norm, note=note)
                g["rounds"].append(row)
            base = entries[0]
            b_rec = base.record
            b_budget = _num(b_rec.get("budget")) if b_rec.get("reached") else None
            for e in entries[1:]:
                rec = e.record
                comp: dict[str, Any] = {"round": e.round, "base_round": base.round, "budget_ratio": None,
                                        "budget_ratio_lower_bound": None, "epsilon": b_budget,
                                        "fooling_rate_before": (_num(b_rec.get("fooling_rate"))
                                                                if b_budget is not None else None),
                                        "fooling_rate_after": None, "method": None, "bracket": [], "note": ""}
                if rec.get("norm") != b_rec.get("norm"):
                    comp["note"] = f"norms differ ({b_rec.get('norm')} vs {rec.get('norm')}): not compared"
                elif b_budget is None:
                    comp["note"] = f"round {base.round} did not reach the threshold: " \
                                   f"{b_rec.get('reason') or 'no budget'}"
                else:
                    a_budget = _num(rec.get("budget"))
                    if rec.get("reached") and a_budget is not None and b_budget > 0:
                        comp["budget_ratio"] = a_budget / b_budget
                    elif a_budget is not None and b_budget > 0:
                        comp["budget_ratio_lower_bound"] = a_budget / b_budget
                        comp["note"] = f"round {e.round} not reached: {rec.get('reason') or ''}".strip()
                    else:
                        comp["note"] = f"round {e.round} not reached: {rec.get('reason') or 'no budget'}"
                    read = fooling_rate_at(rec.get("evaluations") or [], b_budget, str(rec.get("kind")))
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
        runs_out.append(out)
    return {"runs": runs_out, "values": values.rows}


# --------------------------------------------------------------------------- #
# Formatting
# --------------------------------------------------------------------------- #
def fmt_pct(v: Any) -> str:
    """A fraction as a percentage with one decimal (``0.6667`` → ``66.7 %``); ``—`` when missing."""
    v = _num(v)
    return "—" if v is None else f"{100.0 * v:.1f} %"


def fmt_pp(v: Any) -> str:
    """A difference of fractions in percentage points (``-0.05`` → ``-5.0 pp``)."""
    v = _num(v)
    return "—" if v is None else f"{100.0 * v:+.1f} pp"


def fmt_num(v: Any, digits: int = 4) -> str:
    v = _num(v)
    return "—" if v is None else f"{v:.{digits}g}"


def fmt_ratio(v: Any) -> str:
    v = _num(v)
    return "—" if v is None else f"×{v:.3g}"


@dataclass
class Link:
    text: str
    href: str
    audio: bool = False


# Blocks: ("h1"|"h2"|"h3"|"p"|"note", text) | ("table", headers, rows) | ("img", src, alt) | ("list", items)
Block = tuple


def _md_cell(c: Any) -> str:
    if isinstance(c, Link):
        href = f"<{c.href}>" if any(ch in c.href for ch in " ()") else c.href
        return f"[{c.text}]({href})"
    return str(c).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "note":
            out.append("> " + b[1].replace("\n", "\n> "))
        elif kind == "list":
            out.append("\n".join(f"- {_md_cell(i) if isinstance(i, Link) else i}" for i in b[1]))
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
        elif kind == "table":
            headers, rows = b[1], b[2]
            lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |",
                     "|" + "|".join("---" for _ in headers) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        out.append("")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:72rem;margin:2rem auto;
padding:0 1rem;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.6rem 0 1.2rem;font-size:0.9rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.55rem;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;border:1px solid #ddd;margin:0.4rem 0 1rem}
blockquote{border-left:4px solid #9ab;margin:0.8rem 0;padding:0.2rem 0.9rem;background:#f5f8fa}
audio{height:2rem;vertical-align:middle} code{background:#f2f2f2;padding:0 0.2rem}
""".strip()


def _html_cell(c: Any) -> str:
    if isinstance(c, Link):
        href = html.escape(c.href, quote=True)
        link = f'<a href="{href}">{html.escape(c.text)}</a>'
        if c.audio:
            return f'<audio controls preload="none" src="{href}"></audio> {link}'
        return link
    return html.escape(str(c))


def render_html(blocks: list[Block], *, title: str) -> str:
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(b[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(b[1])}</p>")
        elif kind == "note":
            body.append("<blockquote>" + "<br>".join(html.escape(line) for line in b[1].split("\n"))
                        + "</blockquote>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{_html_cell(i)}</li>" for i in b[1]) + "</ul>")
        elif kind == "img":
            body.append(f'<img src="{html.escape(b[1], quote=True)}" alt="{html.escape(b[2], quote=True)}">')
        elif kind == "table":
            head = "".join(f"<th>{_html_cell(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


# --------------------------------------------------------------------------- #
# Shards: examples and audio
# --------------------------------------------------------------------------- #
def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "x"


def _shard_path(record: dict, document: dict) -> Path | None:
    p = record.get("shard")
    if not p:
        return None
    path = Path(p)
    if path.is_file():
        return path
    from advaudio.store import shard_path

    store = document.get("store")
    if store and shard_path(store, path.stem).is_file():  # the store moved with its shards
        return shard_path(store, path.stem)
    return None


def _open_store(entries: list[AttackEntry], shard: Path):
    from advaudio.store import Store

    for cand in [e.document.get("store") for e in entries] + [shard.parent.parent]:
        if cand and Path(cand).is_dir():
            try:
                return Store(cand)
            except Exception:  # noqa: BLE001 - an unusable store only loses the examples
                continue
    return None


def _read_shard(path: Path) -> dict[str, Any]:
    from advaudio.store import AdversarialShard

    shard = AdversarialShard.open(path)
    d = shard.read([k for k in ("adversarial", "clean_index", "label", "target", "predicted", "attacked",
                                "success", "within_budget") if k in shard])
    d["adversarial"] = np.asarray(d["adversarial"], np.float32)
    d["file"] = path
    d["view"] = shard.attr("view")
    d["fingerprint"] = shard.attr("store_fingerprint")
    return d


def _examples(run: RunData, rnd: int, out_dir: Path, *, max_clips: int, listen: bool,
              warnings: list[str]) -> dict[str, Any] | None:
    """Fig. 1 grid (and WAVs for an stft view) for the test-split shards of one round."""
    from advaudio import figures
    from advaudio.store import check_same_store
    from advaudio.views import View

    entries = [a for a in run.attacks if a.round == rnd and a.split == "test" and a.slice is None]
    shards = []
    for e in entries:
        p = _shard_path(e.record, e.document)
        if p is not None:
            shards.append((e, p))
        elif e.record.get("shard"):
            warnings.append(f"{run.label} round {rnd}: shard of {e.attack} not found ({e.record.get('shard')})")
    if not shards or max_clips <= 0:
        return None
    try:
        loaded = [(e, p, _read_shard(p)) for e, p in shards]
    except Exception as exc:  # noqa: BLE001
        warnings.append(f"{run.label} round {rnd}: cannot read the shards ({exc})")
        return None
    store = _open_store([e for e, _, _ in loaded], loaded[0][1])
    if store is None:
        warnings.append(f"{run.label} round {rnd}: the feature store is not available; no example figure")
        return None
    d0 = loaded[0][2]
    if d0["fingerprint"] is not None:
        try:
            check_same_store(store, str(d0["fingerprint"]), what=f"adversarial shard {d0['file']}")
        except StoreError as exc:
            warnings.append(f"{run.label} round {rnd}: {exc}")
            return None
    view = View.from_dict(d0["view"])
    # clips present in every shard; prefer those fooled within the budget by every attack
    common = set(int(i) for i in d0["clean_index"])
    for _, _, d in loaded[1:]:
        common &= set(int(i) for i in d["clean_index"])
    if not common:
        warnings.append(f"{run.label} round {rnd}: the shards share no clip")
        return None

    def score_of(d, row) -> int:
        """2: attacked and fooled within the budget; 1: attacked; 0: not attacked (wrong when clean)."""
        i = int(np.flatnonzero(d["clean_index"] == row)[0])
        attacked = bool(d["attacked"][i]) if "attacked" in d else True
        fooled = d["within_budget"] if "within_budget" in d else d.get("success")
        return (1 if attacked else 0) + (1 if attacked and fooled is not None and bool(fooled[i]) else 0)

    ordered = sorted(common)
    score = {row: sum(score_of(d, row) for _, _, d in loaded) for row in ordered}
    rows = sorted(ordered, key=lambda r: (-score[r], ordered.index(r)))[:max_clips]
    rows = sorted(rows)
    with store.reader() as reader:
        clean = view.read(reader, rows).numpy()
    adversarials, titles, index = {}, {}, {}
    for e, p, d in loaded:
        idx = [int(np.flatnonzero(d["clean_index"] == r)[0]) for r in rows]
        index[e.attack] = (p, idx, d)
        adversarials[e.attack] = d["adversarial"][idx]
        b = e.record.get("budget")
        reached = e.record.get("reached")
        titles[e.attack] = f"{e.attack}\n{e.record.get('norm', '')} ε={fmt_num(b, 3)}" + ("" if reached else " (n.r.)")
    classes = store.classes
    labels = [f"{store.clip_ids[r]}\n({classes[int(store.labels[r])]})" for r in rows]
    fig_path = out_dir / "figures" / f"examples-{_safe(run.label)}-round{rnd:02d}.png"
    figures.adversarial_grid(clean, adversarials, fig_path, titles=titles, row_labels=labels,
                             diff_scale="column",
                             title=f"{run.model_label} · {run.view} · round {rnd}: clean vs adversarial")
    clips = []
    for k, r in enumerate(rows):
        per = {}
        for attack, (p, idx, d) in index.items():
            i = idx[k]
            per[attack] = {
                "shard": str(p), "sample": i,
                "target": int(d["target"][i]) if "target" in d else None,
                "predicted": int(d["predicted"][i]) if "predicted" in d else None,
                "success": bool(d["success"][i]) if "success" in d else None,
                "within_budget": bool(d["within_budget"][i]) if "within_budget" in d else None,
                "snr_db": None,
            }
        clips.append({"row": int(r), "clip_id": str(store.clip_ids[r]), "label": int(store.labels[r]),
                      "class": classes[int(store.labels[r])], "attacks": per})
    result = {"round": rnd, "figure": str(fig_path.relative_to(out_dir)), "clips": clips, "listening": [],
              "view": view.name}
    if listen and tuple(view.representations) == ("stft",):
        from advaudio.listen import listen as listen_one

        for clip in clips:
            for attack, info in clip["attacks"].items():
                d = index[attack][2]
                if "attacked" in d and not bool(d["attacked"][info["sample"]]):
                    continue  # misclassified when clean: not perturbed, nothing to hear
                prefix = f"{_safe(run.label)}-r{rnd:02d}-{_safe(clip['clip_id'])}-{_safe(attack)}"
                try:
                    res = listen_one(info["shard"], out_dir / "audio", sample=info["sample"], store=store,
                                     prefix=prefix)
                except Exception as exc:  # noqa: BLE001 - e.g. the dataset's audio moved
                    warnings.append(f"{run.label} round {rnd}: no audio for {clip['clip_id']} / {attack}: {exc}")
                    continue
                entry = res.to_dict()
                for k in ("clean_wav", "clean_resynth_wav", "adversarial_wav"):
                    entry[k] = str(Path(entry[k]).relative_to(out_dir.resolve()))
                entry["class"] = clip["class"]
                result["listening"].append(entry)
    return result


# --------------------------------------------------------------------------- #
# The report
# --------------------------------------------------------------------------- #
HOW_TO_READ = "\n".join([
    "How to read this report.",
    "• Round 0 is the model trained on clean data; round k ≥ 1 was retrained with adversarial examples "
    "(attacks on the training folds of the previous round). “Before” is a run's first round, “after” each "
    "later one.",
    "• Clean test accuracy: the checkpoint's held-out test fold, unperturbed; the change is in percentage "
    "points (pp). It is the price of adversarial training.",
    "• Budget at the threshold: the smallest perturbation size ε — in the attack's norm, measured on the "
    "model's input in [0, 1] — at which the attack fools at least the threshold fraction of the attacked test "
    "clips (the clips classified correctly when clean). Fixed-budget attacks (FGSM, BIM, PGD): bisection over "
    "ε; minimisation attacks (DeepFool, CW, EAD, Boundary, HopSkipJump): the quantile of the per-clip minimal "
    "norms.",
    "• after/before: the ratio of the budgets. ×2 means the attacker needs twice the perturbation after "
    "retraining (the paper's “how much more perturbation”). “> ×r” when the later round never reached the "
    "threshold: r uses the largest ε tried, so the true ratio is larger.",
    "• Fooling rate at a fixed budget: ε fixed at the first round's budget; a later round's rate at that ε is "
    "read from its recorded evaluations — exactly from the empirical CDF of minimal norms for minimisation "
    "attacks, by linear interpolation between the two bisection probes around ε (rate 0 at ε = 0) for "
    "fixed-budget attacks.",
    "• Every number shown is in report.json and report.csv with the file and JSON pointer it was read from "
    "(or “derived”). Budgets of different norms (L∞, L2) do not compare with each other; their ratios do.",
])


def _acc_table(analysis: dict) -> Block:
    all_rounds = sorted({r for run in analysis["runs"] for r in run["rounds"]})
    headers = ["run", "model", "view", "test fold"] + [f"round {r}" for r in all_rounds]
    if len(all_rounds) > 1:
        headers.append("change (last − first)")
    rows = []
    for run in analysis["runs"]:
        acc = {a["round"]: a["value"] for a in run["accuracy"]}
        fold = run["test_fold"] if run["test_fold"] is not None else "—"
        row = [run["label"], run["model_label"], run["view"], fold]
        row += [fmt_pct(acc.get(r)) if r in acc else "" for r in all_rounds]
        if len(all_rounds) > 1:
            ch = run["accuracy_change"][-1]["value"] if run["accuracy_change"] else None
            row.append(fmt_pp(ch))
        rows.append(row)
    return ("table", headers, rows)


def _budget_cell(r: dict) -> str:
    if r["reached"]:
        return fmt_num(r["budget"])
    tried = f" (largest tried/found: {fmt_num(r['budget'])})" if _num(r["budget"]) is not None else ""
    return f"not reached: {r['reason'] or 'unknown reason'}{tried}"


def _counts(r: dict) -> str:
    a, n = r.get("n_attacked"), r.get("n_samples")
    return f"{a if a is not None else '—'} / {n if n is not None else '—'}"


def _budget_table(g_list: list[dict]) -> Block:
    headers = ["attack", "norm", "kind", "round", "threshold", "budget at threshold", "after/before",
               "fooling rate", "success rate", "median L2", "median SNR (dB)", "attacked / clips"]
    rows = []
    for g in g_list:
        comps = {c["round"]: c for c in g["comparisons"]}
        for r in g["rounds"]:
            c = comps.get(r["round"])
            if c is None:
                ratio = "(before)"
            elif c["budget_ratio"] is not None:
                ratio = fmt_ratio(c["budget_ratio"])
            elif c["budget_ratio_lower_bound"] is not None:
                ratio = "> " + fmt_ratio(c["budget_ratio_lower_bound"])
            else:
                ratio = "— " + (c["note"] or "")
            rows.append([g["label"], g["norm"], g["kind"], r["round"], fmt_num(r["threshold"]), _budget_cell(r),
                         ratio, fmt_pct(r["fooling_rate"]), fmt_pct(r["success_rate"]), fmt_num(r["l2_median"]),
                         fmt_num(r["snr_db_median"]), _counts(r)])
    return ("table", headers, rows)


def _fixed_table(g_list: list[dict]) -> Block | None:
    headers = ["attack", "norm", "ε (first round's budget)", "round", "fooling rate before", "fooling rate after",
               "read by"]
    rows = []
    for g in g_list:
        first = g["rounds"][0]["round"] if g["rounds"] else 0
        for c in g["comparisons"]:
            rows.append([g["label"], g["norm"], fmt_num(c["epsilon"]), f"{first} → {c['round']}",
                         fmt_pct(c["fooling_rate_before"]), fmt_pct(c["fooling_rate_after"]),
                         c["method"] or c["note"] or "—"])
    return ("table", headers, rows) if rows else None


def _make_figures(analysis: dict, out_dir: Path) -> dict[str, Any]:
    """Accuracy, budget and fooling-rate figures; returns their paths relative to ``out_dir``."""
    from advaudio import figures

    fig_dir = out_dir / "figures"
    runs = analysis["runs"]
    rel = lambda p: str(Path(p).relative_to(out_dir))  # noqa: E731
    acc_series = {f"{run['label']} · {run['model_label']} · {run['view']}":
                  [(a["round"], a["value"]) for a in run["accuracy"]] for run in runs}
    out: dict[str, Any] = {
        "accuracy": rel(figures.accuracy_by_round(acc_series, fig_dir / "accuracy_by_round.png")),
        "budget": None,
        "curves": {},
    }
    budgets: dict[str, dict[str, list]] = {}
    norms: dict[str, str] = {}
    thresholds = set()
    for run in runs:
        for g in run["attacks"]:
            if g["split"] != "test":
                continue
            budgets.setdefault(g["label"], {})[run["label"]] = [
                (r["round"], r["budget"] if r["reached"] else None) for r in g["rounds"]]
            norms[g["label"]] = g["norm"]
            thresholds |= {r["threshold"] for r in g["rounds"] if _num(r["threshold"]) is not None}
    if budgets:
        out["budget"] = rel(figures.budget_by_round(
            budgets, fig_dir / "budget_by_round.png", norms=norms,
            threshold=next(iter(thresholds)) if len(thresholds) == 1 else None))
    for run in runs:
        tests = [g for g in run["attacks"] if g["split"] == "test"]
        if not tests:
            continue
        first = run["rounds"][0] if run["rounds"] else 0

        def name(r, first=first):
            return f"round {r}" + (" (before)" if r == first else " (after)")

        out["curves"][run["label"]] = rel(figures.fooling_rate_curves(
            {g["label"]: {name(r["round"]): r["evaluations"] for r in g["rounds"]} for g in tests},
            fig_dir / f"fooling_rate-{_safe(run['label'])}.png",
            norms={g["label"]: g["norm"] for g in tests},
            steps={g["label"]: g["kind"] == MINIMISATION for g in tests},
            thresholds={g["label"]: g["rounds"][0]["threshold"] for g in tests if g["rounds"]},
            budgets={g["label"]: {name(r["round"]): (r["budget"] if r["reached"] else None)
                                  for r in g["rounds"]} for g in tests},
            title=f"{run['label']} · {run['model_label']} · {run['view']}: fooling rate vs ε"))
    return out


def _build_blocks(data: ReportData, analysis: dict, figs: dict[str, Any], *, title: str, listen: bool,
                  warnings: list[str]) -> list[Block]:
    """The document, as blocks rendered to both Markdown and HTML."""
    from advaudio import __version__

    runs = analysis["runs"]
    n = len(data.runs)
    blocks: list[Block] = [("h1", title)]
    blocks.append(("p", f"Generated {_dt.datetime.now().astimezone().isoformat(timespec='seconds')} by advaudio "
                        f"{__version__} from {n} run director{'y' if n == 1 else 'ies'}: "
                        + ", ".join(str(r.path) for r in data.runs) + "."))
    blocks.append(("note", HOW_TO_READ))

    blocks.append(("h2", "Summary: clean test accuracy per round"))
    blocks.append(_acc_table(analysis))
    blocks.append(("img", figs["accuracy"], "clean test accuracy per round"))
    if not any(len(run["rounds"]) > 1 for run in runs):
        blocks.append(("p", "Only one round so far: no retrained model yet, so there is nothing to compare "
                            "before/after. Run the retrain stage and attack its checkpoint."))

    blocks.append(("h2", "Budget at the fooling-rate threshold"))
    if figs["budget"]:
        blocks.append(("img", figs["budget"], "budget at the threshold per round"))
    for run in runs:
        tests = [g for g in run["attacks"] if g["split"] == "test"]
        blocks.append(("h3", f"{run['label']} — {run['model_label']} · {run['view']}"))
        blocks.append(_budget_table(tests) if tests else ("p", "No attack results on the test fold."))

    blocks.append(("h2", "Fooling rate at a fixed budget"))
    blocks.append(("p", "ε is fixed at the first round's budget at the threshold; the later round's fooling rate "
                        "at that ε is read from its evaluations (see “How to read”: exact for minimisation "
                        "attacks, linear interpolation between bisection probes for fixed-budget attacks)."))
    tables = [(run, _fixed_table([g for g in run["attacks"] if g["split"] == "test"])) for run in runs]
    for run, t in tables:
        if t is not None:
            blocks.append(("h3", f"{run['label']} — {run['model_label']} · {run['view']}"))
            blocks.append(t)
    if all(t is None for _, t in tables):
        blocks.append(("p", "No later round attacked yet: nothing to compare."))

    blocks.append(("h2", "Fooling rate against ε"))
    if figs["curves"]:
        blocks.append(("p", "One panel per attack, one line per round; the dashed line is the threshold, dotted "
                            "lines the budgets. Minimisation attacks: empirical CDF of the per-clip minimal "
                            "norms; fixed-budget attacks: the bisection probes."))
        for label, f in figs["curves"].items():
            blocks.append(("img", f, f"fooling rate vs ε, {label}"))
    else:
        blocks.append(("p", "No attack results on the test fold."))

    blocks.append(("h2", "Adversarial examples (the paper's Fig. 1)"))
    examples = [(run, ex) for run in runs for ex in run["examples"]]
    for run, ex in examples:
        blocks.append(("h3", f"{run['label']} — round {ex['round']}"))
        blocks.append(("p", "Rows: test clips; columns: the clean model input and each attack's adversarial "
                            "input at its tuned budget (shared [0, 1] colour scale, low frequencies at the "
                            "bottom; “n.r.”: threshold not reached, the largest budget tried); below each, the "
                            "perturbation, each column on its own symmetric scale (±max written in the panel)."))
        blocks.append(("img", ex["figure"], f"clean vs adversarial, {run['label']} round {ex['round']}"))
    if not examples:
        blocks.append(("p", "No adversarial shard of a test-fold attack was found (or its store is not available)."))

    blocks.append(("h2", "Listening"))
    listen_rows = [
        [run["label"], ex["round"], f"{item['clip_id']} ({item['class']})", item["attack"],
         Link("clean", item["clean_wav"], audio=True),
         Link("clean, re-synthesised", item["clean_resynth_wav"], audio=True),
         Link("adversarial", item["adversarial_wav"], audio=True),
         fmt_num(item["snr_db_waveform"], 3), fmt_num(item["snr_db_spectrogram"], 3),
         fmt_num(item["clean_resynth_snr_db"], 3)]
        for run, ex in examples for item in ex["listening"]
    ]
    if listen_rows:
        blocks.append(("p", "STFT inputs turned back into audio: the view's [0, 1] scaling undone to dB, dB to "
                            "magnitude, the clean clip's phase, inverse STFT. Compare the clean re-synthesis "
                            "with the adversarial one: both went through the same lossy path (the view clips "
                            "values outside its percentile range — the dB floor is lost — and resizing blurs "
                            "bins), so they differ only by the perturbation. SNR = 10·log10(Σ clean² / "
                            "Σ (adv − clean)²): waveform (clean vs adversarial re-synthesis), model input (the "
                            "attacked [0, 1] image); the last column is the re-synthesis loss of the clean clip "
                            "itself. Clips the attack did not perturb (misclassified when clean) are left out."))
        blocks.append(("table", ["run", "round", "clip", "attack", "clean", "clean re-synth", "adversarial",
                                 "SNR waveform (dB)", "SNR model input (dB)", "clean re-synth SNR (dB)"],
                       listen_rows))
    else:
        views = sorted({ex["view"] for _, ex in examples} - {"stft"})
        why = ("disabled for this report" if not listen else
               f"view(s) {', '.join(views)} have no phase to invert" if views else "no test-fold shard found")
        blocks.append(("p", f"No audio ({why}): listening needs a run on the stft view with a test-fold shard."))

    train_groups = [(run, g) for run in runs for g in run["attacks"] if g["split"] != "test"]
    if train_groups:
        blocks.append(("h2", "Retraining data: attacks on the training folds"))
        rows = [[run["label"], g["label"], g["split"], r["round"], g["norm"], _budget_cell(r),
                 fmt_pct(r["fooling_rate"]), _counts(r), Path(r["shard"]).name if r["shard"] else "—"]
                for run, g in train_groups for r in g["rounds"]]
        blocks.append(("table", ["run", "attack", "split", "round", "norm", "budget at threshold", "fooling rate",
                                 "attacked / clips", "shard"], rows))

    blocks.append(("h2", "Sources"))
    blocks.append(("list", [f"{m.path} (round {m.round}, round from {m.round_from})"
                            for run in data.runs for m in sorted(run.metrics.values(), key=lambda m: m.round)]
                   + [str(p) for p in sorted({a.path for run in data.runs for a in run.attacks})]))
    if warnings:
        blocks.append(("h2", "Warnings"))
        blocks.append(("list", warnings))
    return blocks


def _remove_stale(directory: Path, pattern: str, keep: set[Path]) -> None:
    """Files of an earlier report in ``directory`` that this one did not write."""
    if directory.is_dir():
        for p in directory.glob(pattern):
            if p.resolve() not in keep:
                p.unlink()


def write_report(
    run_dirs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    listen: bool = True,
    max_clips: int = 3,
    title: str = "Adversarial training report",
) -> Path:
    """Write the report of ``run_dirs`` into ``out_dir``; returns ``out_dir/report.md``.

    Parameters
    ----------
    run_dirs : run directories (see the module docstring for what is found in them)
    out_dir : created; ``report.md``, ``report.html``, ``report.json``, ``report.csv``,
        ``figures/*.png`` and (stft views, ``listen``) ``audio/*.wav`` are (re)written;
        PNG/WAV files of an earlier report there that this one does not produce are removed
    listen : write WAV files of clean and adversarial clips for runs on the ``stft`` view
    max_clips : clips per example figure (and per listening table); 0 disables both
    title : the report's heading

    Raises
    ------
    ParameterError : a run directory does not exist, or none holds any result
    """
    from advaudio import __version__

    out_dir = Path(out_dir)
    data = collect_runs(run_dirs)
    warnings = list(data.warnings)
    analysis = analyse(data)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figs = _make_figures(analysis, out_dir)

    # examples and audio: the first and the last attacked round of each run
    runs_by_label = {r.label: r for r in data.runs}
    values = _Values()
    values.rows = analysis["values"]
    example_figs: list[str] = []
    audio_files: list[str] = []
    for run in analysis["runs"]:
        rd = runs_by_label[run["label"]]
        run["examples"] = []
        test_rounds = sorted({a.round for a in rd.attacks if a.split == "test"})
        for rnd in sorted({test_rounds[0], test_rounds[-1]}) if test_rounds else []:
            ex = _examples(rd, rnd, out_dir, max_clips=max_clips, listen=listen, warnings=warnings)
            if ex is None:
                continue
            run["examples"].append(ex)
            example_figs.append(ex["figure"])
            for item in ex["listening"]:
                for metric in ("snr_db_waveform", "snr_db_spectrogram", "clean_resynth_snr_db"):
                    values.add(run=rd, round=rnd, metric=metric, value=item[metric], source="derived",
                               split="test", attack=item["attack"], norm=item["norm"],
                               note=f"{item['clip_id']}: {item['adversarial_wav']}")
                audio_files += [item["clean_wav"], item["clean_resynth_wav"], item["adversarial_wav"]]
    fig_files = [figs["accuracy"]] + ([figs["budget"]] if figs["budget"] else []) \
        + list(figs["curves"].values()) + example_figs
    _remove_stale(out_dir / "figures", "*.png", {(out_dir / f).resolve() for f in fig_files})
    _remove_stale(out_dir / "audio", "*.wav", {(out_dir / f).resolve() for f in audio_files})

    blocks = _build_blocks(data, analysis, figs, title=title, listen=listen, warnings=warnings)
    md_path = out_dir / "report.md"
    md_path.write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks, title=title), encoding="utf-8")
    document = {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "generated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "advaudio_version": __version__,
        "run_dirs": [str(r.path.resolve()) for r in data.runs],
        "runs": analysis["runs"],
        "figures": fig_files,
        "audio": audio_files,
        "values": values.rows,
        "value_columns": list(VALUE_COLUMNS),
        "sources": [str(p) for p in data.sources],
        "warnings": warnings,
    }
    (out_dir / "report.json").write_text(json.dumps(jsonable(document), indent=1, allow_nan=False) + "\n",
                                         encoding="utf-8")
    with open(out_dir / "report.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(VALUE_COLUMNS))
        w.writeheader()
        for row in values.rows:
            w.writerow({k: ("" if row[k] is None else row[k]) for k in VALUE_COLUMNS})
    return md_path



def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - python -m advaudio.report
    import argparse

    p = argparse.ArgumentParser(description="Write the advaudio report of run directories.")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--no-listen", action="store_true")
    p.add_argument("--max-clips", type=int, default=3)
    a = p.parse_args(argv)
    print(write_report(a.run_dirs, a.out, listen=not a.no_listen, max_clips=a.max_clips))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
