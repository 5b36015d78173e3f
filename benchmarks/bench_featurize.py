"""Featurize benchmark: advaudio vs a hand-written loop vs compute-only time.

Measured side by side in one run on the real ESC-10 clips (default
``../shared/data/esc10``):

1. the loop a researcher writes by hand — ``librosa.load``, ``librosa.stft``,
   ``librosa.feature.chroma_cqt``, ``librosa.feature.tonnetz`` and PyWavelets,
   one clip after another;
2. compute-only: advaudio's transforms on waveforms already in memory, one
   process — divided by the worker count, the limit any scheduler can reach;
3. ``advaudio featurize`` end to end (Dask, N worker processes, shards, store).

Then peak memory per worker for 400 vs 4000 synthetic clips (short clips, so
it runs in minutes): it must not grow with the number of clips.

    python benchmarks/bench_featurize.py [--root PATH] [--clips N] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from advaudio.datasets import load_clip, read_dataset
from advaudio.features import FeatureConfig, compute_features
from advaudio.featurize import FeaturizeConfig, dask_client, featurize

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"


def hand_written_loop(paths: list[str], *, sr: int = 22050, hop: int = 512) -> float:
    """What one writes without a pipeline; returns seconds."""
    import librosa
    import pywt

    t0 = time.perf_counter()
    for path in paths:
        y, _ = librosa.load(path, sr=sr, duration=5.0)
        y = librosa.util.fix_length(y, size=5 * sr)
        spec = librosa.amplitude_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=hop)))
        chroma = librosa.feature.chroma_cqt(y=y, sr=sr, hop_length=hop)
        tonnetz = librosa.feature.tonnetz(y=y, sr=sr, chroma=chroma)
        wp = pywt.WaveletPacket(y, "db4", mode="periodization", maxlevel=7)
        bands = np.stack([node.data for node in wp.get_level(7, order="freq")])
        energy = (bands[:, : bands.shape[1] // 4 * 4].reshape(128, -1, 4) ** 2).sum(-1)
        _ = spec, chroma, tonnetz, 10 * np.log10(energy + 1e-10)
    return time.perf_counter() - t0


def compute_only(table, features: FeatureConfig) -> float:
    waves = [load_clip(table, clip, sr=features.sr) for clip in table.clips]
    compute_features(waves[0], features)  # JIT warm-up outside the timing
    t0 = time.perf_counter()
    for y in waves:
        compute_features(y, features)
    return time.perf_counter() - t0


def peak_worker_memory(n_clips: int, workers: int) -> float:
    """Largest worker peak RSS (MiB) while featurizing n synthetic 1-s clips."""
    n_classes = 8
    config = FeaturizeConfig(
        dataset="synthetic",
        dataset_options={"clips_per_class": n_clips // n_classes, "n_classes": n_classes, "duration": 1.0},
        features=FeatureConfig(representations=("stft", "dwt")),
    )
    with tempfile.TemporaryDirectory() as cache, dask_client(workers=workers) as client:
        featurize(config, cache=cache, progress=False, cluster=client.cluster)
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return max(peaks.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ESC-10 copy")
    ap.add_argument("--clips", type=int, default=400, help="clips to use (default all 400)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-memory", action="store_true", help="skip the 400 vs 4000 clip memory check")
    args = ap.parse_args()

    features = FeatureConfig()
    table = read_dataset("esc10", root=str(args.root))
    per_class = max(1, args.clips // len(table.classes))
    table = table.subset(limit_per_class=per_class)
    n = len(table)
    print(f"{n} ESC-10 clips, representations {','.join(features.representations)}, {args.workers} workers")

    t_hand = hand_written_loop([c.path for c in table.clips])
    print(f"hand-written loop     {t_hand:8.1f} s   {1000 * t_hand / n:6.1f} ms/clip")
    t_compute = compute_only(table, features)
    print(f"compute-only (1 proc) {t_compute:8.1f} s   {1000 * t_compute / n:6.1f} ms/clip")
    with tempfile.TemporaryDirectory() as cache:
        config = FeaturizeConfig(dataset="esc10", root=str(args.root), limit_per_class=per_class,
                                 features=features)
        t0 = time.perf_counter()
        featurize(config, cache=cache, workers=args.workers, progress=False)
        t_ours = time.perf_counter() - t0
    print(f"advaudio featurize    {t_ours:8.1f} s   {1000 * t_ours / n:6.1f} ms/clip (incl. cluster start)")
    print(f"speed-up vs hand-written loop:        {t_hand / t_ours:5.2f}x   (target >= 3x)")
    print(f"end-to-end / (compute-only/workers):  {t_ours / (t_compute / args.workers):5.2f}x   (target <= 1.3x)")

    if not args.skip_memory:
        small = peak_worker_memory(400, args.workers)
        large = peak_worker_memory(4000, args.workers)
        print(f"peak worker RSS: 400 clips {small:.0f} MiB, 4000 clips {large:.0f} MiB "
              f"(ratio {large / small:.2f}; flat means memory does not grow with clips)")


if __name__ == "__main__":
    main()
