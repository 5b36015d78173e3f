"""The study report's entry point: :func:`write_study_report` writes its tables, figures and data files.

``out_dir`` receives ``study.md`` and ``study.html`` (the same blocks, see
:mod:`advaudio.reporting.render`), ``study.csv`` and ``study.json`` (every number,
tidy: :data:`~advaudio.study.tables.STUDY_COLUMNS`, with the ``cell.json``
and attack results files it came from) and ``figures/*.png`` (heat maps per
dataset, fooling-rate curves per attacked cell). Its command line is
``advaudio study report``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from advaudio.plugins import format_records
from advaudio.reporting.bootstrap import BudgetInterval, RatioInterval
from advaudio.reporting.examples import safe_name
from advaudio.reporting.render import Block, Link, fmt_num, fmt_pct, render_html, render_markdown
from advaudio.reporting.writer import _remove_stale
from advaudio.store import jsonable
from advaudio.study.tables import (
    STUDY_COLUMNS,
    Accuracy,
    StudyRow,
    StudyTables,
    cell_source,
    study_tables,
    tidy_values,
)

if TYPE_CHECKING:
    from advaudio.study.cellfile import CellSummary

__all__ = ["STUDY_REPORT_FORMAT", "STUDY_REPORT_VERSION", "fmt_accuracy", "fmt_budget", "fmt_ratio_interval",
           "write_study_report"]

STUDY_REPORT_FORMAT = "advaudio-study-report"
STUDY_REPORT_VERSION = 1
NOT_REACHED = "not reached"

HOW_TO_READ = "\n".join([
    "How to read these tables.",
    "• A row pools the cells of one model × view: every cross-validation test fold and seed. Clean accuracy "
    "before is round 0 (trained on clean data) of every cell, after is the last round of the attacked cells "
    "(retrained with adversarial examples); mean ± std over the cells (n cells). The change is the mean, over "
    "the attacked cells, of after − before of the same cell, in percentage points.",
    "• Budget: the smallest perturbation ε (in the attack's norm, on the model input in [0, 1]) at which the "
    "attack fools the threshold fraction of the attacked test clips (those classified correctly), over the "
    "pooled clips of the attacked cells. [low, high]: percentile-bootstrap interval, clips resampled within "
    "each cell; “not reached” where the threshold lies above every ε the attack needed (the clips it never "
    "fooled count as not fooled).",
    "• after/before: the ratio of the budgets, its interval paired over the test clips (a clip resampled "
    "counts in both rounds where it was attacked). “> ×r”: after never reached the threshold, r uses its "
    "largest finite minimal norm, so the true ratio is larger.",
])


# --------------------------------------------------------------------------- #
# formatting
# --------------------------------------------------------------------------- #
def fmt_accuracy(acc: Accuracy | None) -> str:
    """``85.0 % ± 2.1 (n=5)``: mean and std in %, over ``n`` cells; ``—`` when missing."""
    if acc is None or acc.n == 0:
        return "—"
    std = "" if math.isnan(acc.std) else f" ± {100.0 * acc.std:.1f}"
    return f"{fmt_pct(acc.mean)}{std} (n={acc.n})"


def fmt_change(acc: Accuracy | None) -> str:
    if acc is None or acc.n == 0:
        return "—"
    std = "" if math.isnan(acc.std) else f" ± {100.0 * acc.std:.1f}"
    return f"{100.0 * acc.mean:+.1f}{std} pp (n={acc.n})"


def _end(v: float) -> str:
    return NOT_REACHED if v == math.inf else fmt_num(v)


def fmt_budget(iv: BudgetInterval | None) -> str:
    """``0.0123 [0.0101, 0.015]``; ``not reached (> 0.53) [0.41, not reached]`` when the threshold is not."""
    if iv is None:
        return "—"
    point = fmt_num(iv.budget) if iv.reached else f"{NOT_REACHED} (> {fmt_num(iv.budget)})"
    return f"{point} [{_end(iv.low)}, {_end(iv.high)}]"


def fmt_ratio_interval(r: RatioInterval | None) -> str:
    """``×1.8 [×1.2, ×2.5]``; ``> ×2.3`` when after was not reached; ``—`` when before was not."""
    if r is None:
        return "—"
    end = lambda v: "∞" if v == math.inf else ("—" if math.isnan(v) else f"×{v:.3g}")  # noqa: E731
    if math.isnan(r.ratio):
        return f"— (before {NOT_REACHED})"
    if math.isinf(r.ratio):
        point = f"> ×{r.lower_bound:.3g}" if math.isfinite(r.lower_bound) else "∞"
        point += f" (after {NOT_REACHED})"
    else:
        point = f"×{r.ratio:.3g}"
    return f"{point} [{end(r.low)}, {end(r.high)}]"


def _rel(path: str, out_dir: Path) -> str:
    """``path`` relative to the report (links keep working when the study directory moves)."""
    if not path or not Path(path).exists():
        return path
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:  # another drive (Windows)
        return path


def _link(path: str, out_dir: Path, text: str) -> Link | str:
    rel = _rel(path, out_dir)
    return Link(text, rel) if rel != path or Path(path).exists() else text


def _setting(row: StudyRow, which: str) -> str:
    v = getattr(row, which)
    return "—" if v is None else str(v)


# --------------------------------------------------------------------------- #
# figures
# --------------------------------------------------------------------------- #
def _grid(rows: list[StudyRow]) -> tuple[list[str], list[str], dict[tuple[str, str], StudyRow]]:
    """Heat-map rows (model, with width/input size when they vary) and columns (views)."""
    sizes = {(r.width, r.input_size) for r in rows}

    def name(r: StudyRow) -> str:
        if len(sizes) == 1:
            return str(r.model)
        return f"{r.model} (w {r.width}, in {r.input_size})"

    row_names = list(dict.fromkeys(name(r) for r in rows))
    views = list(dict.fromkeys(str(r.view) for r in rows))
    return row_names, views, {(name(r), str(r.view)): r for r in rows}


def _heat(rows: list[StudyRow], value, text, path: Path, **kw) -> Path:
    from advaudio.study.figures import heat_map

    names, views, cell = _grid(rows)
    v = np.full((len(names), len(views)), np.nan)
    ann = [["—"] * len(views) for _ in names]
    for i, n in enumerate(names):
        for j, w in enumerate(views):
            r = cell.get((n, w))
            if r is not None:
                v[i, j] = value(r)
                ann[i][j] = text(r)
    return heat_map(v, names, views, path, annotations=ann, **kw)


def _ratio_value(r: StudyRow, attack: str) -> float:
    a = r.attacks.get(attack)
    return math.nan if a is None or a.ratio is None else a.ratio.ratio


def _ratio_text(r: StudyRow, attack: str) -> str:
    a = r.attacks.get(attack)
    if a is None or a.ratio is None:
        return "—"
    q = a.ratio
    if math.isnan(q.ratio):
        return f"before\n{NOT_REACHED}"
    if math.isinf(q.ratio):
        return (f"> ×{q.lower_bound:.3g}" if math.isfinite(q.lower_bound) else "∞") + f"\nafter {NOT_REACHED}"
    hi = "∞" if q.high == math.inf else f"{q.high:.3g}"
    return f"×{q.ratio:.3g}\n[{q.low:.3g}, {hi}]"


def _make_figures(tables: StudyTables, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Per dataset its heat maps, and the fooling-rate curves of its attacked cells (paths relative to out_dir)."""
    from advaudio.study.figures import fooling_rate_ecdfs

    fig_dir = out_dir / "figures"
    rel = lambda p: str(Path(p).relative_to(out_dir))  # noqa: E731
    out: dict[str, dict[str, Any]] = {}
    for dataset, rows in tables.datasets.items():
        d = safe_name(dataset)
        figs: dict[str, Any] = {"heat": {}, "curves": {}}
        figs["heat"]["accuracy"] = rel(_heat(
            rows, lambda r: r.before.mean,
            lambda r: "—" if r.before.n == 0 else fmt_pct(r.before.mean) + (
                "" if math.isnan(r.before.std) else f"\n± {100 * r.before.std:.1f}"),
            fig_dir / f"heat-{d}-accuracy.png", title=f"{dataset}: clean accuracy before (mean over cells)",
            colorbar_label="clean test accuracy", cmap="viridis", vmin=0.0, vmax=1.0))
        if any(r.change is not None for r in rows):
            figs["heat"]["change"] = rel(_heat(
                rows, lambda r: math.nan if r.change is None else 100.0 * r.change.mean,
                lambda r: "—" if r.change is None else f"{100.0 * r.change.mean:+.1f} pp",
                fig_dir / f"heat-{d}-change.png", title=f"{dataset}: clean accuracy change after retraining",
                colorbar_label="after − before (pp)", cmap="RdBu", center=0.0))
        attacks = list(dict.fromkeys(n for r in rows for n in r.attacks))
        for attack in attacks:
            norm = next(r.attacks[attack].norm for r in rows if attack in r.attacks)
            figs["heat"][f"ratio:{attack}"] = rel(_heat(
                rows, lambda r, a=attack: _ratio_value(r, a), lambda r, a=attack: _ratio_text(r, a),
                fig_dir / f"heat-{d}-ratio-{safe_name(attack)}.png",
                title=f"{dataset}: {attack} ({norm}) budget after / before", colorbar_label="budget ratio",
                cmap="RdBu", center=1.0, log=True))
        for row in rows:
            for s in row.attacked_cells:
                last = s.last_round
                curves: dict[str, dict[str, Any]] = {}
                budgets: dict[str, dict[str, float | None]] = {}
                norms, thresholds, dashed = {}, {}, []
                for r in (s.round(0), last) if last.round > 0 else (s.round(0),):
                    label = f"before (round {r.round})" if r.round == 0 else f"after (round {r.round})"
                    if r.round > 0:
                        dashed.append(label)
                    for name, o in r.attacks.items():
                        curves.setdefault(name, {})[label] = o.minimal_norms
                        budgets.setdefault(name, {})[label] = o.budget if o.reached else None
                        norms[name], thresholds[name] = o.norm, o.threshold
                if not curves:
                    continue
                path = fooling_rate_ecdfs(curves, fig_dir / f"fooling_rate-{safe_name(s.cell_id)}.png",
                                          dashed=dashed, norms=norms, thresholds=thresholds, budgets=budgets,
                                          title=f"{row.label} · seed {s.key['seed']} · fold "
                                                f"{s.key['test_fold']}: fooling rate vs ε")
                figs["curves"][s.cell_id] = rel(path)
        out[dataset] = figs
    return out


# --------------------------------------------------------------------------- #
# the document
# --------------------------------------------------------------------------- #
def _values_text(vals: Iterable[Any]) -> str:
    vals = sorted({str(v) for v in vals}, key=lambda v: (len(v), v))
    return ", ".join(vals) if vals else "—"


def _fmt_s(v: Any) -> str:
    return "—" if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) else f"{v:.1f}"


def _protocol_blocks(tables: StudyTables, protocol: Mapping[str, Any] | None, missing: Sequence[str],
                     out_dir: Path, defended: Sequence[CellSummary] = ()) -> list[Block]:
    blocks: list[Block] = [("h2", "Protocol")]
    items = []
    for key, value in (protocol or {}).items():
        if key == "plugins":  # name (group: distribution version), not the records' JSON

            items.append(f"plugins: {format_records(value or [])}")
            continue
        items.append(f"{key}: {value if isinstance(value, str) else json.dumps(jsonable(value), sort_keys=True, default=str)}")
    for dataset, rows in tables.datasets.items():
        cells = [s for r in rows for s in r.cells]
        attacked = [s for s in cells if s.key.get("attacked")]
        per_attack: dict[str, list[int]] = {}
        for s in attacked:
            for name, o in s.round(0).attacks.items():
                per_attack.setdefault(name, []).append(len(o.minimal_norms))
        clips = "; ".join(f"{n}: {sum(v)} clips over {len(v)} cells ({min(v)}–{max(v)} per cell)"
                          for n, v in per_attack.items()) or "none"
        rounds = _values_text(s.last_round.round for s in attacked)
        items += [
            f"{dataset}: {len(rows)} rows, {len(cells)} cells ({len(attacked)} attacked)",
            f"{dataset}: test folds for clean accuracy: {_values_text(s.key['test_fold'] for s in cells)}; "
            f"folds attacked: {_values_text(s.key['test_fold'] for s in attacked)}; "
            f"seeds: {_values_text(s.key['seed'] for s in cells)}; rounds after clean training: {rounds}",
            f"{dataset}: attacked test clips (round 0): {clips}",
        ]
    items.append(f"bootstrap: percentile intervals at {100 * tables.confidence:g} %, {tables.resamples} "
                 f"resamples, seed {tables.seed}; clips resampled within each cell and pooled over a row's cells; "
                 f"the ratio paired over the test clips attacked in either round")
    timed = list(tables.summaries) + list(defended)  # the on-the-fly defenses' cells cost time too
    total = sum(t for t in (s.wall_time_s.get("total") for s in timed)
                if isinstance(t, (int, float)) and math.isfinite(t))
    items.append(f"measured wall time: {total:.1f} s over {len(timed)} cells")
    blocks.append(("list", items))
    blocks.append(("h3", "Wall time per cell (measured, s)"))
    time_rows = []
    for s in timed:
        w = s.wall_time_s or {}
        row = [_link(cell_source(s), out_dir, s.cell_id), s.key.get("dataset"), s.key.get("model"),
               s.key.get("view"), s.key.get("seed"), s.key.get("test_fold"),
               "yes" if s.key.get("attacked") else "no", _fmt_s(w.get("train")),
               _fmt_s(w.get("rounds")), _fmt_s(w.get("total"))]
        time_rows.append(row[:6] + [str(s.key.get("defense") or "none")] + row[6:] if defended else row)
    header = ["cell", "dataset", "model", "view", "seed", "test fold", "attacked", "train", "rounds", "total"]
    blocks.append(("table", header[:6] + ["defense"] + header[6:] if defended else header, time_rows))
    warnings = [f"cell not finished: {m}" for m in missing] + list(tables.warnings)
    blocks.append(("h3", f"Warnings ({len(warnings)})"))
    blocks.append(("list", warnings) if warnings else ("p", "None: every evaluation check passed, no cell missing."))
    return blocks


def _dataset_blocks(dataset: str, rows: list[StudyRow], figs: dict[str, Any], out_dir: Path) -> list[Block]:
    blocks: list[Block] = [("h2", f"Dataset {dataset}"), ("h3", "Clean accuracy")]
    blocks.append(("table", ["model", "view", "width", "input size", "before", "after", "change"],
                   [[r.model, r.view, _setting(r, "width"), _setting(r, "input_size"), fmt_accuracy(r.before),
                     fmt_accuracy(r.after), fmt_change(r.change)] for r in rows]))
    budget_rows = []
    for r in rows:
        for name, a in r.attacks.items():
            checks = "all passed" if a.all_passed else f"{len(a.failed_checks)} of {a.checks} warn"
            clips = f"{a.before.n if a.before else 0} / {a.after.n if a.after else 0}"
            budget_rows.append([r.model, r.view, f"{name} ({a.norm})", f"{a.threshold:g}", clips,
                                fmt_budget(a.before), fmt_budget(a.after), fmt_ratio_interval(a.ratio), checks])
    if budget_rows:
        blocks.append(("h3", "Budget at the fooling-rate threshold (test fold)"))
        blocks.append(("table", ["model", "view", "attack (norm)", "threshold", "clips before / after",
                                 "budget before [CI]", "budget after [CI]", "after / before [CI]", "checks"],
                       budget_rows))
    blocks.append(("h3", "Heat maps"))
    for key, src in figs["heat"].items():
        blocks.append(("img", src, f"{dataset} heat map: {key}"))
    if figs["curves"]:
        blocks.append(("h3", "Fooling rate against ε per attacked cell (before solid, after dashed)"))
        for cell_id, src in figs["curves"].items():
            blocks.append(("img", src, f"fooling rate vs ε, cell {cell_id}"))
    blocks.append(("h3", "Sources"))
    src_rows = []
    for r in rows:
        results = sorted({p for a in r.attacks.values() for p in a.sources if p not in r.sources})
        src_rows.append([f"{r.model} · {r.view}", ", ".join(_rel(p, out_dir) for p in r.sources),
                         str(len(results))])
    blocks.append(("table", ["row", "cell.json", "attack results files"], src_rows))
    return blocks


def _tables_json(tables: StudyTables) -> list[dict[str, Any]]:
    out = []
    for r in tables.rows:
        acc = {k: (None if a is None else {"mean": a.mean, "std": a.std, "n": a.n, "values": list(a.values),
                                           "sources": list(a.sources)})
               for k, a in (("before", r.before), ("after", r.after), ("change", r.change))}
        attacks = {}
        for name, a in r.attacks.items():
            attacks[name] = {"norm": a.norm, "kind": a.kind, "threshold": a.threshold, "cells": a.cells,
                             "before": asdict(a.before) if a.before else None,
                             "after": asdict(a.after) if a.after else None,
                             "ratio": asdict(a.ratio) if a.ratio else None, "checks": a.checks,
                             "failed_checks": list(a.failed_checks), "sources": list(a.sources)}
        out.append({"dataset": r.dataset, "model": r.model, "view": r.view, "width": r.width,
                    "input_size": r.input_size, "cells": [s.cell_id for s in r.cells], "sources": list(r.sources),
                    "accuracy": acc, "attacks": attacks, "wall_time_s": r.wall_time_s})
    return out


def _defense_blocks(summaries, out_dir: Path, **settings) -> dict[str, Any]:
    """The defense table and the clean-vs-robust figure, when the study has a defense axis."""
    from advaudio.study.defense_table import (
        defense_rows,
        defense_rows_json,
        defense_table_text,
        has_defense_axis,
        tradeoff_figure,
    )

    if not has_defense_axis(summaries):
        return {"blocks": [], "figures": [], "json": []}
    rows = defense_rows(summaries, **settings)
    header, text = defense_table_text(rows)
    blocks: list[Block] = [("h2", "Defenses"), ("note", "Per defense: clean accuracy (mean ± std over the CV folds), "
                            "AutoAttack (standard) robust accuracy on the attacked folds with its Clopper–Pearson "
                            "95 % interval, the budget at the fooling-rate threshold with its bootstrap interval "
                            "and its ratio to none's on the same clips, and the training time per cell."),
                           ("table", header, text)]
    flags = [f"{r.defense} ({a.norm} ε={a.eps:.4g}): AutoAttack: {w}" for r in rows for a in r.robust
             for w in a.warnings]
    if flags:
        blocks += [("h3", "AutoAttack's flags"), ("list", flags)]
    figures = []
    if any(r.robust for r in rows):
        path = out_dir / "figures" / "defenses-tradeoff.png"
        tradeoff_figure(rows, path)
        figures.append(str(path.relative_to(out_dir)))
        blocks.append(("img", figures[-1], "clean vs AutoAttack robust accuracy per defense"))
    return {"blocks": blocks, "figures": figures, "json": defense_rows_json(rows)}


def _fmt_snr(iv) -> str:
    """``41.2 dB [38.9, 43.0]``: the SNR at the threshold; higher is a quieter perturbation."""
    if iv is None:
        return "—"
    end = lambda v: NOT_REACHED if v == -math.inf else ("—" if math.isnan(v) else f"{v:.1f}")  # noqa: E731
    point = f"{iv.snr_db:.1f} dB" if iv.reached else f"{NOT_REACHED} (< {end(iv.snr_db)} dB)"
    return f"{point} [{end(iv.low)}, {end(iv.high)}]"


def _fmt_db_change(change) -> str:
    if change is None:
        return "—"
    end = lambda v: "—" if math.isnan(v) else ("−∞" if v == -math.inf else f"{v:+.1f}")  # noqa: E731
    return f"{end(change[0])} dB [{end(change[1])}, {end(change[2])}]"


def _domain_blocks(summaries, **settings) -> dict[str, Any]:
    """The threat-model table, when the study has ``[attacks] domains`` with the waveform domain."""
    from advaudio.study.domain_table import domain_rows, domain_rows_json, has_domain_axis

    if not has_domain_axis(summaries):
        return {"blocks": [], "json": []}
    rows = domain_rows(summaries, **settings)
    header = ["dataset", "model", "view", "attack", "feature budget before → after", "feature after/before",
              "waveform budget before → after", "waveform after/before", "SNR at threshold before → after",
              "SNR change", "clean accuracy after (feature / waveform rounds)"]
    text = []
    for r in rows:
        def budgets(b):
            if b is None:
                return "—", "—"
            return (f"{b.norm} {fmt_budget(b.before)} → {fmt_budget(b.after)}",
                    fmt_ratio_interval(b.ratio))
        fb, fr = budgets(r.feature)
        wb, wr = budgets(r.waveform)
        acc = " / ".join(fmt_accuracy(r.accuracy_after.get(d)) for d in ("feature", "waveform"))
        text.append([r.dataset, r.model, r.view, r.attack, fb, fr, wb, wr,
                     f"{_fmt_snr(r.snr_before)} → {_fmt_snr(r.snr_after)}", _fmt_db_change(r.snr_change_db), acc])
    blocks: list[Block] = [
        ("h2", "Threat models: feature vs waveform domain"),
        ("note", "The same round-0 model attacked in two threat models. Feature domain (the paper's): the attack "
                 "perturbs the model input, a [0, 1] image; its budget has no loudness. Waveform domain: the attack "
                 "perturbs the clip's samples in [-1, 1] through the view's differentiable front end; its budget "
                 "is in waveform units, and the SNR at the threshold (dB, signal to perturbation: the largest SNR "
                 "at which the threshold's share of the clips is fooled; higher is quieter) answers whether the "
                 "attack would be heard. After: the last round, retrained on that domain's own adversarial shards. "
                 "Intervals: stratified percentile bootstrap over clips; the SNR change's is paired."),
        ("table", header, text)]
    return {"blocks": blocks, "json": domain_rows_json(rows)}


def write_study_report(
    summaries: Iterable[CellSummary],
    out_dir: str | os.PathLike,
    *,
    title: str = "Study report",
    protocol: Mapping[str, Any] | None = None,
    missing: Sequence[str] = (),
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Path:
    """Write the study report of finished cells into ``out_dir``; returns ``out_dir/study.md``.

    Parameters
    ----------
    summaries : the finished cells' :class:`CellSummary` objects (``read_cell_summary``)
    out_dir : created; ``study.md``, ``study.html``, ``study.csv``, ``study.json`` and
        ``figures/*.png`` are (re)written; PNGs of an earlier report there that this one
        does not produce are removed
    title : the report's heading
    protocol : the study's settings to show first (key → value, e.g. the study file,
        attacks and their parameters); stored in ``study.json`` as given
    missing : planned cells with no summary (not run, running or failed), one line each,
        listed as warnings
    resamples, confidence, seed : the bootstrap's settings (:func:`study_tables`)

    Raises
    ------
    ParameterError : see :func:`study_tables`
    """
    from advaudio import __version__

    summaries = list(summaries)
    tables = study_tables(summaries, resamples=resamples, confidence=confidence, seed=seed)
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figs = _make_figures(tables, out_dir)
    fig_files = [p for f in figs.values() for p in list(f["heat"].values()) + list(f["curves"].values())]
    _remove_stale(out_dir / "figures", "*.png", {(out_dir / f).resolve() for f in fig_files})

    generated = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    kept = {id(s) for s in tables.summaries}
    defended = [s for s in summaries if id(s) not in kept and str(s.key.get("defense") or "none") != "none"]
    waveform = [s for s in summaries if id(s) not in kept and str(s.key.get("defense") or "none") == "none"]
    also = "".join(f" ({len(v)} of them {what}: see {where})" for v, what, where in (
        (defended, "with an on-the-fly defense", "Defenses"),
        (waveform, "attacked in the waveform domain", "Threat models")) if v)
    blocks: list[Block] = [("h1", title),
                           ("p", f"Generated {generated} by advaudio {__version__} from "
                                 f"{len(tables.summaries) + len(defended) + len(waveform)} finished cells{also}."),
                           ("note", HOW_TO_READ)]
    blocks += _protocol_blocks(tables, protocol, missing, out_dir, defended)
    for dataset, rows in tables.datasets.items():
        blocks += _dataset_blocks(dataset, rows, figs[dataset], out_dir)
    defenses = _defense_blocks(summaries, out_dir, resamples=resamples, confidence=confidence, seed=seed)
    blocks += defenses["blocks"]
    fig_files += defenses["figures"]
    domains = _domain_blocks(summaries, resamples=resamples, confidence=confidence, seed=seed)
    blocks += domains["blocks"]
    blocks.append(("p", "Every number above is in study.csv and study.json, with the cell.json (and attack "
                        "results) files it was computed from."))
    md_path = out_dir / "study.md"
    md_path.write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "study.html").write_text(render_html(blocks, title=title), encoding="utf-8")
    values = tidy_values(tables)
    document = {
        "format": STUDY_REPORT_FORMAT,
        "format_version": STUDY_REPORT_VERSION,
        "generated": generated,
        "advaudio_version": __version__,
        "title": title,
        "protocol": dict(protocol or {}),
        "bootstrap": {"resamples": tables.resamples, "confidence": tables.confidence, "seed": tables.seed},
        "rows": _tables_json(tables),
        "defenses": defenses["json"],
        **({"domains": domains["json"]} if domains["json"] else {}),
        "values": values,
        "value_columns": list(STUDY_COLUMNS),
        "figures": fig_files,
        "sources": [cell_source(s) for s in tables.summaries],
        "missing": list(missing),
        "warnings": [f"cell not finished: {m}" for m in missing] + list(tables.warnings),
    }
    (out_dir / "study.json").write_text(json.dumps(jsonable(document), indent=1, allow_nan=False, default=str) + "\n",
                                        encoding="utf-8")
    with open(out_dir / "study.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(STUDY_COLUMNS))
        w.writeheader()
        for row in values:
            w.writerow({k: ";".join(row[k]) if k == "sources" else ("" if row[k] is None else row[k])
                        for k in STUDY_COLUMNS})
    return md_path
