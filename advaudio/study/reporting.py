"""``advaudio study report``: the finished cells of a study → the paper's tables (:mod:`advaudio.reporting.study`)."""

from __future__ import annotations

import os
from pathlib import Path

from advaudio import layout
from advaudio.errors import AdvaudioError
from advaudio.plugins import merge_records
from advaudio.study.spec import read_study


def recorded_plugins(summaries) -> list[dict[str, str]]:
    """The plugins the done cells used, as their files recorded them when they ran: each round's
    ``metrics.json`` (model, defense) and attack results (store, attacks)."""
    import json


    files = []
    for s in summaries:
        for r in s.rounds:
            files.append(r.metrics)
            files += [a.results for a in r.attacks.values() if a.results]
    lists = []
    for path in dict.fromkeys(files):
        try:
            lists.append(json.loads(Path(path).read_text()).get("plugins"))
        except (OSError, ValueError, AttributeError):  # a file the report cannot read adds no plugin
            continue
    return merge_records(*lists)


def write_report(study_file: str | os.PathLike, *, out_dir: str | os.PathLike | None = None,
                 resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Path:
    """Write the study's report from its done cells; returns the path of ``study.md``.

    Cells not done are listed as missing in the report's protocol section; a study
    with no done cell is an error.
    """
    from advaudio.study.planning import plan_study
    from advaudio.study.report_writer import write_study_report

    spec = read_study(study_file)
    plan = plan_study(spec)
    summaries = [s.summary for s in plan.statuses if s.summary is not None]
    if not summaries:
        raise AdvaudioError(f"no cell of {study_file} is done yet (`advaudio study status {study_file}`)")
    protocol = {
        "study": spec.name,
        "study_file": str(spec.path),
        "datasets": {name: {"clips": sp.clips, "folds": sp.folds,
                            "test_folds": spec.protocol.test_folds(sp.folds),
                            "attacked_folds": spec.protocol.attacked_folds(sp.folds), "store": str(sp.store_dir)}
                     for name, sp in plan.stores.items()},
        "seeds": list(spec.grid.seeds),
        "attacks": list(spec.attack.attacks),
        "threshold": spec.attack.threshold,
        "test_clips": spec.attack.limit,
        "train_clips": spec.train_limit,
        "rounds": spec.rounds,
        "retrain": {"mix": spec.retrain.mix, "mode": spec.retrain.mode, "epochs": spec.retrain.epochs},
        "cells": len(plan.cells),
        "plugins": recorded_plugins(summaries),
    }
    missing = [f"{s.cell.cell_id} ({s.status}{': ' + s.reason if s.reason else ''})"
               for s in plan.statuses if s.summary is None]
    out = Path(out_dir) if out_dir is not None else layout.study_report_dir(spec.directory)
    return write_study_report(summaries, out, title=f"Study {spec.name}", protocol=protocol,
                              missing=missing, resamples=resamples, confidence=confidence, seed=seed)
