"""The report's AutoAttack section: robust accuracy at fixed ε per norm, from ``autoattack.json``.

``advaudio evaluate --autoattack NORM:EPS,…`` keeps its results beside the checkpoint
(:func:`advaudio.training.evaluation.write_autoattack`); a study cell keeps them as
``autoattack-round<K>.json`` in its run directory. This module finds them for every round
of every run of the report and lays them out: robust accuracy per ε and per norm with its
Clopper–Pearson 95 % interval, and AutoAttack's own flags (a randomised or dynamic model,
zero gradients, Square beating the white-box attacks) as evaluation warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advaudio.reporting.discovery import ReportData

__all__ = ["autoattack_blocks", "autoattack_entries"]

NAMES = ("autoattack.json",)


def _files(metrics_path: Path, round_: int) -> list[Path]:
    here = metrics_path.parent
    found = [here / n for n in NAMES if (here / n).is_file()]
    study = here / f"autoattack-round{round_}.json"
    if study.is_file():
        found.append(study)
    return found


def autoattack_entries(data: ReportData, warnings: list[str]) -> list[dict[str, Any]]:
    """One entry per (run, round, fold, norm, ε) found; unreadable files are skipped with a warning."""
    from advaudio.store import read_sealed_json, sha256_file

    out = []
    for run in data.runs:
        for k, m in sorted(run.metrics.items()):
            for path in _files(m.path, k):
                try:
                    doc = read_sealed_json(path, what="AutoAttack results")
                except Exception as exc:  # damaged or unreadable: named, skipped
                    warnings.append(f"{path}: skipped ({exc})")
                    continue
                checkpoint = Path(str(doc.get("checkpoint") or ""))
                if checkpoint.is_file() and doc.get("checkpoint_sha256") not in (None, sha256_file(checkpoint)):
                    warnings.append(f"{path}: made for another checkpoint than {checkpoint}; skipped")
                    continue
                for a in doc.get("autoattack") or []:
                    out.append({"run": run.label, "round": k, "fold": a.get("fold", doc.get("fold")), **a,
                                "source": str(path)})
    return out


def autoattack_blocks(data: ReportData, warnings: list[str]) -> list[tuple]:
    """The section's blocks (none when no run has AutoAttack results); its flags join ``warnings``."""
    entries = autoattack_entries(data, warnings)
    if not entries:
        return []
    rows = []
    for e in sorted(entries, key=lambda e: (e["run"], e["round"], e["norm"], e["eps"])):
        rows.append([e["run"], str(e["round"]), str(e.get("fold", "")), e["norm"], f"{e['eps']:.4g}",
                     f"{100 * e['robust_accuracy']:.1f} %", f"[{100 * e['ci_low']:.1f}, {100 * e['ci_high']:.1f}] %",
                     f"{e.get('n_robust', '?')} / {e['n']}", f"{e.get('n_correct', '?')}",
                     "; ".join(f"{k} {100 * v:.1f} %" for k, v in (e.get("per_attack") or {}).items()),
                     str(len(e.get("warnings") or [])) + " flag(s)" if e.get("warnings") else "none"])
        warnings.extend(f"{e['run']} round {e['round']} ({e['norm']} ε={e['eps']:.4g}): AutoAttack: {w}"
                        for w in e.get("warnings") or [])
    return [("h2", "Robust accuracy under AutoAttack"),
            ("p", "AutoAttack (Croce & Hein 2020), standard version (APGD-CE, APGD-T, FAB-T, Square), on every "
                  "correctly classified clip of the fold; robust accuracy is over all clips of the fold "
                  "(misclassified-when-clean clips count as not robust), with its Clopper–Pearson 95 % interval. "
                  "AutoAttack's flags are listed under Warnings."),
            ("table", ["run", "round", "fold", "norm", "ε", "robust accuracy", "95 % CI", "robust / clips",
                       "attacked", "after each attack", "flags"], rows)]
