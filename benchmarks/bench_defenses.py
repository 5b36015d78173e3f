"""What the defenses cost: seconds per training epoch of each defense relative to clean
training (side by side in one run, interleaved, best of the repeats), and AutoAttack's cost
per clip relative to one PGD-40 run on the same clips.

    python benchmarks/bench_defenses.py [--store DIR] [--repeats 3] [--clips 16] [--eps 8/255,1/1000] [--checkpoint CK]

Without ``--store`` a synthetic store is made (4 classes × ``--clips-per-class`` clips). The training arms run
one epoch each through ``advaudio.training.train`` (the streaming trainer: store reads,
time shifts, the defense's loss) with one thread and no loader workers; the defaults of each
defense (pgd-at 7 steps, trades 10 steps, fast-at one step). The attack arms use the clean
model of the first repeat: AutoAttack (standard, L∞) on ``--clips`` test clips against
untargeted PGD (40 steps of ε/10 from a random start) on the same clips, at each ε of ``--eps``.
AutoAttack's cost depends on how many clips survive each of its stages (a clip broken by
APGD-CE is not attacked again), so the default measures two ε: 8/255, where a clean model
falls to APGD-CE alone, and 1/1000, where clips survive and every stage runs (the worst case). Writes its JSON with
``benchmarks/record.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

DEFENSES = ("none", "pgd-at", "trades", "fast-at")


def _store(path: str | None, tmp: Path, clips_per_class: int):
    from advaudio.features import FeatureConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize
    from advaudio.store import Store

    if path:
        return Store(path)
    config = FeaturizeConfig(dataset="synthetic", dataset_options={"clips_per_class": clips_per_class, "duration": 1.0,
                                                                   "n_classes": 4},
                             features=FeatureConfig(representations=("stft",)))
    return Store(featurize(config, cache=tmp / "cache", workers=0, progress=False).store_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--view", default=None)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--input-size", default="64x64")
    ap.add_argument("--test-fold", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--clips-per-class", type=int, default=48)
    ap.add_argument("--eps", default="8/255,1/1000", help="L∞ radii of the attack arms, comma-separated")
    ap.add_argument("--checkpoint", default=None,
                    help="attack this trained model (on its test fold) instead of the first repeat's clean one; "
                         "with --repeats 0 only the attack arms run")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from advaudio.attacks.autoattack import robust_accuracy
    from advaudio.attacks.stepping import gradient_attack, unit_noise
    from advaudio.data import StoreBatches
    from advaudio.store import sha256_file
    from advaudio.training import TrainConfig, load_checkpoint, train

    tmp = Path(tempfile.mkdtemp(prefix="bench-defenses-"))
    store = _store(args.store, tmp, args.clips_per_class)
    view = args.view or "stft"
    h, w = (int(v) for v in args.input_size.split("x"))
    seconds: dict[str, list[float]] = {d: [] for d in DEFENSES}
    clean_checkpoint, m = None, None
    for rep in range(args.repeats):
        for d in DEFENSES:  # interleaved: drifting machine speed hits every arm alike
            config = TrainConfig(store=str(store.directory), view=view, model="resnet18", width=args.width,
                                 input_size=(h, w), test_fold=args.test_fold, epochs=1, batch_size=32, workers=0,
                                 device="cpu", seed=0, defense=d,
                                 recipe="paper")  # as measured: time shifts only, the defense the one difference
            out = tmp / f"{d}-{rep}"
            m = train(config, out_dir=out, progress=False)
            seconds[d].append(float(m["history"][0]["seconds"]))
            if d == "none" and clean_checkpoint is None:
                clean_checkpoint = out / "checkpoint.pt"
            print(f"repeat {rep + 1}: {d:8s} {seconds[d][-1]:.1f} s/epoch", file=sys.stderr, flush=True)
    best = {d: min(v) for d, v in seconds.items() if v}
    ratios = {d: best[d] / best["none"] for d in best}

    attacked = args.checkpoint or clean_checkpoint
    if attacked is None:
        ap.error("--repeats 0 needs --checkpoint")
    ck = load_checkpoint(attacked, device="cpu")
    rows = store.select(folds=[ck.test_fold])[: args.clips]
    ds = StoreBatches(store, ck.view, rows, batch_size=len(rows))
    batch = ds[(0, 0)]
    x, y = batch["x"].float(), batch["y"]
    model = ck.model.eval()
    clean = model(x).argmax(1) == y
    for p in model.parameters():
        p.requires_grad_(False)
    arms = []
    for text in args.eps.split(","):
        num, _, den = text.strip().partition("/")
        eps = float(num) / float(den or 1)
        for p in model.parameters():
            p.requires_grad_(True)
        t0 = time.perf_counter()
        aa = robust_accuracy(model, x, y, norm="linf", eps=eps, num_classes=store.num_classes)
        aa_s = time.perf_counter() - t0
        for p in model.parameters():
            p.requires_grad_(False)
        t0 = time.perf_counter()
        noise = unit_noise(tuple(x.shape[1:]), norm="linf", seeds=list(range(len(x))), device=x.device)
        pgd = gradient_attack(model, x, y, torch.full((len(x),), eps), targeted=False, steps=40, rel_stepsize=0.1,
                              noise=noise, early_stop=False)
        pgd_s = time.perf_counter() - t0
        pgd_robust = float((clean & ~pgd.success).float().mean())
        arms.append({"eps": eps, "eps_text": text.strip(), "clips": len(x),
                     "autoattack": {"seconds": aa_s, "seconds_per_clip": aa_s / len(x),
                                    "robust_accuracy": aa.robust_accuracy, "n_correct": aa.n_correct,
                                    "per_attack": aa.per_attack, "warnings": list(aa.warnings)},
                     "pgd40": {"seconds": pgd_s, "seconds_per_clip": pgd_s / len(x), "robust_accuracy": pgd_robust},
                     "autoattack_vs_pgd40": aa_s / pgd_s})
    ds.close()

    print("\ndefense   s/epoch (best)   × none")
    for d in best:
        print(f"{d:8s} {best[d]:10.2f} {ratios[d]:10.2f}")
    for arm in arms:
        aa, pgd = arm["autoattack"], arm["pgd40"]
        print(f"\nL∞ ε={arm['eps_text']} on {arm['clips']} clips: AutoAttack (standard) {aa['seconds']:.1f} s "
              f"({aa['seconds_per_clip']:.2f} s/clip), robust accuracy {aa['robust_accuracy']:.3f}, stages "
              f"{', '.join(aa['per_attack'])}; PGD-40 {pgd['seconds']:.1f} s, robust accuracy "
              f"{pgd['robust_accuracy']:.3f}; AutoAttack / PGD-40 = {arm['autoattack_vs_pgd40']:.1f}×")
    record("defenses", {
        "store": str(store.directory), "view": view, "width": args.width, "input_size": [h, w],
        "clips_per_class": None if args.store else args.clips_per_class, "split": m.get("split") if m else None,
        "repeats": args.repeats, "attacked_checkpoint": str(attacked),
        "attacked_checkpoint_sha256": sha256_file(attacked), "attacked_test_accuracy": float(clean.float().mean()),
        "seconds_per_epoch": seconds, "best": best, "ratio_to_none": ratios,
        "attacks": arms,
    })

if __name__ == "__main__":
    main()
