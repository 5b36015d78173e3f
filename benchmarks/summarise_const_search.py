"""Summarise measured CW constant-search runs against the long reference (one JSON kept in results/).

    python benchmarks/summarise_const_search.py --reference DIR/ref-cw-r18s-p0.json ... \\
        --arm default=DIR/e8.json --arm 5x1000-no-pilot=DIR/e4.json ... [--name cw-economy-r18s]

Each input is a per-clip JSON of one ``const_search`` run (``rows``, ``norm`` (+inf where the
clip's target was not reached), ``steps``, ``gradient_queries``, ``wall_s``, ``threads``,
``settings``), as written by the measuring script kept beside them.  The reference may come in
parts (disjoint clip slices of one setting, run side by side); they are joined by row.

Per arm: the 90 % budget, gradient steps per clip, wall time (as measured: one torch thread, on a
machine shared with other jobs; the load is not controlled), the budget / reference budget with a
paired percentile-bootstrap 95 % interval (:func:`advaudio.reporting.bootstrap.ratio_interval`,
2000 resamples), and per clip how often its minimal norm is above the reference's by more than 5 %.
Every input document is copied whole into the record, so the figures can be recomputed from it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record import record  # noqa: E402

from advaudio.attacks.tuning import quantile_budget  # noqa: E402
from advaudio.reporting.bootstrap import ratio_interval  # noqa: E402


def load(path: str) -> dict:
    d = json.loads(Path(path).read_text())
    d["norm"] = [float(v) for v in d["norm"]]  # "Infinity" / inf both read as +inf
    return d


def join(parts: list[dict]) -> dict:
    rows = np.concatenate([np.asarray(p["rows"], np.int64) for p in parts])
    if len(set(rows.tolist())) != len(rows):
        raise SystemExit("reference parts overlap")
    settings = {json.dumps(p["settings"], sort_keys=True) for p in parts}
    if len(settings) != 1:
        raise SystemExit("reference parts differ in their settings")
    return {"rows": rows, "norm": np.concatenate([np.asarray(p["norm"], np.float64) for p in parts]),
            "steps_per_clip": sum(p["gradient_queries"] for p in parts) / len(rows),
            "wall_s": sum(p["wall_s"] for p in parts), "settings": parts[0]["settings"],
            "threads": parts[0]["threads"]}


def summarise(arm: dict, ref: dict) -> dict:
    rows = np.asarray(arm["rows"], np.int64)
    norm = np.asarray(arm["norm"], np.float64)
    ri = ratio_interval([((ref["rows"], ref["norm"]), (rows, norm))], 0.9)
    by_row = dict(zip(ref["rows"].tolist(), ref["norm"].tolist()))
    common = [i for i, r in enumerate(rows.tolist()) if r in by_row]
    mine = norm[common]
    theirs = np.asarray([by_row[r] for r in rows[common].tolist()])
    both = np.isfinite(mine) & np.isfinite(theirs)
    rel = mine[both] / theirs[both]
    budget, reached = quantile_budget(norm, 0.9)
    return {"settings": arm["settings"], "clips": len(rows), "budget": budget, "reached": reached,
            "steps_per_clip": arm["gradient_queries"] / len(rows), "wall_s": arm["wall_s"],
            "threads": arm["threads"],
            "vs_reference": {"ratio": ri.ratio, "low": ri.low, "high": ri.high, "n": ri.n},
            "per_clip": {"paired": int(both.sum()), "above_by_5pct": int((rel > 1.05).sum()),
                         "median_ratio": float(np.median(rel)), "max_ratio": float(rel.max()),
                         "missed_where_reference_fooled": int((~np.isfinite(mine) & np.isfinite(theirs)).sum())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", action="append", required=True, metavar="FILE")
    ap.add_argument("--arm", action="append", required=True, metavar="LABEL=FILE")
    ap.add_argument("--name", default="cw-economy-r18s")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    parts = [load(p) for p in args.reference]
    ref = join(parts)
    ref_budget, ref_reached = quantile_budget(ref["norm"], 0.9)
    arms, sources = {}, {"reference": parts}
    print(f"reference: {len(ref['rows'])} clips, budget {ref_budget:.4g}, {ref['steps_per_clip']:.0f} steps/clip, "
          f"{ref['wall_s']:.0f} s ({ref['threads']} thread(s) per part)")
    for spec in args.arm:
        label, path = spec.split("=", 1)
        doc = load(path)
        sources[label] = doc
        arms[label] = s = summarise(doc, ref)
        v, pc = s["vs_reference"], s["per_clip"]
        print(f"{label:24s} budget {s['budget']:.4g} ×{v['ratio']:.3f} [{v['low']:.3f}, {v['high']:.3f}]  "
              f"{s['steps_per_clip']:7.1f} steps/clip  {s['wall_s']:7.1f} s  clips >5 % above ref "
              f"{pc['above_by_5pct']}/{pc['paired']}")
    record(args.name, {"note": args.note, "reference": {
        "budget": ref_budget, "reached": ref_reached, "clips": len(ref["rows"]), "settings": ref["settings"],
        "steps_per_clip": ref["steps_per_clip"], "wall_s": ref["wall_s"], "threads": ref["threads"],
        "parts": len(parts)}, "arms": arms, "sources": sources})


if __name__ == "__main__":
    main()
