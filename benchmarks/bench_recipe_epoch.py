"""Wall time per training epoch: the default recipe against the paper recipe, side by side.

    python benchmarks/bench_recipe_epoch.py --store STORE [--view stft] [--width 0.5 --input-size 96]
                                            [--epochs 2] [--repeats 3] [--threads 1] [--json FILE]

Both recipes train the same model on the same store and fold for ``--epochs`` epochs
(``stop_after``: the schedule still spans the recipe's length), interleaved, ``--repeats``
times; the best of each arm's per-epoch times is kept (the machine's speed drifts; a
shared machine only ever slows a run down). What differs per epoch is the augmentation
(masks, gain, mixing: reading and mixing partners) and the weight average; the recipes'
epochs differ too, so the time of a whole run is the per-epoch time times the recipe's
epochs, shown as well.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--view", default="stft")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--input-size", default="96x96")
    parser.add_argument("--test-fold", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--record", metavar="NAME", help="keep them in benchmarks/results/NAME-DATE.json")
    args = parser.parse_args(argv)

    from advaudio.threads import configure_threads
    from advaudio.training import RECIPES, TrainConfig, train

    configure_threads(args.threads)
    times: dict[str, list[float]] = {r: [] for r in ("paper", "default")}
    tmp = Path(tempfile.mkdtemp(prefix="bench-recipe-"))
    try:
        for k in range(args.repeats):
            for recipe in times:
                out = tmp / f"{recipe}-{k}"
                config = TrainConfig(store=args.store, view=args.view, model=args.model, width=args.width,
                                     input_size=args.input_size, test_fold=args.test_fold, recipe=recipe, workers=0,
                                     device="cpu")
                m = train(config, out_dir=out, progress=False, stop_after=args.epochs)
                times[recipe] += [h["seconds"] for h in m["history"]]
                shutil.rmtree(out)
                print(f"repeat {k + 1}: {recipe} {[round(h['seconds'], 2) for h in m['history']]} s/epoch",
                      file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {r: min(v) for r, v in times.items()}
    doc = {
        "setup": {k: getattr(args, k) for k in ("store", "view", "model", "width", "input_size", "test_fold",
                                                  "epochs", "repeats", "threads")},
        "seconds_per_epoch": times,
        "best_seconds_per_epoch": best,
        "ratio_default_over_paper": best["default"] / best["paper"],
        "run_seconds_at_best": {r: best[r] * RECIPES[r]["epochs"] for r in best},
        "recipe_epochs": {r: RECIPES[r]["epochs"] for r in best},
    }
    print(f"seconds per epoch (best of {len(times['paper'])}): paper {best['paper']:.2f}, default "
          f"{best['default']:.2f} (x{doc['ratio_default_over_paper']:.2f}); whole run: paper "
          f"{doc['run_seconds_at_best']['paper']:.0f} s ({RECIPES['paper']['epochs']} epochs), default "
          f"{doc['run_seconds_at_best']['default']:.0f} s ({RECIPES['default']['epochs']} epochs)")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    if args.record:
        from record import record

        record(args.record, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
