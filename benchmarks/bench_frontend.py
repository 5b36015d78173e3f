"""The differentiable front ends: their cost against librosa's forward transforms, and the libraries not kept.

Speed (issue 20, item 5): on real ESC-10 clips (5 s at 22050 Hz, decoded as
featurize decodes them), one thread, every arm timed on the same clips in
interleaved rounds, best round kept (the machine's speed drifts):

* ``librosa``: what a researcher calls, one clip after another:
  ``librosa.power_to_db(|librosa.stft|^2, ref=1, top_db=80)``; PyWavelets'
  ``WaveletPacket`` at level 7 in frequency order, framed log-energy (librosa
  has no DWT); ``librosa.feature.chroma_cqt`` (given the tuning, as the front
  end is) and ``librosa.feature.tonnetz(chroma=...)``;
* ``store``: advaudio's own numpy transforms, what ``featurize`` runs per clip;
* ``front end``: :class:`advaudio.frontend.FrontEnd` on the batch (``--batch``
  clips at once, and one at a time), forward only and forward + backward to the
  waveform (what one attack step pays), the tuning frozen as in an attack.

Printed: seconds per clip and the ratios front end / librosa and / store, per
representation and for the views ``stft``, ``dwt+chroma`` and ``stft+chroma``
(64×64 inputs; the view's own normalisation and resize are in every arm).

``--libraries`` (after ``pip install ptwt==1.0.1 nnAudio==0.3.4``; neither is a dependency)
also measures the kept libraries that were not adopted, against
the store's numbers: ptwt 1.0.1's wavelet packets (modes ``periodic``,
``zero``, ``reflect``; ``boundary`` on one clip, its sparse matrices take a
minute to build) and nnAudio 0.3.4's ``CQT1992v2`` / ``CQT2010v2`` folded to the
store's (floored) chroma. Max |Δ| in the representation's own units.

    python benchmarks/bench_frontend.py [--root PATH] [--clips 16] [--batch 16] [--rounds 3] [--libraries]

Figures go to ``benchmarks/results/bench_frontend-DATE.json`` (``record.py``).
"""

from __future__ import annotations

import argparse
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

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
if not DEFAULT_ROOT.is_dir():
    DEFAULT_ROOT = Path("/work/shared/data/esc10")
REPRESENTATIONS = ("stft", "dwt", "chroma", "tonnetz")
VIEWS = ("stft", "dwt+chroma", "stft+chroma")


def load_clips(root: Path, count: int) -> np.ndarray:
    """``count`` ESC-10 clips spread over the classes, decoded as featurize decodes them."""
    from advaudio.datasets import load_clip, read_dataset

    table = read_dataset("esc10", root=root)
    per_class = -(-count // len(table.classes))
    clips = table.subset(limit_per_class=per_class).clips[:count]
    return np.stack([load_clip(table, c, sr=22050) for c in clips])


# --------------------------------------------------------------------------- #
# The arms
# --------------------------------------------------------------------------- #
def librosa_features(y: np.ndarray, name: str, tuning: float, shared: dict) -> np.ndarray:
    import librosa
    import pywt

    if name == "stft":
        return librosa.power_to_db(np.abs(librosa.stft(y, n_fft=1024, hop_length=512)) ** 2, ref=1.0,
                                   amin=1e-10, top_db=80.0)
    if name == "dwt":
        front, frames = 256, 1 + y.size // 512
        padded = np.zeros(-(-max(front + y.size, frames * 512) // 128) * 128, np.float32)
        padded[front : front + y.size] = y
        tree = pywt.WaveletPacket(padded, "db4", mode="periodization", maxlevel=7)
        bands = np.stack([node.data for node in tree.get_level(7, order="freq")])
        energy = np.add.reduceat(np.square(bands, dtype=np.float64), np.arange(frames) * 4, axis=1)
        return librosa.power_to_db(energy, ref=1.0, amin=1e-10, top_db=80.0)
    if "chroma" not in shared:
        shared["chroma"] = librosa.feature.chroma_cqt(y=y, sr=22050, hop_length=512, tuning=tuning)
    if name == "chroma":
        return shared["chroma"]
    return librosa.feature.tonnetz(chroma=shared["chroma"])


def store_features(y: np.ndarray, name: str, config, shared: dict) -> np.ndarray:
    from advaudio.features import REPRESENTATIONS as registry

    return registry[name].compute(y, config, shared)


def best_of(rounds: int, arms: dict) -> dict[str, float]:
    """Best wall time of each arm over ``rounds`` interleaved rounds, after one untimed warm-up call
    (librosa compiles its numba kernels, the front end builds the CQT banks of these tunings)."""
    for fn in arms.values():
        fn()
    best = dict.fromkeys(arms, float("inf"))
    for _ in range(rounds):
        for name, fn in arms.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def speed(clips: np.ndarray, *, batch: int, rounds: int) -> dict:
    import dataclasses

    from advaudio.features import FeatureConfig, feature_shapes
    from advaudio.frontend import FrontEnd
    from advaudio.views import View

    torch.set_num_threads(1)
    config = FeatureConfig(chroma_floor_db=80.0)
    # A fixed tuning per clip, estimated once as featurize does: the attack's situation.
    from advaudio.features.differentiable import ChromaCQT

    tunings = ChromaCQT().estimate_tuning(clips)
    config_tuned = [dataclasses.replace(config, tuning=t) for t in tunings]
    shapes = feature_shapes(config, clips.shape[1])
    ranges = {"stft": (-60.0, 40.0), "dwt": (-70.0, 20.0), "chroma": (0.0, 1.0), "tonnetz": (-0.5, 0.5)}

    def view_of(spec: str, size) -> View:
        names = tuple(spec.split("+"))
        return View(representations=names, shapes=tuple(shapes[n] for n in names), input_size=size,
                    low=tuple(ranges[n][0] for n in names), high=tuple(ranges[n][1] for n in names))

    x = torch.from_numpy(clips[:batch])
    n = x.shape[0]
    results: dict[str, dict] = {}
    for spec in REPRESENTATIONS + VIEWS:
        names = spec.split("+")
        is_view = spec in VIEWS
        view = view_of(spec, (64, 64) if is_view else None)
        front_end = FrontEnd(view, config)

        def reference(kind: str, view=view, names=names, is_view=is_view):
            for i in range(n):
                shared: dict = {}
                feats = {nm: (librosa_features(clips[i], nm, tunings[i], shared) if kind == "librosa"
                              else store_features(clips[i], nm, config_tuned[i], shared)) for nm in names}
                if is_view:
                    view.transform({nm: f[np.newaxis] for nm, f in feats.items()})

        def forward(single: bool, front_end=front_end):
            with torch.no_grad():
                if single:
                    for i in range(n):
                        front_end(x[i : i + 1], tuning=tunings[i : i + 1])
                else:
                    front_end(x, tuning=tunings[:n])

        def backward(front_end=front_end):
            y = x.clone().requires_grad_()
            front_end(y, tuning=tunings[:n]).sum().backward()

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's short-clip warnings do not apply at 5 s
            best = best_of(rounds, {
                "librosa": lambda: reference("librosa"),
                "store": lambda: reference("store"),
                "front end, batch": lambda: forward(False),
                "front end, one clip at a time": lambda: forward(True),
                "front end + backward, batch": backward,
            })
        per_clip = {k: v / n for k, v in best.items()}
        results[spec] = {"seconds_per_clip": per_clip,
                         "ratio_to_librosa": {k: per_clip[k] / per_clip["librosa"] for k in per_clip},
                         "ratio_to_store": {k: per_clip[k] / per_clip["store"] for k in per_clip}}
        row = per_clip
        print(f"{spec:12s} librosa {row['librosa'] * 1e3:7.1f} ms  store {row['store'] * 1e3:7.1f} ms  "
              f"front end {row['front end, batch'] * 1e3:7.1f} ms "
              f"(×{row['front end, batch'] / row['librosa']:.2f} librosa, ×{row['front end, batch'] / row['store']:.2f}"
              f" store; one at a time ×{row['front end, one clip at a time'] / row['librosa']:.2f} librosa)  "
              f"+backward {row['front end + backward, batch'] * 1e3:7.1f} ms "
              f"(×{row['front end + backward, batch'] / row['librosa']:.2f} librosa)", flush=True)
    return results


# --------------------------------------------------------------------------- #
# The libraries that were measured and not kept
# --------------------------------------------------------------------------- #
def libraries(clips: np.ndarray) -> dict:
    import ptwt

    from advaudio.features import FeatureConfig, compute_features
    from advaudio.features._librosa_cqt import _cq_to_chroma
    from advaudio.features.differentiable import ChromaCQT, WaveletPacketEnergy, power_to_db
    from advaudio.features.tonal import C1_HZ

    torch.set_num_threads(1)
    config = FeatureConfig(chroma_floor_db=80.0)
    store = [compute_features(y, config) for y in clips]
    out: dict[str, dict] = {"dwt": {}, "chroma": {}}

    # dwt: ptwt's packets on the store's padded waveform, framed like the store.
    port = WaveletPacketEnergy()
    front, length, framing = port._frames(clips.shape[1])
    padded = torch.nn.functional.pad(torch.from_numpy(clips).double(), (front, length - front - clips.shape[1]))
    framing = torch.from_numpy(framing)
    for mode in ("periodic", "zero", "reflect", "boundary"):
        x = padded[:1] if mode == "boundary" else padded
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ptwt.WaveletPacket(x, "db4", mode=mode, maxlevel=7)
            bands = torch.stack([tree[p] for p in tree.get_level(7, order="freq")], dim=1)
        seconds = (time.perf_counter() - start) / x.shape[0]
        coefficients = bands.shape[-1]
        # The store's framing needs one coefficient per 128 samples; periodic/zero/reflect have more.
        db = power_to_db(bands[..., : framing.shape[0]].square() @ framing, top_db=80.0, amin=1e-10)
        error = max(float(np.abs(db[i].numpy() - store[i]["dwt"]).max()) for i in range(x.shape[0]))
        out["dwt"][f"ptwt {mode}"] = {"max_abs_db": error, "coefficients_per_band": coefficients,
                                      "store_coefficients_per_band": framing.shape[0], "seconds_per_clip": seconds}
        print(f"dwt   ptwt mode={mode:9s} {coefficients} coefficients a band (store {framing.shape[0]}), "
              f"max |Δ| {error:.3g} dB, {seconds * 1e3:.0f} ms/clip", flush=True)
    # boundary mode on noise, sound up to both ends (ESC-10's clips are often quiet there, and the
    # store pads 256 zeros in front): its boundary filters are not periodization's.
    import pywt

    noise = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 8192)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tree = ptwt.WaveletPacket(noise, "db4", mode="boundary", maxlevel=7)
        bands = torch.stack([tree[p] for p in tree.get_level(7, order="freq")], dim=1)[0].numpy()
    reference = pywt.WaveletPacket(noise[0].numpy(), "db4", mode="periodization", maxlevel=7)
    reference = np.stack([node.data for node in reference.get_level(7, order="freq")])
    wrong = np.flatnonzero(np.abs(bands - reference).max(axis=0) > 1e-6 * np.abs(reference).max())
    edge = float(np.abs(bands - reference).max() / np.abs(reference).max())
    out["dwt"]["ptwt boundary"]["noise_edges"] = {"max_relative_coefficient_error": edge,
                                                  "coefficients_differing": wrong.tolist(),
                                                  "coefficients_per_band": int(reference.shape[1])}
    print(f"dwt   ptwt mode=boundary on noise to the edges: coefficients {wrong.tolist()} of {reference.shape[1]} "
          f"differ from periodization, by up to {edge:.2g} of the largest", flush=True)
    start = time.perf_counter()
    with torch.no_grad():
        db = port(torch.from_numpy(clips).double())
    seconds = (time.perf_counter() - start) / len(clips)
    error = max(float(np.abs(db[i].numpy() - store[i]["dwt"]).max()) for i in range(len(clips)))
    out["dwt"]["advaudio port"] = {"max_abs_db": error, "seconds_per_clip": seconds}
    print(f"dwt   advaudio port        max |Δ| {error:.3g} dB, {seconds * 1e3:.0f} ms/clip", flush=True)

    # chroma: nnAudio's CQTs with the store's parameters and tuning, folded to the floored chroma.
    import nnAudio.features as nn_features

    cq = ChromaCQT(floor_db=80.0)
    tunings = cq.estimate_tuning(clips)
    to_chroma = torch.from_numpy(np.array(_cq_to_chroma(252, 36, 12, C1_HZ))).double()

    def floored(c):
        frame_max = c.amax(dim=-2, keepdim=True)
        return c / torch.maximum(frame_max, frame_max.amax(dim=-1, keepdim=True) * 1e-4).clamp(min=1e-300)

    for name in ("CQT1992v2", "CQT2010v2"):
        errors, seconds = [], 0.0
        for i, y in enumerate(clips):
            fmin = C1_HZ * 2.0 ** (tunings[i] / 36)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                layer = getattr(nn_features, name)(sr=22050, hop_length=512, fmin=fmin, n_bins=252,
                                                   bins_per_octave=36, pad_mode="constant", verbose=False)
            start = time.perf_counter()
            with torch.no_grad():
                magnitude = layer(torch.from_numpy(y)[None]).double()
            seconds += time.perf_counter() - start
            frames = min(magnitude.shape[-1], store[i]["chroma"].shape[-1])
            chroma = floored(torch.relu(to_chroma @ magnitude))[0, :, :frames].numpy()
            errors.append(float(np.abs(chroma - store[i]["chroma"][:, :frames]).max()))
        out["chroma"][f"nnAudio {name}"] = {"max_abs": max(errors), "median_clip_max_abs": float(np.median(errors)),
                                            "seconds_per_clip": seconds / len(clips)}
        print(f"chroma nnAudio {name}  max |Δ| {max(errors):.3g} (median clip {np.median(errors):.3g}), "
              f"{seconds / len(clips) * 1e3:.0f} ms/clip", flush=True)
    start = time.perf_counter()
    with torch.no_grad():
        chroma = cq(torch.from_numpy(clips), tunings)
    seconds = (time.perf_counter() - start) / len(clips)
    errors = [float(np.abs(chroma[i].double().numpy() - store[i]["chroma"]).max()) for i in range(len(clips))]
    out["chroma"]["advaudio port, float32"] = {"max_abs": max(errors), "seconds_per_clip": seconds}
    print(f"chroma advaudio port      max |Δ| {max(errors):.3g}, {seconds * 1e3:.0f} ms/clip", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ESC-10 copy")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16, help="clips per front-end call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--libraries", action="store_true", help="also measure ptwt and nnAudio")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    args = parser.parse_args()
    if not args.root.is_dir():
        sys.exit(f"ESC-10 copy not found at {args.root} (--root)")
    clips = load_clips(args.root, max(args.clips, args.batch))
    doc: dict = {"clips": int(clips.shape[0]), "batch": args.batch, "rounds": args.rounds,
                 "seconds": float(clips.shape[1] / 22050)}
    if not args.no_speed:
        doc["speed"] = speed(clips, batch=args.batch, rounds=args.rounds)
    if args.libraries:
        doc["libraries"] = libraries(clips[: args.clips])
    record("bench_frontend", doc)


if __name__ == "__main__":
    main()
