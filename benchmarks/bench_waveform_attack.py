"""Waveform-domain PGD against feature-domain PGD: what a step through the front end costs (issue 20, item 5).

Per view, the same clips, the same ResNet-18 (random weights: the cost does not depend on them;
every clip's label is the model's clean prediction, so every clip is attacked) and the same PGD
(``--steps`` steps, one ε that fools none, so every clip runs every step):

* ``feature``: the classifier on the view's stored inputs (``attack --domain feature``);
* ``waveform``: ``classifier ∘ front_end`` on the decoded clips (``attack --domain waveform``,
  :class:`advaudio.attacks.domain.WaveformDomain`, the CQT tuning frozen per clip).

Printed: seconds per PGD step per clip in each domain and their ratio. The front end alone against
librosa's forward transform is ``bench_frontend.py``'s.

    python benchmarks/bench_waveform_attack.py [--clips 8] [--duration 5] [--steps 10] [--threads 1]

Figures go to ``benchmarks/results/bench_waveform_attack-DATE.json`` (``record.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import record  # noqa: E402

VIEWS = ("stft", "dwt", "stft+chroma", "dwt+chroma")


def main(argv=None) -> None:
    from advaudio.attacks import AttackConfig, run_attack
    from advaudio.attacks.domain import WaveformDomain
    from advaudio.features import FeatureConfig
    from advaudio.frontend import from_store, store_waveforms
    from advaudio.models import create_model
    from advaudio.stages.featurize import FeaturizeConfig, featurize
    from advaudio.store import Store
    from advaudio.views import fit_view

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--views", default=",".join(VIEWS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as cache:
        result = featurize(FeaturizeConfig(
            dataset="synthetic", dataset_options={"clips_per_class": args.clips // 4 or 1, "n_classes": 4,
                                                  "duration": args.duration},
            features=FeatureConfig(representations=("stft", "dwt", "chroma"), chroma_floor_db=80.0)),
            cache=Path(cache), workers=0, progress=False)
        store = Store(result.store_dir)
        rows = np.arange(len(store))
        waves = store_waveforms(store, rows)
        rows_out = []
        for spec in args.views.split(","):
            view = fit_view(store, spec, rows=rows, input_size=(64, 64))
            torch.manual_seed(0)
            model = create_model("resnet18", num_classes=4, width=0.25).eval()
            with store.reader() as reader:
                feats = view.read(reader, rows)
            domain = WaveformDomain(model, from_store(store, view), waves)
            timing = {}
            for name, m, x, eps in (("feature", model, feats, 1e-6), ("waveform", domain.model, domain.inputs, 1e-9)):
                with torch.no_grad():
                    labels = m(x).argmax(1)
                config = AttackConfig.create("pgd", steps=args.steps, random_start=False, seed=0)
                run_attack(m, x[:1], labels[:1], config=config, epsilon=eps)  # warm-up: kernels, allocations
                t = time.perf_counter()
                res = run_attack(m, x, labels, config=config, epsilon=eps, targets=(labels + 1) % 4)
                seconds = time.perf_counter() - t
                steps = max(1, int(res.gradient_queries))
                timing[name] = seconds / steps
            ratio = timing["waveform"] / timing["feature"]
            rows_out.append({"view": spec, "feature_s_per_clip_step": timing["feature"],
                             "waveform_s_per_clip_step": timing["waveform"], "ratio": ratio})
            print(f"{spec:<12} feature {1e3 * timing['feature']:8.2f} ms   waveform "
                  f"{1e3 * timing['waveform']:8.2f} ms per clip-step   ×{ratio:.1f}", flush=True)
    record("bench_waveform_attack", {"args": vars(args), "views": rows_out})


if __name__ == "__main__":
    main()
