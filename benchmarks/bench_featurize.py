"""Featurize benchmark: advaudio vs a hand-written loop vs compute-only time.

Measured side by side in one run on the real ESC-10 clips (default
``../shared/data/esc10``), each arm ``--repeat`` times interleaved, best kept
(the shared machine's speed drifts by 10-20 % over minutes):

1. the loop a researcher writes by hand — ``librosa.load``, ``librosa.stft``,
   ``librosa.feature.chroma_cqt``, ``librosa.feature.tonnetz`` and PyWavelets,
   one clip after another;
2. compute-only, one process, no scheduler and no files written: each clip
   decoded and resampled (files already in the page cache) and transformed
   by advaudio's functions — divided by the worker count, the limit any
   scheduler can reach; also shown without the decoding;
3. ``advaudio featurize`` end to end (Dask, N worker processes started for
   the run, shards, checksums, ``store.h5``);
4. the same on an already running cluster whose workers have featurized
   before (``advaudio featurize --scheduler ADDRESS`` on a long-lived
   cluster): the cost of the run without the ~3 s it takes a fresh worker
   process to start and import scipy, librosa and numba.

Then peak memory per worker for 400 vs 4000 synthetic clips (short clips, so
it runs in minutes): it must not grow with the number of clips.

    python benchmarks/bench_featurize.py [--root PATH] [--clips N] [--workers 2] [--repeat 3]
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
from advaudio.stages.featurize import FeaturizeConfig, dask_client, featurize_store

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


def compute_only(table, features: FeatureConfig) -> tuple[float, float]:
    """Seconds of (decode + transforms, transforms alone) for every clip, one process."""
    compute_features(load_clip(table, table.clips[0], sr=features.sr), features)  # warm-up
    t0 = time.perf_counter()
    waves = [load_clip(table, clip, sr=features.sr) for clip in table.clips]
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    for y in waves:
        compute_features(y, features)
    t_transforms = time.perf_counter() - t0
    return t_decode + t_transforms, t_transforms


def end_to_end(config: FeaturizeConfig, workers: int, cluster=None) -> float:
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        featurize_store(config, cache=cache, workers=workers, cluster=cluster, progress=False)
        return time.perf_counter() - t0


def on_warm_cluster(config: FeaturizeConfig, workers: int) -> float:
    with dask_client(workers=workers) as client:
        end_to_end(config, workers, client.cluster)  # warms the workers up
        return end_to_end(config, workers, client.cluster)


def peak_worker_memory(n_clips: int, workers: int) -> float:
    """Largest worker peak RSS (MiB) while featurizing n synthetic 1-s clips."""
    n_classes = 8
    config = FeaturizeConfig(
        dataset="synthetic",
        dataset_options={"clips_per_class": n_clips // n_classes, "n_classes": n_classes, "duration": 1.0},
        features=FeatureConfig(representations=("stft", "dwt")),
    )
    with tempfile.TemporaryDirectory() as cache, dask_client(workers=workers) as client:
        featurize_store(config, cache=cache, progress=False, cluster=client.cluster)
        peaks = client.run(_peak_rss_mib)
    return max(peaks.values())


def _peak_rss_mib() -> float:
    """This process's peak resident memory in MiB.

    VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``exec``, so a
    spawned worker would report at least the RSS its parent had when it forked.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ESC-10 copy")
    ap.add_argument("--clips", type=int, default=400, help="clips to use (default all 400)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions, best kept (default 3)")
    ap.add_argument("--skip-memory", action="store_true", help="skip the 400 vs 4000 clip memory check")
    args = ap.parse_args()

    features = FeatureConfig()
    table = read_dataset("esc10", root=str(args.root))
    per_class = max(1, args.clips // len(table.classes))
    table = table.subset(limit_per_class=per_class)
    n = len(table)
    print(f"{n} ESC-10 clips, representations {','.join(features.representations)}, {args.workers} workers")

    config = FeaturizeConfig(dataset="esc10", root=str(args.root), limit_per_class=per_class, features=features)
    hand, compute, transforms, ours, warm = [], [], [], [], []
    for _ in range(args.repeat):  # interleaved, so drift hits every arm alike
        hand.append(hand_written_loop([c.path for c in table.clips]))
        both = compute_only(table, features)
        compute.append(both[0])
        transforms.append(both[1])
        ours.append(end_to_end(config, args.workers))
        warm.append(on_warm_cluster(config, args.workers))
    t_hand, t_compute, t_transforms = min(hand), min(compute), min(transforms)
    t_ours, t_warm = min(ours), min(warm)
    w = args.workers

    def row(name: str, seconds: float, note: str = "") -> None:
        print(f"{name:34s} {seconds:6.1f} s {1000 * seconds / n:6.1f} ms/clip  {note}")

    row("hand-written loop", t_hand)
    row("compute-only, 1 process", t_compute,
        f"(decode {1000 * (t_compute - t_transforms) / n:.1f} + transforms {1000 * t_transforms / n:.1f})")
    row(f"advaudio featurize, {w} workers", t_ours, "(workers started for the run; runs "
        + ", ".join(f"{t:.1f}" for t in ours) + " s)")
    row(f"  on a running cluster, {w} workers", t_warm, "(runs " + ", ".join(f"{t:.1f}" for t in warm) + " s)")
    print(f"speed-up vs hand-written loop:               {t_hand / t_ours:5.2f}x  (target >= 3x)")
    print(f"end-to-end / (compute-only / workers):       {t_ours / (t_compute / w):5.2f}x  (target <= 1.3x)")
    print(f"  on a running cluster:                      {t_warm / (t_compute / w):5.2f}x")

    if not args.skip_memory:
        small = peak_worker_memory(400, args.workers)
        large = peak_worker_memory(4000, args.workers)
        print(f"peak worker RSS: 400 clips {small:.0f} MiB, 4000 clips {large:.0f} MiB "
              f"(ratio {large / small:.2f}; flat means memory does not grow with clips)")


if __name__ == "__main__":
    main()
