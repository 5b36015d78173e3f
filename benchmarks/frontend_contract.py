"""The front-end contract measured on a whole store and on trained models (issue 20, item 1).

For every clip of ``--store`` (decoded as featurize decoded it: :func:`advaudio.frontend.store_waveforms`)
and every checkpoint given, the checkpoint's view computed two ways:

* stored: ``View.read`` of the store (what the model was trained and is attacked on);
* front end: :class:`advaudio.frontend.FrontEnd` from the waveforms (what the waveform-domain
  attack differentiates), float32, the tuning estimated on the clip as featurize does.

Printed per checkpoint (view): max |Δ| over all clips in model-input units, overall and in the
rows of each representation when the view is not resized, clips above the contract's
tolerance (1e-3 stft/dwt, 1e-2 chroma/tonnetz), and the agreement of the model's predicted
classes (all clips, and the test fold). Also the raw representations' max |Δ| in their units.

    python benchmarks/frontend_contract.py --store STORE CHECKPOINT [CHECKPOINT ...] [--batch 16]

The checkpoints of the README's figures: ``advaudio train --store STORE --view V --model resnet18
--width 0.25 --input-size 64x64 --epochs 5 --test-fold 5`` for each view, on ESC-10 featurized
with ``--chroma-floor-db 80``; for comparison the same checkpoints against the default store
(librosa's chroma normalisation: its near-silent frames are where the contract fails).
Figures go to ``benchmarks/results/frontend_contract-DATE.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

TOLERANCE = {"stft": 1e-3, "dwt": 1e-3, "chroma": 1e-2, "tonnetz": 1e-2}


def main() -> None:
    from advaudio.frontend import from_store, store_waveforms
    from advaudio.store import Store
    from advaudio.training.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)

    store = Store(args.store)
    rows = np.arange(len(store))
    start = time.perf_counter()
    waveforms = torch.from_numpy(store_waveforms(store, rows))
    print(f"{len(rows)} clips decoded in {time.perf_counter() - start:.1f} s", flush=True)
    test = store.folds == max(store.fold_ids)
    doc: dict = {"store": str(store.directory), "store_fingerprint": store.fingerprint,
                 "chroma_floor_db": (store.config["featurize"]["features"]).get("chroma_floor_db"),
                 "clips": len(rows), "views": {}}
    features: dict[str, torch.Tensor] = {}  # raw front-end representations, shared by the views
    tuning = None
    for path in args.checkpoints:
        checkpoint = load_checkpoint(path)
        view, model = checkpoint.view, checkpoint.model.float().eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unfloored store's warning: measured here on purpose
            front_end = from_store(store, view)
        needed = [n for n in view.representations if n not in features]
        if needed:
            if tuning is None and ({"chroma", "tonnetz"} & set(needed)):
                tuning = front_end.estimate_tuning(waveforms)
            start = time.perf_counter()
            parts = []
            with torch.no_grad():
                for b in range(0, len(rows), args.batch):
                    parts.append(front_end.features(waveforms[b : b + args.batch],
                                                    tuning=None if tuning is None else tuning[b : b + args.batch]))
            for name in needed:
                features[name] = torch.cat([p[name] for p in parts])
            print(f"  front end for {'+'.join(needed)}: {time.perf_counter() - start:.1f} s", flush=True)
        with torch.no_grad():
            got = front_end.compose(features)
            with store.reader() as reader:
                want = view.read(reader, rows)
            predicted_got = torch.cat([model(got[b : b + 64]).argmax(1) for b in range(0, len(rows), 64)])
            predicted_want = torch.cat([model(want[b : b + 64]).argmax(1) for b in range(0, len(rows), 64)])
        error = (got - want).abs().flatten(1).amax(1).numpy()
        tolerance = max(TOLERANCE[n] for n in view.representations)
        entry = {
            "checkpoint": str(path), "input_size": view.input_size, "max_abs": float(error.max()),
            "clips_above_tolerance": int((error > tolerance).sum()), "tolerance": tolerance,
            "prediction_agreement": float((predicted_got == predicted_want).float().mean()),
            "prediction_agreement_test_fold": float((predicted_got == predicted_want)[torch.from_numpy(test)]
                                                    .float().mean()),
            "test_accuracy_stored": float((predicted_want == torch.from_numpy(store.labels))[torch.from_numpy(test)]
                                          .float().mean()),
            "raw_max_abs": {},
        }
        # The same view at its native size (no resize, so no averaging): each representation's rows.
        native = dataclasses.replace(view, input_size=None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            native_front_end = from_store(store, native)
        with torch.no_grad():
            got = native_front_end.compose(features)
            with store.reader() as reader:
                want = native.read(reader, rows)
        bands = np.cumsum([0] + [shape[0] for shape in native.shapes])
        entry["native_max_abs"] = {name: float((got - want)[:, :, a:b].abs().max())
                                   for name, a, b in zip(native.representations, bands[:-1], bands[1:])}
        entry["native_clips_above_tolerance"] = {
            name: int(((got - want)[:, :, a:b].abs().flatten(1).amax(1) > TOLERANCE[name]).sum())
            for name, a, b in zip(native.representations, bands[:-1], bands[1:])}
        for name in view.representations:
            raw = torch.from_numpy(store.read(name, rows))
            entry["raw_max_abs"][name] = float((features[name].float() - raw).abs().max())
        doc["views"][view.name] = entry
        print(f"{view.name:12s} {tuple(view.input_size or ())} max |Δ| {entry['max_abs']:.3g} "
              f"(clips > {tolerance:g}: {entry['clips_above_tolerance']}/{len(rows)}), "
              f"predictions agree {entry['prediction_agreement']:.2%} (test fold "
              f"{entry['prediction_agreement_test_fold']:.2%}; test accuracy {entry['test_accuracy_stored']:.2%}); "
              f"raw max |Δ| " + ", ".join(f"{k} {v:.3g}" for k, v in entry["raw_max_abs"].items())
              + "; native size max |Δ| " + ", ".join(f"{k} {v:.3g} ({entry['native_clips_above_tolerance'][k]} clips"
                                                   f" > {TOLERANCE[k]:g})" for k, v in entry["native_max_abs"].items()),
              flush=True)
    record("frontend_contract", doc)


if __name__ == "__main__":
    main()
