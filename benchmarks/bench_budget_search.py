"""Budget search of fixed-budget attacks: per-clip ε search vs batch bisection, side by side.

    python benchmarks/bench_budget_search.py [--attacks bim,pgd] [--clips 48] [--rtol 0.05]
        [--checkpoint run/checkpoint.pt [--split test]] [--epochs 6] [--device cpu]

Every search tunes the same attack on the same model, clips and targets to the same
fooling rate (0.9) and relative tolerance: the batch bisection (Foolbox, the last
iterate), then the per-clip search with ``precision="quantile"`` (the stage's default:
only the clips near the budget refined), ``precision="clip"`` (every clip; what
slices of a job array use) and each without early stopping (success = the last
iterate, the bisection's definition).  Per attack and search it prints the budget,
its bracket's lower end (``budget_low``: the true quantile lies in (low, budget]),
the fooling rate, the gradient steps per clip (input-gradient evaluations /
attacked clips), the probe rounds' wall time, then each per-clip search's ratio to
the bisection: gradient steps, wall time, budget difference.

Target: per-clip ≤ 1/3 of the bisection's gradient steps at a budget within the
same 5 % tolerance.  Early stopping makes success at ε "some iterate within the
steps fooled it", never less than the bisection's "the last iterate did", so with
it the budget can only come out lower (a stronger attack, the usual definition);
without it the two searches define success alike and differ only by their random
starts (PGD: one seeded draw per clip vs one per Foolbox batch) and their brackets.

Model: ``--checkpoint`` (and its store, the ``--split`` clips, ``--clips`` of them);
by default a width-1/4 ``resnet18`` on 64×64 STFT inputs trained for ``--epochs``
on the synthetic set (4 classes × 40 clips, built in a temporary directory, ~1 min
on 2 cores) and its held-out fold (32 clips).  Ratios are from this one run;
absolute times mean something only on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from advaudio.attacks import AttackConfig, choose_targets, tune_budget  # noqa: E402


def synthetic_checkpoint(directory: Path, *, epochs: int) -> Path:
    from advaudio.features import FeatureConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store
    from advaudio.training import TrainConfig, train

    res = featurize_store(FeaturizeConfig(dataset="synthetic",
                                    dataset_options={"clips_per_class": 40, "n_classes": 4, "duration": 1.0},
                                    features=FeatureConfig(representations=("stft",))),
                          cache=directory / "cache", workers=0, progress=False)
    train(TrainConfig(store=str(res.store_dir), view="stft", model="resnet18", width=0.25, input_size=(64, 64),
                      batch_size=16, epochs=epochs, lr=3e-3, workers=0, device="cpu", amp=False),
          out_dir=directory / "run", progress=False)
    return directory / "run" / "checkpoint.pt"


def clips(checkpoint: Path, *, split: str, limit: int, device: str):
    from advaudio import store as st
    from advaudio.stages.attack import choose_rows, split_rows
    from advaudio.training import load_checkpoint

    ckpt = load_checkpoint(checkpoint, device=device)
    store = st.Store(Path(ckpt.store_path))
    rows = split_rows(store, split=split, test_fold=ckpt.test_fold, train_folds=ckpt.split.get("train_folds"))
    rows = choose_rows(rows, limit=limit, slice=None)
    with store.reader() as reader:
        x = ckpt.view.read(reader, rows).to(device)
    y = torch.as_tensor(store.labels[rows]).to(device)
    return ckpt, x, y, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attacks", default="bim,pgd")
    ap.add_argument("--clips", type=int, default=48)
    ap.add_argument("--rtol", type=float, default=0.05)
    ap.add_argument("--fooling-rate", type=float, default=0.9)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="ATTACK.KEY=INT",
                    help="e.g. -p pgd.steps=20")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = args.checkpoint or synthetic_checkpoint(Path(tmp), epochs=args.epochs)
        ckpt, x, y, rows = clips(ckpt_path, split=args.split, limit=args.clips, device=args.device)
        model = ckpt.model
        targets = choose_targets(model, x, y, rule="random", num_classes=len(ckpt.classes), seed=0, ids=rows)
        with torch.no_grad():
            acc = float((model(x).argmax(1) == y).float().mean())
        print(f"model {ckpt.model.config.get('name', '?')}, {len(x)} clips {tuple(x.shape[1:])}, clean accuracy "
              f"{acc:.3f}, fooling rate {args.fooling_rate}, rtol {args.rtol}, torch threads "
              f"{torch.get_num_threads()}, device {args.device}")
        params: dict[str, dict[str, int]] = {}
        for p in args.param:
            key, value = p.split("=")
            name, field = key.split(".")
            params.setdefault(name, {})[field] = int(value)
        head = (f"{'attack':<8}{'search':<30}{'budget':>10}{'low':>10}{'fooled':>8}{'steps/clip':>12}"
                f"{'wall s':>9}")
        print(head + "\n" + "-" * len(head))
        ratios = []
        searches = (("bisection", "bisection", "quantile", True),
                    ("per-clip quantile", "per-clip", "quantile", True),
                    ("per-clip clip", "per-clip", "clip", True),
                    ("per-clip quantile, last iterate", "per-clip", "quantile", False),
                    ("per-clip clip, last iterate", "per-clip", "clip", False))
        for name in args.attacks.split(","):
            cfg = AttackConfig.create(name, seed=0, **params.get(name, {}))
            out = {}
            for label, search, precision, early in searches:
                t0 = time.perf_counter()
                t = tune_budget(model, x, y, config=cfg, fooling_rate=args.fooling_rate, rtol=args.rtol,
                                targets=targets, batch_size=args.batch_size, search=search, sample_ids=rows,
                                early_stop=early, precision=precision)
                wall = time.perf_counter() - t0
                steps = t.gradient_queries / max(1, t.n_attacked)
                low = (t.tolerance or {}).get("budget_low")
                out[label] = (t.budget, steps, wall)
                low_text = f"{low:>10.5g}" if low is not None else f"{'-':>10}"
                print(f"{name:<8}{label:<30}{t.budget:>10.5g}{low_text}{t.fooling_rate:>8.3f}{steps:>12.1f}"
                      f"{wall:>9.2f}")
            (b0, s0, w0) = out["bisection"]
            for label, *_ in searches[1:]:
                b1, s1, w1 = out[label]
                ratios.append((f"{name} {label}", s1 / s0, w1 / w0, (b1 - b0) / b0))
        print()
        for label, rs, rw, db in ratios:
            mark = "ok" if rs <= 1 / 3 and abs(db) <= args.rtol else "--"
            print(f"[{mark}] {label:<38} / bisection: gradient steps {rs:.3f} (target <= 0.333), wall time "
                  f"{rw:.3f}; budget {100 * db:+.1f} % (tolerance {100 * args.rtol:g} %)")


if __name__ == "__main__":
    main()
