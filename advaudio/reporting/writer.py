"""The report stage's entry point: :func:`write_report` writes every report file of run directories."""

from __future__ import annotations

import csv
import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from advaudio.errors import DamagedFileError, StoreError
from advaudio.reporting.analysis import MINIMISATION, VALUE_COLUMNS, ValueRows, analyse, finite_number
from advaudio.reporting.discovery import collect_runs
from advaudio.reporting.document import build_blocks
from advaudio.reporting.examples import round_examples, safe_name
from advaudio.reporting.render import render_html, render_markdown
from advaudio.reporting.robustness import autoattack_blocks, autoattack_entries
from advaudio.store import Store, jsonable

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "write_report"]

REPORT_FORMAT = "advaudio-report"
REPORT_VERSION = 1


def _make_figures(analysis: dict, out_dir: Path) -> dict[str, Any]:
    """Accuracy, budget and fooling-rate figures; returns their paths relative to ``out_dir``."""
    from advaudio.reporting import figures

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
            thresholds |= {r["threshold"] for r in g["rounds"] if finite_number(r["threshold"]) is not None}
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
            fig_dir / f"fooling_rate-{safe_name(run['label'])}.png",
            norms={g["label"]: g["norm"] for g in tests},
            steps={g["label"]: g["kind"] == MINIMISATION for g in tests},
            thresholds={g["label"]: g["rounds"][0]["threshold"] for g in tests if g["rounds"]},
            budgets={g["label"]: {name(r["round"]): (r["budget"] if r["reached"] else None)
                                  for r in g["rounds"]} for g in tests},
            title=f"{run['label']} · {run['model_label']} · {run['view']}: fooling rate vs ε"))
    return out


def _remove_stale(directory: Path, pattern: str, keep: set[Path]) -> None:
    """Files of an earlier report in ``directory`` that this one did not write."""
    if directory.is_dir():
        for p in directory.glob(pattern):
            if p.resolve() not in keep:
                p.unlink()


def check_stores(data) -> None:
    """Open (and so check) every feature store the runs' files name that is still on disk.

    A store's ``store.h5`` decides which clips are test clips, and the report reads
    clips from it: a damaged one is a DamagedFileError, never a report. A store that
    is gone or incomplete only costs the example figures (a warning there).
    """
    paths = set()
    for run in data.runs:
        paths |= {a.document.store for a in run.attacks}
        paths |= {(m.data.get("store") or {}).get("path") for m in run.metrics.values()
                  if isinstance(m.data.get("store"), dict)}
    for path in sorted(str(p) for p in paths if isinstance(p, str) and p):
        if not Path(path).is_dir():
            continue
        try:
            Store(path)
        except DamagedFileError:
            raise
        except StoreError:
            continue


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
    run_dirs : run directories (see :func:`collect_runs` for what is found in them)
    out_dir : created; ``report.md``, ``report.html``, ``report.json``, ``report.csv``,
        ``figures/*.png`` and (stft views, ``listen``) ``audio/*.wav`` are (re)written;
        PNG/WAV files of an earlier report there that this one does not produce are removed
    listen : write WAV files of clean and adversarial clips for runs on the ``stft`` view
    max_clips : clips per example figure (and per listening table); 0 disables both
    title : the report's heading

    Raises
    ------
    ParameterError : a run directory does not exist, or none holds any result
    DamagedFileError : a feature store the results name is damaged (:func:`check_stores`)
    """
    from advaudio import __version__

    out_dir = Path(out_dir)
    data = collect_runs(run_dirs)
    check_stores(data)
    warnings = list(data.warnings)
    analysis = analyse(data)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    figs = _make_figures(analysis, out_dir)

    # examples and audio: the first and the last attacked round of each run
    runs_by_label = {r.label: r for r in data.runs}
    values = ValueRows()
    values.rows = analysis["values"]
    example_figs: list[str] = []
    audio_files: list[str] = []
    for run in analysis["runs"]:
        rd = runs_by_label[run["label"]]
        run["examples"] = []
        test_rounds = sorted({a.round for a in rd.attacks if a.split == "test"})
        for rnd in sorted({test_rounds[0], test_rounds[-1]}) if test_rounds else []:
            ex = round_examples(rd, rnd, out_dir, max_clips=max_clips, listen=listen, warnings=warnings)
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

    robustness = autoattack_blocks(data, warnings)  # its flags join the warnings first
    blocks = build_blocks(data, analysis, figs, title=title, listen=listen, warnings=warnings)
    at = next((i for i, b in enumerate(blocks) if b[:2] == ("h2", "Fooling rate against ε")), len(blocks))
    blocks[at:at] = robustness
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
        "autoattack": autoattack_entries(data, []),
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
