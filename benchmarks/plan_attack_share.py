"""An attacked cell's attack work against its training work, as ``study plan`` counts it (one JSON in results/).

    python benchmarks/plan_attack_share.py STUDY.toml [--name plan-attack-share-esc50]

No probe: the fractions of :data:`advaudio.study.costs.DEFAULT_UNITS`.  Per attack: gradient steps
and forwards per attacked clip (:func:`advaudio.study.costs.attack_work`, the measured costs at the
defaults scaled by the study's parameters) and the work of its evaluation checks per run; per
attacked cell: the training sample passes, attacked clips and attack work / training work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from advaudio.study.costs import DEFAULT_UNITS, _check_work, attack_work, work  # noqa: E402
from advaudio.study.planning import plan_study  # noqa: E402
from advaudio.study.spec import read_study  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study")
    ap.add_argument("--name", default="plan-attack-share-esc50")
    args = ap.parse_args()
    spec = read_study(args.study)
    p = plan_study(spec)
    u = DEFAULT_UNITS
    precision = spec.attack.search_precision()
    attacks = {}
    for name in spec.attack.attacks:
        params = spec.attack.attack_config(name).resolved().params
        g, f = attack_work(name, params, precision=precision)
        attacks[name] = {"gradient_per_clip": g, "forward_per_clip": f, "units_per_clip": g * u.gradient + f * u.forward}
    cells = []
    for cell in p.cells:
        if not cell.attacked:
            continue
        w = work(spec, p.stores[cell.dataset], cell)
        cells.append({"cell": cell.cell_id, "train_samples": w.train_samples, "attack_clips": w.attack_clips,
                      "attack_units": w.attack_units(u), "attack_over_train": w.attack_units(u) / w.train_samples})
    n = cells[0]["attack_clips"] // max(1, len(attacks)) if cells else 0
    for name, a in attacks.items():
        params = spec.attack.attack_config(name).resolved().params
        cg, cf = _check_work(name, params, n, precision, spec.attack.threshold)
        a["check_units_per_cell"] = cg * u.gradient + cf * u.forward
        print(f"{name:10s} {a['gradient_per_clip']:8.1f} grad/clip {a['forward_per_clip']:8.1f} fwd/clip")
    shares = sorted({round(c["attack_over_train"], 3) for c in cells})
    print(f"{len(cells)} attacked cells; attack work / training work: {shares}")
    record(args.name, {"study": str(args.study), "units": {"gradient": u.gradient, "forward": u.forward},
                       "precision": precision, "rounds": spec.rounds, "attacks": attacks, "cells": cells})


if __name__ == "__main__":
    main()
