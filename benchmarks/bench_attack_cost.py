"""What each attack costs per clip, before and after the per-clip economy, and what its budget loses.

    python benchmarks/bench_attack_cost.py --checkpoint RUN/checkpoint.pt [--split test] [--limit 40]
        [--attacks cw,ead,fmn,pgd,boundary,hopskipjump] [--arms before,after] [--before-clips 8]
        [--reference cw=ref-cw.json ...] [--name esc10-r18] [--threads 2] [-p cw.steps=200 ...]

Arms, run one after the other per attack (interleaved: the machine's speed drifts):

* ``after`` — the attack at advaudio's defaults, through :func:`advaudio.attacks.tune_budget`
  as the attack stage runs it (fixed-budget attacks: the per-clip search, ``precision="quantile"``);
* ``before`` — what the code ran before the per-clip economy: Foolbox's ``L2CarliniWagnerAttack`` /
  ``EADAttack`` with 9 × 1000 steps (advaudio's ``initial_const`` 1e-2, Foolbox's batch-level
  ``abort_early``, one retry of the failures as before), Boundary / HopSkipJump without a query
  budget (5000 steps; 40 iterations of up to 1000 gradient-estimation samples); attacks this issue
  did not change (pgd, fmn, deepfool, …) have no ``before`` arm.  ``--before-clips K`` runs it on
  K evenly spaced clips only and scales the wall time by clips/K (on a CPU the time is proportional
  to the clips; marked ``extrapolated``);
* ``long`` — the long reference: cw/ead with 9 × 1000 steps and no early abort at all
  (``abort_early=False, pilot=0``), Boundary/HopSkipJump with ``--long-queries`` per clip.

``--reference NAME=FILE`` reads a long reference's per-clip minimal norms (this script's JSON, or
any JSON with ``rows`` and ``norm``) and prints each arm's budget / the reference's with a paired
percentile-bootstrap 95 % interval (:func:`advaudio.reporting.bootstrap.ratio_interval`, 2000
resamples over the clips).  Counts (gradient steps, plain forwards, decision queries per clip)
are the primary figures; wall times are from this run, on this machine.

Writes ``benchmarks/results/NAME-DATE.json``: the commit, the CPU model, torch's thread count, the
load average before and after, and per attack and arm the parameters, budget, fooling rate,
counts, wall time and per-clip norms (so a later run can use it as a reference).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_budget_search import clips  # noqa: E402  (a checkpoint's test clips, as the attack stage picks them)

from advaudio.attacks import AttackConfig, choose_targets, tune_budget  # noqa: E402
from advaudio.attacks.tuning import quantile_budget  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: What the code ran before the per-clip economy (Foolbox's research defaults, advaudio's constant).
BEFORE = {"cw": {"steps": 1000, "binary_search_steps": 9}, "ead": {"steps": 1000, "binary_search_steps": 9},
          "boundary": {"steps": 5000}, "hopskipjump": {"steps": 40, "max_gradient_eval_steps": 1000}}
#: The long references: no early exit of any kind.
LONG = {"cw": {"steps": 1000, "binary_search_steps": 9, "abort_early": False, "pilot": 0},
        "ead": {"steps": 1000, "binary_search_steps": 9, "abort_early": False, "pilot": 0}}


def foolbox_const_search(name: str, model, x, y, targets, params: dict, batch_size: int) -> dict:
    """The old cw/ead: Foolbox's attack through a counting model, failures retried once (×10^bss
    constant, twice the steps) as advaudio did; returns the per-clip norms and counts."""
    from advaudio.attacks._foolbox import foolbox
    from advaudio.attacks._model import BOUNDS, CountingModel, attack_mode
    from advaudio.attacks.results import perturbation_norms

    fb = foolbox()
    counter = CountingModel(model)
    norm_key = "l2" if name == "cw" else "l1"
    steps, bss, const = params["steps"], params["binary_search_steps"], 1e-2

    def attack(steps: int, const: float):
        if name == "cw":
            return fb.attacks.L2CarliniWagnerAttack(binary_search_steps=bss, steps=steps, stepsize=1e-2,
                                                    initial_const=const, abort_early=True)
        return fb.attacks.EADAttack(binary_search_steps=bss, steps=steps, initial_stepsize=1e-2,
                                    initial_const=const, regularization=1e-2, abort_early=True)

    with attack_mode(model):
        counter.eval()
        fmodel = fb.PyTorchModel(counter, bounds=BOUNDS, device=x.device)
        adv = x.clone()
        for s in range(0, len(x), batch_size):
            sl = slice(s, s + batch_size)
            raw, _, _ = attack(steps, const)(fmodel, x[sl], fb.criteria.TargetedMisclassification(targets[sl]),
                                             epsilons=None)
            adv[sl] = raw
        with torch.no_grad():
            ok = model(adv.clamp(*BOUNDS)).argmax(1) == targets
        miss = (~ok).nonzero().flatten()
        if len(miss):  # one retry, as ConstSearchAttack did
            raw, _, _ = attack(2 * steps, const * 10.0**bss)(
                fmodel, x[miss], fb.criteria.TargetedMisclassification(targets[miss]), epsilons=None)
            adv[miss] = raw
            with torch.no_grad():
                ok[miss] = model(raw.clamp(*BOUNDS)).argmax(1) == targets[miss]
    norms = perturbation_norms(x.cpu().numpy(), adv.clamp(*BOUNDS).cpu().numpy())[norm_key]
    return {"norm": np.where(ok.cpu().numpy(), norms, np.inf), "gradient_queries": counter.gradient_queries,
            "queries": counter.queries}


def run_arm(name: str, arm: str, model, x, y, targets, rows, params: dict, *, batch_size: int,
            long_queries: int, precision: str = "quantile") -> dict:
    t0 = time.perf_counter()
    values = dict(params)
    if arm == "before":
        values.update(BEFORE[name])
        if name in ("boundary", "hopskipjump"):
            values["max_queries"] = 10**9  # no budget: Foolbox's steps decide
    elif arm == "long":
        values.update(LONG.get(name, {}))
        if name in ("boundary", "hopskipjump"):
            values.update(max_queries=long_queries, steps=10**6)
    cfg = AttackConfig.create(name, seed=0, **values)
    if arm == "before" and name in ("cw", "ead"):
        out = foolbox_const_search(name, model, x, y, targets, values, batch_size)
        norms = out["norm"]
        n = len(x)
        record = {"budget": quantile_budget(norms, 0.9)[0], "reached": bool(quantile_budget(norms, 0.9)[1]),
                  "fooling_rate": None, "success_rate": float(np.isfinite(norms).mean()),
                  "gradient_steps": out["gradient_queries"] / n,
                  "forwards": (out["queries"] - out["gradient_queries"]) / n, "queries_per_clip": None,
                  "norm": norms}
    else:
        t = tune_budget(model, x, y, config=cfg, fooling_rate=0.9, targets=targets, batch_size=batch_size,
                        sample_ids=rows, precision=precision)
        r = t.result
        n = max(1, t.n_attacked)
        qnote = next((nt.counts for nt in t.notes if nt.code == "query-budget"), {})
        record = {"budget": t.budget, "reached": t.reached, "fooling_rate": t.fooling_rate,
                  "success_rate": t.success_rate, "gradient_steps": t.gradient_queries / n,
                  "forwards": (t.queries - t.gradient_queries) / n,
                  "queries_per_clip": qnote.get("queries_per_clip"),
                  "norm": np.where(r.attacked, r.budget_norms(), np.nan),
                  "notes": [nt.to_json() for nt in t.notes]}
    record["wall_s"] = time.perf_counter() - t0
    record["params"] = cfg.resolved().params.to_dict()
    return record


def ratio_ci(ref: dict, rows: np.ndarray, norms: np.ndarray) -> dict:
    from advaudio.reporting.bootstrap import ratio_interval

    ref_rows = np.asarray(ref["rows"], np.int64)
    ref_norm = np.asarray(ref["norm"], np.float64)
    keep = np.isin(rows, ref_rows) & ~np.isnan(norms)
    ri = ratio_interval([((ref_rows, ref_norm), (rows[keep], norms[keep]))], 0.9)
    return {"ratio": ri.ratio, "low": ri.low, "high": ri.high, "n": ri.n,
            "reference_budget": quantile_budget(ref_norm, 0.9)[0]}


def jsonable(v):
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return [jsonable(x) for x in v.tolist()]
    if isinstance(v, (float, np.floating)):
        v = float(v)
        return v if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")
    if isinstance(v, np.integer):
        return int(v)
    return v


def read_norms(path: str) -> dict:
    d = json.loads(Path(path).read_text())
    if "rows" in d and "norm" in d:
        return {"rows": d["rows"], "norm": [float(v) for v in d["norm"]]}
    for a in d.get("attacks", {}).values():  # this script's JSON: the first long arm
        if "long" in a:
            return {"rows": d["rows"], "norm": [float(v) for v in a["long"]["norm"]]}
    raise SystemExit(f"{path}: no per-clip norms")


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "", None
    return {"commit": commit, "dirty": dirty, "cpu": cpu, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--attacks", default="cw,ead,fmn,pgd,boundary,hopskipjump")
    ap.add_argument("--arms", default="before,after")
    ap.add_argument("--before-clips", type=int, default=None, help="run 'before' on this many clips only")
    ap.add_argument("--long-queries", type=int, default=20000)
    ap.add_argument("--reference", action="append", default=[], metavar="ATTACK=FILE")
    ap.add_argument("--name", default="attack-cost")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="quantile", help="fixed-budget attacks' per-clip search: quantile "
                    "(the attack stage's default) or clip (a study's)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="ATTACK.KEY=VALUE")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params: dict[str, dict] = {}
    for p in args.param:
        key, value = p.split("=", 1)
        name, field = key.split(".")
        params.setdefault(name, {})[field] = json.loads(value) if value[:1] in "0123456789-[{tfn" else value
    refs = {k: read_norms(v) for k, v in (r.split("=", 1) for r in args.reference)}
    ckpt, x, y, rows = clips(args.checkpoint, split=args.split, limit=args.limit, device="cpu")
    model = ckpt.model.eval()
    targets = choose_targets(model, x, y, rule="random", num_classes=len(ckpt.classes), seed=0, ids=rows)
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).numpy()
    info = machine()
    doc = {"benchmark": "bench_attack_cost", "date": datetime.datetime.now().isoformat(timespec="seconds"),
           **info, "checkpoint": str(args.checkpoint.resolve()), "model": ckpt.model.config,
           "view": ckpt.view.name, "split": args.split, "clips": len(rows), "attacked": int(correct.sum()),
           "rows": rows.tolist(), "precision": args.precision, "load_before": os.getloadavg(), "attacks": {}}
    print(f"{ckpt.model.config.get('name')} width {ckpt.model.config.get('width')} on {tuple(x.shape[1:])}, "
          f"{len(rows)} {args.split} clips ({int(correct.sum())} attacked), torch threads {info['threads']}, "
          f"{info['cpu']}, commit {info['commit'][:10]}{' (dirty)' if info['dirty'] else ''}")
    head = (f"{'attack':<12}{'arm':<8}{'budget':>10}{'fooled':>8}{'grad/clip':>11}{'fwd/clip':>10}"
            f"{'queries/clip':>14}{'wall s':>9}  vs reference [95 % CI]")
    print(head + "\n" + "-" * len(head))
    for name in args.attacks.split(","):
        out = doc["attacks"].setdefault(name, {})
        for arm in args.arms.split(","):
            if arm == "before" and name not in BEFORE:
                continue
            if arm == "long" and name not in LONG and name not in ("boundary", "hopskipjump"):
                continue
            sel = np.arange(len(rows))
            if arm == "before" and args.before_clips and args.before_clips < len(rows):
                sel = np.unique(np.linspace(0, len(rows) - 1, args.before_clips).round().astype(int))
            rec = run_arm(name, arm, model, x[sel], y[sel], targets[sel], rows[sel], params.get(name, {}),
                          batch_size=args.batch_size, long_queries=args.long_queries, precision=args.precision)
            rec["clips"] = len(sel)
            rec["rows"] = rows[sel].tolist()
            rec["extrapolated"] = len(sel) < len(rows)
            if rec["extrapolated"]:
                rec["wall_s_measured"] = rec["wall_s"]
                rec["wall_s"] = rec["wall_s"] * len(rows) / len(sel)
            if name in refs and len(sel) == len(rows):
                rec["vs_reference"] = ratio_ci(refs[name], rows[sel], np.asarray(rec["norm"], np.float64))
            out[arm] = rec
            vs = rec.get("vs_reference")
            vs_text = (f"×{vs['ratio']:.3f} [{vs['low']:.3f}, {vs['high']:.3f}] of {vs['reference_budget']:.4g}"
                       if vs else "")
            q = rec.get("queries_per_clip")
            fooled = rec.get("fooling_rate")
            print(f"{name:<12}{arm:<8}{rec['budget']:>10.4g}{(fooled if fooled is not None else math.nan):>8.3f}"
                  f"{rec['gradient_steps']:>11.1f}{rec['forwards']:>10.1f}"
                  f"{(q if q is not None else math.nan):>14.1f}{rec['wall_s']:>9.1f}"
                  f"{'*' if rec['extrapolated'] else ' '} {vs_text}", flush=True)
    doc["load_after"] = os.getloadavg()
    if any(rec.get("extrapolated") for arms in doc["attacks"].values() for rec in arms.values()):
        print("* wall time measured on fewer clips and scaled to all of them")
    path = ROOT / "benchmarks" / "results" / f"{args.name}-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(doc), indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
