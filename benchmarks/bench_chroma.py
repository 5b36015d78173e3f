"""Chromagram + tonnetz: advaudio's copied librosa-0.11 CQT vs librosa's own, side by side.

The question it settles (issue 10): is the private copy of librosa 0.11's
``chroma_cqt`` in :mod:`advaudio.features._librosa_cqt` worth keeping, or
should advaudio call ``librosa.feature.chroma_cqt`` (+ ``tonnetz(chroma=...)``)?
Three arms, each on the same real ESC-10 clips resampled to 22050 Hz:

* ``advaudio``  :func:`advaudio.features.chroma` + :func:`~advaudio.features.tonnetz`
  (the copied path when librosa is 0.11);
* ``librosa``   ``librosa.feature.chroma_cqt(y=y, sr=sr)`` + ``librosa.feature.tonnetz(chroma=...)``,
  librosa as installed (its joblib cache off: ``LIBROSA_CACHE_DIR`` unset, the default);
* ``librosa+cache``  the same with ``LIBROSA_CACHE_DIR`` set, so librosa's own
  filter caching (``@cache(level=10)`` on ``librosa.filters``) is on and warm.

Two measurements, ratios printed side by side:

1. per clip: one process per cache setting, single thread (``OMP_NUM_THREADS=1``),
   one warm-up clip, then the arms interleaved clip by clip; median over the clips;
2. per worker start-up: a fresh ``python -c`` process that imports
   :mod:`advaudio.features` (and for librosa's arms ``librosa.feature``) and
   transforms its first clip (what each new Dask worker pays), timed from
   outside; median of ``--starts``.

And the equality of the two on those clips: max abs difference of chroma and tonnetz.

    OMP_NUM_THREADS=1 python benchmarks/bench_chroma.py [--root PATH] [--clips 50] [--starts 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR = 22050
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
if not DEFAULT_ROOT.is_dir():
    DEFAULT_ROOT = Path("/work/shared/data/esc10")

# The first clip of one arm in a fresh process; the clip is read with numpy so
# that only the transform's imports differ between the arms.
_START_CODE = {
    "advaudio": (
        "import numpy as np, sys\n"
        "from advaudio.features import chroma, tonnetz\n"
        "y = np.load(sys.argv[1])\n"
        "tonnetz(chroma=chroma(y, sr={sr}))\n"
    ),
    "librosa": (  # advaudio.features too: a worker imports it whichever path runs
        "import numpy as np, sys, librosa\n"
        "import advaudio.features\n"
        "y = np.load(sys.argv[1])\n"
        "librosa.feature.tonnetz(chroma=librosa.feature.chroma_cqt(y=y, sr={sr}))\n"
    ),
}


def _single_thread_env(cache_dir: str | None) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("LIBROSA_CACHE_DIR", None)
    if cache_dir is not None:
        env["LIBROSA_CACHE_DIR"] = cache_dir
    return env


def per_clip(clips_file: str, out_file: str) -> None:
    """Child process: time both arms clip by clip, interleaved; save times and outputs."""
    import warnings

    import librosa

    from advaudio.features import chroma, tonnetz

    warnings.filterwarnings("ignore", category=UserWarning)  # librosa on near-silent clips
    clips = list(np.load(clips_file).values())

    arms = {
        "advaudio": lambda y: (c := chroma(y, sr=SR), tonnetz(chroma=c)),
        "librosa": lambda y: (
            c := librosa.feature.chroma_cqt(y=y, sr=SR),
            librosa.feature.tonnetz(chroma=c),
        ),
    }
    for arm in arms.values():  # warm-up: imports, numba compilation, first filter bank
        arm(clips[0])
    times = {name: [] for name in arms}
    outputs = {name: [] for name in arms}
    for y in clips:
        for name, arm in arms.items():
            t0 = time.perf_counter()
            result = arm(y)
            times[name].append(time.perf_counter() - t0)
            outputs[name].append(result)
    diff = {
        kind: max(
            float(np.max(np.abs(a[i].astype(np.float64) - b[i].astype(np.float64))))
            for a, b in zip(outputs["advaudio"], outputs["librosa"])
        )
        for i, kind in enumerate(("chroma", "tonnetz"))
    }
    Path(out_file).write_text(json.dumps({"times": times, "max_abs_diff": diff}))


def _run_per_clip(clips_file: str, tmp: str, cache_dir: str | None) -> dict:
    out = os.path.join(tmp, f"per-clip-{'cache' if cache_dir else 'default'}.json")
    subprocess.run(
        [sys.executable, __file__, "--child-per-clip", clips_file, out],
        env=_single_thread_env(cache_dir),
        check=True,
    )
    return json.loads(Path(out).read_text())


def _start_up(arm: str, clip_file: str, cache_dir: str | None, starts: int) -> float:
    code = _START_CODE[arm].format(sr=SR)
    times = []
    for _ in range(starts):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-W", "ignore", "-c", code, clip_file],
            env=_single_thread_env(cache_dir),
            check=True,
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ESC-10 copy")
    parser.add_argument("--clips", type=int, default=50, help="clips for the per-clip median")
    parser.add_argument("--starts", type=int, default=5, help="fresh processes per arm")
    parser.add_argument("--child-per-clip", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_per_clip:
        per_clip(*args.child_per_clip)
        return

    import librosa

    from advaudio.datasets import load_clip, read_dataset

    table = read_dataset("esc10", root=args.root)
    per_class = -(-args.clips // len(table.classes))
    clips = [
        load_clip(table, clip, sr=SR) for clip in table.subset(limit_per_class=per_class).clips
    ][: args.clips]
    with tempfile.TemporaryDirectory() as tmp:
        clips_file = os.path.join(tmp, "clips.npz")
        np.savez(clips_file, *clips)
        first_clip = os.path.join(tmp, "first.npy")
        np.save(first_clip, clips[0])
        cache_dir = os.path.join(tmp, "librosa-cache")

        default = _run_per_clip(clips_file, tmp, None)
        cached = _run_per_clip(clips_file, tmp, cache_dir)  # also fills the cache for start-up
        start = {
            "advaudio": _start_up("advaudio", first_clip, None, args.starts),
            "librosa": _start_up("librosa", first_clip, None, args.starts),
            "librosa+cache": _start_up("librosa", first_clip, cache_dir, args.starts),
        }

    clip_median = {
        "advaudio": statistics.median(default["times"]["advaudio"]),
        "librosa": statistics.median(default["times"]["librosa"]),
        "advaudio (cache env)": statistics.median(cached["times"]["advaudio"]),
        "librosa+cache": statistics.median(cached["times"]["librosa"]),
    }
    print(f"librosa {librosa.__version__}, {len(clips)} ESC-10 clips at {SR} Hz, "
          f"OMP_NUM_THREADS=1, {args.starts} fresh processes per arm")
    print(f"{'':28s}{'advaudio':>10s}{'librosa':>10s}{'lib+cache':>11s}"
          f"{'lib/adv':>9s}{'lib+c/adv':>11s}")
    a, b, c = clip_median["advaudio"], clip_median["librosa"], clip_median["librosa+cache"]
    a_c = clip_median["advaudio (cache env)"]
    print(f"{'per clip, median [s]':28s}{a:10.4f}{b:10.4f}{c:11.4f}{b / a:8.2f}x{c / a_c:10.2f}x")
    a, b, c = start["advaudio"], start["librosa"], start["librosa+cache"]
    print(f"{'worker start-up, median [s]':28s}{a:10.3f}{b:10.3f}{c:11.3f}{b / a:8.2f}x{c / a:10.2f}x")
    print(f"{'start-up extra vs advaudio [s]':28s}{'':10s}{b - a:10.3f}{c - a:11.3f}")
    diff = default["max_abs_diff"]
    print(f"advaudio vs librosa, max abs difference over the clips: "
          f"chroma {diff['chroma']:.2e}, tonnetz {diff['tonnetz']:.2e}")


if __name__ == "__main__":
    main()
