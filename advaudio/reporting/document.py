"""The report document: its sections as render blocks, built from the analysis, figures and examples."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

from advaudio.reporting.analysis import finite_number
from advaudio.reporting.discovery import ReportData
from advaudio.reporting.render import Block, Link, fmt_num, fmt_pct, fmt_pp, fmt_ratio

__all__ = ["HOW_TO_READ", "build_blocks"]


HOW_TO_READ = "\n".join([
    "How to read this report.",
    "• Round 0 is the model trained on clean data; round k ≥ 1 was retrained with adversarial examples "
    "(attacks on the training folds of the previous round). “Before” is a run's first round, “after” each "
    "later one.",
    "• Clean test accuracy: the checkpoint's held-out test fold, unperturbed; the change is in percentage "
    "points (pp). It is the price of adversarial training.",
    "• Budget at the threshold: the smallest perturbation size ε — in the attack's norm, measured on the "
    "model's input in [0, 1] — at which the attack fools at least the threshold fraction of the attacked test "
    "clips (the clips classified correctly when clean). Fixed-budget attacks (FGSM, BIM, PGD): the quantile "
    "of every clip's minimal ε (per-clip search; or bisection over ε, if the run asked for it); minimisation attacks (DeepFool, CW, EAD, Boundary, HopSkipJump): the quantile of the per-clip minimal "
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
    tried = f" (largest tried/found: {fmt_num(r['budget'])})" if finite_number(r["budget"]) is not None else ""
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


def _checks_table(runs: list[dict]) -> Block | None:
    headers = ["run", "round", "split", "check", "attacks", "status", "what was measured"]
    rows = [[run["label"], ev["round"], ev["split"], c.get("check"), ", ".join(c.get("attacks") or []),
             "PASS" if c.get("status") == "pass" else "WARN", c.get("text", "")]
            for run in runs for ev in run.get("evaluation", []) for c in ev["checks"]]
    return ("table", headers, rows) if rows else None


def _robust_table(runs: list[dict]) -> Block | None:
    headers = ["run", "round", "split", "norm", "attacks (worst per clip)", "ε → robust accuracy"]
    rows = [[run["label"], ev["round"], ev["split"], norm, ", ".join(ra.get("attacks") or []),
             "; ".join(f"{fmt_num(e)}: {fmt_pct(acc)}" for e, acc in zip(ra.get("epsilons") or [],
                                                                         ra.get("accuracy") or []))]
            for run in runs for ev in run.get("evaluation", []) for norm, ra in ev["robust_accuracy"].items()]
    return ("table", headers, rows) if rows else None


def build_blocks(data: ReportData, analysis: dict, figs: dict[str, Any], *, title: str, listen: bool,
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

    checks = _checks_table(runs)
    if checks is not None:
        blocks.append(("h2", "Evaluation checks"))
        blocks.append(("p", "Carlini et al. 2019: success near 100 % at the largest ε tried; iterative attacks "
                            "at least as strong as one FGSM step at the same ε; twice the steps gain < 2 pp at "
                            "the tuned budget; decision-based attacks not better than white-box ones of the same "
                            "norm. A WARN is a symptom of gradient masking or of an under-run attack."))
        blocks.append(checks)
    robust = _robust_table(runs)
    if robust is not None:
        blocks.append(("h2", "Robust accuracy at fixed ε"))
        blocks.append(("p", "The fraction of all clips (misclassified-when-clean clips count as not robust) that "
                            "no attack of the norm fools within ε: each clip faces the worst attack run; compare "
                            "the rounds (before / after retraining)."))
        blocks.append(robust)

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
