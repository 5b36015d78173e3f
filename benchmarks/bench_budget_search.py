"""Budget search of fixed-budget attacks: per-clip ε search vs batch bisection, side by side.

    python benchmarks/bench_budget_search.py [--attacks bim,pgd] [--clips 48] [--rtol 0.05]
        [--checkpoint run/checkpoint.pt [--split test]] [--epochs 6] [--device cpu]

Both searches (the per-clip one with and without early stopping) tune the same attack on the same model, clips and targets to the
same fooling rate (0.9) and relative tolerance; the script prints, per attack and
search, the budget, the gradient steps per clip (input-gradient evaluations /
attacked clips) and the wall time, then the ratios per-clip / bisection.

Target: per-clip ≤ 1/3 of the bisection's gradient steps at a budget within the
same 5 % tolerance.

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
    from advaudio.featurize import FeaturizeConfig, featurize
    from advaudio.training import TrainConfig, train

    res = featurize(FeaturizeConfig(dataset="synthetic",
                                    dataset_options={"clips_per_class": 40, "n_classes": 4, "duration": 1.0},
                                    features=FeatureConfig(representations=("stft",))),
                    cache=directory / "cache", workers=0, progress=False)
    train(TrainConfig(store=str(res.store_dir), view="stft", model="resnet18", width=0.25, input_size=(64, 64),
                      batch_size=16, epochs=epochs, lr=3e-3, workers=0, device="cpu", amp=False),
          out_dir=directory / "run", progress=False)
    return directory / "run" / "checkpoint.pt"


def clips(checkpoint: Path, *, split: str, limit: int, device: str):
    from advaudio import store as st
    from advaudio.adversarial import choose_rows, split_rows
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
        head = f"{'attack':<8}{'search':<24}{'budget':>10}{'fooled':>8}{'steps/clip':>12}{'wall s':>9}"
        print(head + "\n" + "-" * len(head))
        ratios = []
        for name in args.attacks.split(","):
            cfg = AttackConfig.create(name, seed=0, **params.get(name, {}))
            out = {}
            for search, early in (("bisection", True), ("per-clip", True), ("per-clip", False)):
                t0 = time.perf_counter()
                t = tune_budget(model, x, y, config=cfg, fooling_rate=args.fooling_rate, rtol=args.rtol,
                                targets=targets, batch_size=args.batch_size, search=search, sample_ids=rows,
                                early_stop=early)
                search = search if early else "per-clip, no early stop"
                wall = time.perf_counter() - t0
                steps = t.gradient_queries / max(1, t.n_attacked)
                out[search] = (t.budget, steps, wall)
                print(f"{name:<8}{search:<24}{t.budget:>10.5g}{t.fooling_rate:>8.3f}{steps:>12.1f}{wall:>9.2f}")
            (b0, s0, w0) = out["bisection"]
            for search in ("per-clip", "per-clip, no early stop"):
                b1, s1, w1 = out[search]
                ratios.append((f"{name} {search}", s1 / s0, w1 / w0, abs(b1 - b0) / b0))
        print()
        for name, rs, rw, db in ratios:
            print(f"{name} / bisection: gradient steps {rs:.3f} (target <= 0.333), wall time {rw:.3f}; "
                  f"budgets differ by {100 * db:.1f} % (tolerance {100 * args.rtol:g} %)")


if __name__ == "__main__":
    main()
