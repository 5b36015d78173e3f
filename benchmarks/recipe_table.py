"""The cross-validation table of training recipes, from finished study cells (issue 23).

    python benchmarks/recipe_table.py benchmarks/studies/recipe-*.toml [--record NAME]

For every study file (one recipe each) and view: the test accuracy over the CV folds
(mean ± std, ddof=1, as `advaudio study report`), the accuracy on the training folds
(clean inputs, evaluation mode: every training clip, no augmentation, the final model),
their gap, the last epoch's accuracy on the (augmented) training batches, and the
training time per epoch (median over the epochs of every cell). Cells not yet done are
left out and counted. ``--record NAME`` keeps the table as
``benchmarks/results/NAME-DATE.json`` (``record.py``: commit, CPU, threads).

The clean training-fold accuracy is the run's own (``metrics.json``: ``test.train_accuracy``);
for runs made before it existed it is measured here from the checkpoint (a forward pass
over the training clips).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def cell_rows(study_file: str, *, train_eval: bool = True) -> tuple[dict, list[dict], int]:
    """The study's resolved [train] table, one row per finished cell, and the number not finished."""
    from advaudio.store.documents import read_metrics
    from advaudio.study.cellfile import read_cell_summary
    from advaudio.study.planning import plan_study
    from advaudio.study.spec import read_study
    from advaudio.training import TrainConfig, evaluate

    spec = read_study(study_file)
    plan = plan_study(spec)
    rows, missing = [], 0
    for status in plan.statuses:
        cell = status.cell
        summary = read_cell_summary(cell.directory(spec)) if status.status == "done" else None
        if summary is None:
            missing += 1
            continue
        metrics = read_metrics(Path(summary.run_dir) / "metrics.json")  # checks its seal, if it has one
        history = metrics["history"]
        row = {
            "cell": cell.cell_id, "view": cell.view, "width": cell.width, "input_size": cell.input_size,
            "test_fold": cell.test_fold, "test_accuracy": metrics["test_accuracy"],
            "last_epoch_batch_accuracy": history[-1]["train_accuracy"],
            "seconds_per_epoch": statistics.median(h["seconds"] for h in history),
            "epochs": len(history), "train_seconds": sum(h["seconds"] for h in history),
        }
        attacks = _attack_budgets(summary)
        if attacks:
            row["attacks"] = attacks
        if "train_accuracy" in metrics.get("test", {}):  # measured by the run itself
            row["train_accuracy"] = metrics["test"]["train_accuracy"]
            row["gap_pp"] = 100 * (row["train_accuracy"] - row["test_accuracy"])
        elif train_eval:
            checkpoint = Path(summary.run_dir) / "checkpoint.pt"
            folds = metrics["split"]["train_folds"]
            results = [evaluate(checkpoint, fold=f, device="cpu") for f in folds]
            n = sum(r["n"] for r in results)
            row["train_accuracy"] = sum(r["accuracy"] * r["n"] for r in results) / n
            row["gap_pp"] = 100 * (row["train_accuracy"] - row["test_accuracy"])
        rows.append(row)
    config = TrainConfig(store="-", **spec.train).to_dict()
    train = {k: config[k] for k in ("recipe", "epochs", "lr", "label_smoothing", "time_shift", "freq_masks",
                                     "freq_mask_width", "time_masks", "time_mask_width", "gain_db", "mixing",
                                     "mixup_alpha", "ema_decay")}
    return {"name": spec.name, "file": study_file, "train": train}, rows, missing


def _attack_budgets(summary) -> dict:
    """The clean model's attack budgets (round 0) at the cell's threshold, with the 95 % bootstrap interval
    over its attacked clips (:func:`advaudio.reporting.bootstrap.budget_interval`, the study report's)."""
    from advaudio.reporting.bootstrap import budget_interval

    first = summary.round(0)
    out = {}
    for name, a in (first.attacks if first is not None else {}).items():
        iv = budget_interval([a.minimal_norms], a.threshold)
        out[name] = {"norm": a.norm, "threshold": a.threshold, "budget": iv.budget, "reached": iv.reached,
                     "ci95": [iv.low, iv.high], "clips": iv.n, "results": a.results}
    return out


def robustness(studies: list[dict]) -> str:
    """Per attacked cell: the budgets at the threshold with their 95 % intervals."""
    lines = ["| recipe (study) | view | fold | attack | norm | budget at threshold [95 % CI] | clips |",
             "|---|---|---|---|---|---|---|"]
    for s in studies:
        for r in s["cells"]:
            for name, a in sorted(r.get("attacks", {}).items()):
                lo, hi = a["ci95"]
                lines.append(f"| {s['name']} | {r['view']} | {r['test_fold']} | {name} (≥ {a['threshold']:g}) "
                             f"| {a['norm']} | {a['budget']:.4g} [{lo:.4g}, {hi:.4g}]"
                             f"{'' if a['reached'] else ' (not reached)'} | {a['clips']} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def summarise(rows: list[dict]) -> dict:
    out = {"n": len(rows), "folds": sorted(r["test_fold"] for r in rows)}
    for key in ("test_accuracy", "train_accuracy", "gap_pp", "last_epoch_batch_accuracy"):
        values = [r[key] for r in rows if key in r]
        if values:
            out[key + "_mean"], out[key + "_std"] = _mean_std(values)
    out["seconds_per_epoch_median"] = statistics.median(r["seconds_per_epoch"] for r in rows)
    return out


def paired(studies: list[dict], baseline: str) -> str:
    """Per view, each study's test accuracy minus the baseline's on the same folds (mean ± std, ddof=1):
    the folds differ more from each other than the recipes do, so the paired difference is the sharper test."""
    base = next((s for s in studies if s["name"] == baseline), None)
    if base is None:
        raise SystemExit(f"--baseline {baseline}: no such study among the files")
    key = lambda r: (r["view"], r["width"], tuple(r["input_size"] or ()), r["test_fold"])  # noqa: E731
    ref = {key(r): r["test_accuracy"] for r in base["cells"]}
    lines = [f"| recipe (study) | view | minus {baseline}, same folds (pp) | folds |", "|---|---|---|---|"]
    for s in studies:
        if s is base:
            continue
        by_view: dict[str, list[float]] = {}
        for r in s["cells"]:
            if key(r) in ref:
                by_view.setdefault(r["view"], []).append(100 * (r["test_accuracy"] - ref[key(r)]))
        for view, diffs in sorted(by_view.items()):
            m, sd = _mean_std(diffs)
            s.setdefault("paired_pp", {})[view] = {"mean": m, "std": sd, "n": len(diffs), "baseline": baseline}
            lines.append(f"| {s['name']} | {view} | {m:+.1f} ± {sd:.1f} | {len(diffs)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="study files, one recipe each")
    parser.add_argument("--no-train-eval", action="store_true", help="skip the clean training-fold accuracy")
    parser.add_argument("--record", metavar="NAME", help="keep the table in benchmarks/results/NAME-DATE.json")
    parser.add_argument("--baseline", metavar="STUDY", help="also the per-fold differences to this study's cells "
                                                          "(its [study] name; same width, size, view and fold)")
    args = parser.parse_args(argv)
    from advaudio.threads import configure_threads

    configure_threads(1)
    doc = {"studies": []}
    lines = ["| recipe (study) | view | 5-fold test accuracy | training folds (clean) | gap | last-epoch batches | s / epoch |",
             "|---|---|---|---|---|---|---|"]
    for f in args.studies:
        info, rows, missing = cell_rows(f, train_eval=not args.no_train_eval)
        views = {}
        for r in rows:
            views.setdefault(r["view"], []).append(r)
        entry = {**info, "missing_cells": missing, "views": {}, "cells": rows}
        for view, vrows in sorted(views.items()):
            s = summarise(vrows)
            entry["views"][view] = s

            def pm(key, scale=100.0, unit=" %", s=s):
                m = s.get(key + "_mean")
                return "–" if m is None else f"{scale * m:.1f}{unit} ± {scale * s[key + '_std']:.1f}"

            gap = "–" if "gap_pp_mean" not in s else f"{s['gap_pp_mean']:+.1f} pp"
            lines.append(f"| {info['name']} | {view} | {pm('test_accuracy')} (n={s['n']}) | {pm('train_accuracy')} "
                         f"| {gap} | {pm('last_epoch_batch_accuracy')} | {s['seconds_per_epoch_median']:.1f} |")
        if missing:
            lines.append(f"| {info['name']} | ({missing} cells not done) | | | | | |")
        doc["studies"].append(entry)
    if args.baseline:
        lines += ["", paired(doc["studies"], args.baseline)]
    budgets = robustness(doc["studies"])
    if budgets:
        lines += ["", budgets]
    table = "\n".join(lines)
    print(table)
    doc["table_markdown"] = table
    if args.record:
        from record import record

        record(args.record, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
