"""Training input pipeline: HDF5 streaming vs the same batches from memory vs a naive loader.

Measures the input pipeline alone — iterate the batches of one training epoch and
transform them to model space (normalise, append, resize to the input size) — not
the model. Three pipelines, same rows, same view, same batch size and workers:

* ``streaming``: :class:`advaudio.data.StoreBatches` — per epoch a global
  permutation cut into batches, each batch one sorted, chunk-aligned read per
  representation, transformed as a batch, served by a batch-level DataLoader
  (``batch_size=None``, persistent workers that open the file themselves);
* ``memory``: the same batches (same plan) from arrays read into memory
  beforehand, transformed the same way, through the same kind of DataLoader —
  the limit the streaming pipeline is held to (target: >= 0.9x);
* ``naive``: what one usually writes first — a map-style ``Dataset`` whose
  ``__getitem__`` reads one clip per representation from h5py and transforms it,
  behind a standard ``DataLoader(shuffle=True, batch_size=B)`` (target: the
  streaming pipeline >= 3x faster).

The OS page cache is warmed first so the comparison is about access pattern and
per-read overhead, not disk speed. Each pipeline runs ``--repeats`` times,
interleaved; the best epoch time of each is reported (the machine is shared).

    python benchmarks/bench_input_pipeline.py                 # makes a synthetic store
    python benchmarks/bench_input_pipeline.py --store cache/esc10-…  --view stft
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advaudio.data import StoreBatches, make_loader, plan_epoch  # noqa: E402
from advaudio.store import Store  # noqa: E402
from advaudio.views import View, fit_view  # noqa: E402


class MemoryBatches(Dataset):
    """The streaming pipeline's batches, served from arrays already in memory."""

    def __init__(self, arrays: dict[str, np.ndarray], labels: np.ndarray, view: View, rows, batch_size, seed):
        self.arrays, self.labels, self.view = arrays, labels, view
        self.rows, self.batch_size, self.seed = rows, batch_size, seed
        self.epoch = 0
        self.plan = plan_epoch(rows, batch_size, shuffle=True, seed=seed, epoch=0, drop_singleton=True)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, key):
        epoch, i = key
        if epoch != getattr(self, "_planned", 0):
            self.plan = plan_epoch(self.rows, self.batch_size, shuffle=True, seed=self.seed, epoch=epoch,
                                   drop_singleton=True)
            self._planned = epoch
        rows = self.plan[i].rows
        x = self.view.transform({n: a[rows] for n, a in self.arrays.items()})
        return {"x": x, "y": torch.from_numpy(self.labels[rows]), "index": torch.from_numpy(rows)}


class NaiveClips(Dataset):
    """One clip per ``__getitem__``: one h5py read per representation, transformed alone."""

    def __init__(self, path: str, view: View, rows, labels):
        self.path, self.view, self.rows, self.labels = path, view, rows, labels
        self._file, self._pid = None, None

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        row = int(self.rows[i])
        arrays = {n: self._file["features"][n][row][None] for n in self.view.representations}
        return self.view.transform(arrays)[0], int(self.labels[row])


def _epoch_seconds(loader, set_epoch, first_epoch, epochs=1) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for epoch in range(first_epoch, first_epoch + epochs):
        set_epoch(epoch)
        for batch in loader:
            x = batch["x"] if isinstance(batch, dict) else batch[0]
            n += x.shape[0]
    return time.perf_counter() - t0, n


class _EpochKeys(torch.utils.data.Sampler):
    def __init__(self, ds):
        self.ds = ds

    def __iter__(self):
        return iter([(self.ds.epoch, i) for i in range(len(self.ds))])

    def __len__(self):
        return len(self.ds)


def make_store(cache: str, clips_per_class: int, duration: float, workers: int) -> Store:
    from advaudio.features import FeatureConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store

    config = FeaturizeConfig(
        dataset="synthetic",
        dataset_options={"clips_per_class": clips_per_class, "duration": duration},
        features=FeatureConfig(representations=("stft", "chroma")),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = featurize_store(config, cache=cache, workers=workers, progress=True)
    return Store(result.store_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", help="existing feature store (default: make a synthetic one under --cache)")
    p.add_argument("--cache", default="cache", help="where the synthetic store is made [cache]")
    p.add_argument("--clips-per-class", type=int, default=50, help="synthetic store: clips per class (8 classes) [50]")
    p.add_argument("--duration", type=float, default=5.0, help="synthetic store: clip duration in s [5]")
    p.add_argument("--view", default="stft+chroma", help="view to serve [stft+chroma]")
    p.add_argument("--input-size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"), help="[128 128]")
    p.add_argument("--batch-size", type=int, default=32, help="[32]")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of every pipeline [2]")
    p.add_argument("--epochs", type=int, default=5, help="epochs per measurement [5]")
    p.add_argument("--repeats", type=int, default=5, help="measurements per pipeline, interleaved, best taken [5]")
    args = p.parse_args(argv)

    torch.set_num_threads(1)  # the pipelines are measured, not intra-op parallelism
    store = Store(args.store) if args.store else make_store(args.cache, args.clips_per_class, args.duration,
                                                            args.workers)
    rows = store.select(exclude_folds=[max(store.fold_ids)])
    view = fit_view(store, args.view, rows=rows, input_size=tuple(args.input_size))
    with open(store.master, "rb"):
        pass
    for shard in sorted((store.directory / "shards").glob("*.h5")):  # warm the page cache
        shard.read_bytes()
    arrays = {n: store.read(n, np.arange(len(store))) for n in view.representations}
    mib = sum(a[rows].nbytes for a in arrays.values()) / 2**20

    stream_ds = StoreBatches(store, view, rows, batch_size=args.batch_size, shuffle=True, seed=0)
    stream = make_loader(stream_ds, workers=args.workers)
    mem_ds = MemoryBatches(arrays, store.labels, view, rows, args.batch_size, 0)
    memory = DataLoader(mem_ds, batch_size=None, sampler=_EpochKeys(mem_ds), num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    naive_ds = NaiveClips(str(store.master), view, rows, store.labels)
    naive = DataLoader(naive_ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                       persistent_workers=args.workers > 0)
    pipelines = {
        "streaming": (stream, stream_ds.set_epoch),
        "memory": (memory, mem_ds.set_epoch),
        "naive": (naive, lambda e: None),
    }
    for loader, set_epoch in pipelines.values():  # start workers, first-touch costs
        _epoch_seconds(loader, set_epoch, 0)
    best = {k: float("inf") for k in pipelines}
    samples = {}
    for r in range(args.repeats):
        for name, (loader, set_epoch) in pipelines.items():
            seconds, n = _epoch_seconds(loader, set_epoch, 1 + r * args.epochs, args.epochs)
            best[name] = min(best[name], seconds)
            samples[name] = n

    rate = {k: samples[k] / best[k] for k in pipelines}
    print(f"store       {store.directory} ({len(store)} clips; {rows.size} training clips, {mib:.0f} MiB of "
          f"{'+'.join(view.representations)} features)")
    print(f"view        {view.name} -> {view.output_shape[1]}x{view.output_shape[2]}; batch size "
          f"{args.batch_size}, {args.workers} DataLoader workers, torch threads 1")
    print(f"timing      best of {args.repeats} interleaved measurements of {args.epochs} epochs each")
    for name in pipelines:
        print(f"{name:<11} {rate[name]:8.0f} samples/s   ({best[name] / args.epochs:.3f} s per epoch)")
    print(f"streaming / memory  = {rate['streaming'] / rate['memory']:.2f}x   (target >= 0.9x)")
    print(f"streaming / naive   = {rate['streaming'] / rate['naive']:.2f}x   (target >= 3x)")
    stream_ds.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
