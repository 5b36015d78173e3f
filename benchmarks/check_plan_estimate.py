"""Check ``study plan``'s estimate of attacked cells against their measured times (one JSON kept in results/).

    python benchmarks/check_plan_estimate.py STUDY_DIR [--name plan-estimate-esc10]

Reads STUDY_DIR/cells/*/cell.json (read only).  The estimate is ``study plan``'s "from done cells"
one: seconds per unit of work of the finished training-only cells of the same model, width, input
size, epochs and training recipe, times the attacked cell's work (training sample passes plus the
attack work of :func:`advaudio.study.costs.attack_work` and the evaluation checks'), with the
fractions of :data:`advaudio.study.costs.DEFAULT_UNITS`.  Per attacked cell: estimated and measured
total and attack seconds, their ratio, the attack estimate again from the seconds per sample pass of
the cell's own training (the machine's load when it ran: training-only cells run at another load are
off by that load's factor), and the gradient steps per clip the attack results file says were used
(and the other forwards: queries of decision-based attacks) against those the cost model assumes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from advaudio.attacks import AttackConfig  # noqa: E402
from advaudio.study.costs import DEFAULT_UNITS, _check_work, attack_work  # noqa: E402


def recipe(cfg: dict) -> tuple:
    t = cfg["train"]
    return (t.get("model"), t.get("width"), tuple(t.get("input_size") or ()), t.get("view"), t.get("epochs"),
            t.get("mixing") or "none", t.get("recipe"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("study_dir")
    ap.add_argument("--name", default="plan-estimate-esc10")
    ap.add_argument("--train-clips", type=int, default=320, help="training-fold clips of a cell (ESC-10: 320)")
    ap.add_argument("--test-clips", type=int, default=80, help="test-fold clips of a cell (ESC-10: 80)")
    args = ap.parse_args()
    cells = [json.loads(p.read_text()) | {"dir": str(p.parent)} for p in sorted(Path(args.study_dir).glob("cells/*/cell.json"))]
    rate: dict[tuple, list[float]] = {}
    for c in cells:
        if not c["wall_time_s"].get("attack"):
            rate.setdefault(recipe(c["config"]), []).append(
                c["wall_time_s"]["total"] / (args.train_clips * c["config"]["train"]["epochs"]))
    out = []
    u = DEFAULT_UNITS
    for c in cells:
        if not c["wall_time_s"].get("attack"):
            continue
        cfg, key = c["config"], recipe(c["config"])
        if key not in rate:
            continue
        att = cfg["attack"]
        train = args.train_clips * cfg["train"]["epochs"]
        grad = fwd = 0.0
        per_attack = {}
        for name in att["attacks"]:
            params = AttackConfig.create(name, **(att.get("attack_params") or {}).get(name, {})).resolved().params
            g, f = attack_work(name, params, precision=att.get("precision", "clip"))
            cg, cf = _check_work(name, params, args.test_clips, att.get("precision", "clip"),
                                 att.get("threshold", 0.9)) if att.get(
                "checks", True) else (0.0, 0.0)
            grad += args.test_clips * g + cg
            fwd += args.test_clips * f + cf
            per_attack[name] = {"model_gradient_per_clip": g, "model_forward_per_clip": f}
        results = Path(c["dir"]) / "run" / "attack-round00-test.json"
        if results.exists():
            doc = json.loads(results.read_text())
            for a in doc.get("attacks", {}).values() if isinstance(doc.get("attacks"), dict) else doc.get("attacks", []):
                name = a.get("attack")
                if name in per_attack and a.get("n_attacked"):
                    n, grads = a["n_attacked"], a.get("gradient_queries", np.nan)
                    per_attack[name]["measured_gradient_per_clip"] = grads / n
                    # the other queries: forwards only (decision-based attacks, EAD's checks of its iterates)
                    per_attack[name]["measured_forward_per_clip"] = (a.get("queries", np.nan) - grads) / n
        s = float(np.mean(rate[key]))
        attack_units = grad * u.gradient + fwd * u.forward
        est_total, est_attack = (train + attack_units) * s, attack_units * s
        m = c["wall_time_s"]
        row = {"cell": c["cell_id"], "recipe": list(key), "train_only_cells": len(rate[key]), "seconds_per_sample": s,
               "estimated_total_s": est_total, "measured_total_s": m["total"], "total_ratio": est_total / m["total"],
               "estimated_attack_s": est_attack, "measured_attack_s": m["attack"],
               "attack_ratio": est_attack / m["attack"], "attack_over_train_estimated": attack_units / train,
               "attack_over_train_measured": m["attack"] / m["train"], "attacks": per_attack}
        # the same estimate with the seconds per sample pass of the cell's own training: the machine's load
        # when it ran, not when the training-only cells did
        own = m["train"] / train
        row |= {"own_seconds_per_sample": own, "estimated_attack_own_s": attack_units * own,
                "attack_ratio_own_training": attack_units * own / m["attack"]}
        out.append(row)
        print(f"{c['cell_id']}: total est {est_total:.0f} s / measured {m['total']:.0f} s (×{row['total_ratio']:.2f}); "
              f"attack est {est_attack:.0f} s / measured {m['attack']:.0f} s (×{row['attack_ratio']:.2f}; "
              f"from its own training ×{row['attack_ratio_own_training']:.2f}); {per_attack}")
    record(args.name, {"study_dir": args.study_dir, "units": {"gradient": u.gradient, "forward": u.forward},
                       "cells": out})


if __name__ == "__main__":
    main()
