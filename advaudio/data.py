"""Streaming input pipeline: feature store (HDF5) → model-space batches → torch.

Shuffling scheme (random batches, sorted reads)
-----------------------------------------------
Each epoch the training rows are permuted globally with a generator seeded
from ``(seed, epoch)``, cut into consecutive batches, and the indices *within*
each batch are sorted. Batch composition is therefore as random as with a
per-sample shuffled sampler (every partition of the rows into batches is
possible), yet every batch is read with one sorted, chunk-aligned read per
representation (:func:`advaudio.store.read_rows`) instead of ``B`` random
single-clip reads. The order of samples *inside* a batch carries no
information for SGD (the loss is a mean, batch norm statistics are
permutation invariant), so sorting costs nothing.

The DataLoader gets a *batch-level* dataset (``batch_size=None``): item
``(epoch, i)`` is the whole batch ``i`` of that epoch. The key carries the
epoch, so persistent workers need no notification when the epoch changes,
and the batch plan and the augmentation of batch ``i`` depend only on
``(seed, epoch, i)`` — identical whichever worker serves it and however many
workers there are (this is what makes resumed runs exact).

Workers open the HDF5 files themselves, lazily on first use: the store
through :meth:`~advaudio.store.Store.reader`, extra sources through
:class:`~advaudio.store.AdversarialShard`. A handle is never carried across a
fork (the process id is checked, and pickling drops handles).

Extra sources
-------------
:class:`ModelSpaceSource` serves ready-made inputs already in model space
(adversarial shards): an HDF5 file with ``inputs`` ``(N, 1, H, W)`` in [0, 1],
``labels`` ``(N,)`` and optionally a boolean ``mask`` (e.g. ``success``: keep
only successful adversarial examples). With ``mix = m`` each training batch of
size ``B`` holds ``k = round(m·B)`` samples drawn from the pooled extra sources
(cycled through in a fresh permutation per pass) and ``B − k`` store clips;
an epoch is still one pass over the store rows. Time-shift augmentation, when
on, rolls every sample of a training batch, extra ones included (an
adversarial perturbation rolls with the clip it was made for).

Distributed training (DDP)
--------------------------
``batch_size`` is the *global* batch. Every rank computes the same plan (it
depends only on ``(seed, epoch)``) and serves, for each planned batch, only
its share: the samples at positions ``rank, rank + world, …`` of the batch
(store clips first, then each extra source's), read with the same sorted
reads and nothing else. The shares of one batch partition it, their sizes
differ by at most one, and every rank has the same number of batches (a
share may be empty when a batch is smaller than the world). Time shifts are
drawn for the whole batch from the ``(seed, epoch, i)`` generator and each
rank applies those of its positions, so the union of the shares is exactly
the single-process batch, augmentation included. The other augmentations
(:mod:`advaudio.augment`: masks, gain, mixing) follow the same rule; with mixing a
rank also reads the partners of its samples, wherever they are in the global batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from advaudio.augment import (
    GAIN_PURPOSE,
    MASK_PURPOSE,
    MIX_PURPOSE,
    Augmentation,
    MixPlan,
    RowProfile,
    apply_gain_,
    apply_masks_,
    draw_gains,
    draw_masks,
    mix_inputs,
    mix_targets,
    plan_mixing,
    row_profile,
)
from advaudio.errors import ParameterError, StoreError
from advaudio.store import FeatureReader, Store, sorted_unique
from advaudio.store.sources import ModelSpaceSource
from advaudio.threads import choose_threads
from advaudio.views import View

SOURCE_STORE = 0  # ``batch["source"]`` of store clips; extra source j has j + 1


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integers (seed, epoch, batch, purpose …), stable across runs."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# --------------------------------------------------------------------------- #
# Extra sources of model-space inputs
# --------------------------------------------------------------------------- #
# ModelSpaceSource lives in advaudio.store.sources (TrainConfig names it without torch).


# --------------------------------------------------------------------------- #
# Batch planning (pure functions of seed and epoch)
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PlannedBatch:
    """Sorted store rows and, per extra source, sorted rows of that source."""

    rows: np.ndarray
    extra: tuple[np.ndarray, ...] = ()

    @property
    def size(self) -> int:
        return int(self.rows.size + sum(e.size for e in self.extra))

    def share(self, rank: int, world_size: int) -> tuple[PlannedBatch, np.ndarray]:
        """Rank ``rank``'s part of the batch and its positions in it (see the module docstring).

        Positions count the store rows first, then each extra source's rows, the
        order in which :class:`StoreBatches` concatenates them; each part stays sorted.
        """
        positions = np.arange(int(rank), self.size, int(world_size), dtype=np.int64)
        return self.select(positions), positions

    def select(self, positions: np.ndarray) -> PlannedBatch:
        """The samples at ``positions`` (increasing) of the batch, as a batch of their own."""
        positions = np.asarray(positions, dtype=np.int64)
        parts, lo = [], 0
        for block in (self.rows, *self.extra):
            hi = lo + block.size
            parts.append(block[positions[(positions >= lo) & (positions < hi)] - lo])
            lo = hi
        return PlannedBatch(parts[0], tuple(parts[1:]))


def batch_sizes(n_rows: int, batch_size: int, mix: float, *, drop_singleton: bool) -> tuple[list[int], list[int]]:
    """Store and extra samples per batch for one epoch over ``n_rows`` store rows."""
    if batch_size < 1:
        raise ParameterError(f"batch size must be >= 1, got {batch_size}")
    k = int(round(mix * batch_size))
    if mix > 0 and k == 0:
        raise ParameterError(f"mix {mix} of a batch of {batch_size} is less than one sample")
    s = batch_size - k
    if s < 1:
        raise ParameterError(f"mix {mix} leaves no room for store clips in a batch of {batch_size}")
    store_sizes = [s] * (n_rows // s)
    if n_rows % s:
        store_sizes.append(n_rows % s)
    extra_sizes = [k if n == s else int(round(n * k / s)) for n in store_sizes]
    if drop_singleton and store_sizes and store_sizes[-1] + extra_sizes[-1] < 2 and len(store_sizes) > 1:
        # Batch norm cannot train on one sample; the clip is seen in other epochs.
        store_sizes.pop()
        extra_sizes.pop()
    return store_sizes, extra_sizes


def plan_epoch(
    rows: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    extra_pool: Sequence[np.ndarray] = (),
    mix: float = 0.0,
    drop_singleton: bool = False,
) -> list[PlannedBatch]:
    """The batches of one epoch (see the module docstring for the scheme).

    ``extra_pool[j]`` are the usable rows of extra source ``j``; they are pooled,
    permuted (generator seeded from ``(seed, epoch)``) and dealt ``k`` per batch,
    re-permuted when exhausted.
    """
    rows = np.asarray(rows, dtype=np.int64)
    store_sizes, extra_sizes = batch_sizes(rows.size, batch_size, mix if extra_pool else 0.0,
                                           drop_singleton=drop_singleton)
    rng = np.random.default_rng(derive_seed(seed, epoch, 1))
    order = rng.permutation(rows) if shuffle else rows
    pool_src = np.concatenate([np.full(p.size, j) for j, p in enumerate(extra_pool)] or [np.zeros(0, int)])
    pool_row = np.concatenate([np.asarray(p, np.int64) for p in extra_pool] or [np.zeros(0, np.int64)])
    if mix > 0 and extra_pool and pool_row.size == 0:
        raise StoreError("the extra sources hold no usable samples (all masked out?)")
    deck = np.zeros(0, np.int64)
    batches, start = [], 0
    for n_store, n_extra in zip(store_sizes, extra_sizes):
        part = np.sort(order[start : start + n_store])
        start += n_store
        extra: tuple[np.ndarray, ...] = ()
        if extra_pool:
            take = np.zeros(0, np.int64)
            while take.size < n_extra:
                if deck.size == 0:
                    deck = rng.permutation(pool_row.size)
                need = n_extra - take.size
                take, deck = np.concatenate([take, deck[:need]]), deck[need:]
            extra = tuple(np.sort(pool_row[take[pool_src[take] == j]]) for j in range(len(extra_pool)))
        batches.append(PlannedBatch(part, extra))
    return batches


def time_shift_(x: torch.Tensor, max_fraction: float, generator: torch.Generator, *,
                positions: np.ndarray | None = None, total: int | None = None) -> torch.Tensor:
    """Roll each sample circularly along time (last axis) by a random amount, in place.

    Shifts are uniform integers in ``[-round(f W), round(f W)]``; ``f = 0.5``
    reaches every circular offset. When ``x`` is a share of a batch of ``total``
    samples (distributed training), ``positions`` are its samples' places in that
    batch: the shifts of the whole batch are drawn and those of ``positions`` applied.
    """
    if max_fraction <= 0 or x.shape[0] == 0:
        return x
    w = x.shape[-1]
    m = int(round(max_fraction * w))
    if m == 0:
        return x
    if positions is None:
        shifts = torch.randint(-m, m + 1, (x.shape[0],), generator=generator)
    else:
        if len(positions) != x.shape[0]:
            raise ParameterError(f"{len(positions)} positions for a share of {x.shape[0]} samples")
        shifts = torch.randint(-m, m + 1, (int(total),), generator=generator)[torch.as_tensor(positions)]
    idx = (torch.arange(w)[None, :] - shifts[:, None]) % w  # out[..., t] = x[..., t - s]
    idx = idx.view(x.shape[0], *([1] * (x.ndim - 2)), w).expand_as(x)
    x.copy_(torch.gather(x, -1, idx))
    return x


# --------------------------------------------------------------------------- #
# The batch-level dataset
# --------------------------------------------------------------------------- #
class StoreBatches(Dataset):
    """Batches of model inputs read from a store (and optional extra sources).

    Item ``(epoch, i)`` (or ``i``, meaning the current epoch) is a dict:
    ``x`` float32 ``(B, 1, H, W)`` in [0, 1], ``y`` int64 labels, ``source``
    (0: store, ``j + 1``: extra source ``j``) and ``index`` (row in that source,
    increasing within each source: the order it was read in).

    Parameters
    ----------
    store : the :class:`~advaudio.store.Store` (workers read through its :meth:`~advaudio.store.Store.reader`)
    view : the fitted :class:`~advaudio.views.View`
    rows : store rows to serve (e.g. the training folds)
    batch_size : samples per batch, extra samples included
    shuffle : permute per epoch (training) or keep row order (evaluation)
    seed : base of every random choice (plan and augmentation)
    time_shift : max circular roll along time as a fraction of the width (0: off)
    augmentation : masks, gain and mixing of training batches (:mod:`advaudio.augment`); None: none.
        With mixing, items also hold ``target``, the mixed labels ``(B, classes)``
    extra_sources, mix : model-space sources and the fraction of each batch they fill
    rank, world_size : distributed training: serve only rank ``rank``'s share of each
        batch of the plan (``batch_size`` is then the global batch; see the module docstring)
    """

    def __init__(
        self,
        store: Store,
        view: View,
        rows: Sequence[int] | np.ndarray,
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        time_shift: float = 0.0,
        augmentation: Augmentation | None = None,
        extra_sources: Sequence[ModelSpaceSource] = (),
        mix: float = 0.0,
        rank: int = 0,
        world_size: int = 1,
    ):
        view.check_store(store)
        self.store = store
        self.view = view
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        if self.rows.size == 0:
            raise ParameterError("no rows to serve")
        self.labels = np.asarray(store.labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.time_shift = float(time_shift)
        if not 0 <= self.time_shift <= 1:
            raise ParameterError(f"time_shift is a fraction of the width in [0, 1], got {time_shift}")
        # Off stays off: no augmentation object, so a batch is built exactly as before they existed.
        self.augmentation = augmentation if augmentation is not None and augmentation.active else None
        self._profile: RowProfile | None = None
        self.sources = tuple(ModelSpaceSource.from_dict(s) for s in extra_sources)
        self.mix = float(mix)
        if not 0 <= self.mix < 1:
            raise ParameterError(f"mix must be in [0, 1), got {mix}")
        if self.mix > 0 and not self.sources:
            raise ParameterError("mix > 0 needs at least one extra source")
        if self.sources and self.mix == 0:
            raise ParameterError("extra sources given but mix is 0: say which fraction of a batch they fill")
        self.extra_pool, self.extra_labels = [], []
        for src in self.sources:
            keep, labels = src.index(output_shape=view.output_shape, num_classes=len(store.classes))
            self.extra_pool.append(keep)
            self.extra_labels.append(labels)
        self.shards = tuple(src.shard() for src in self.sources)
        self.rank, self.world_size = int(rank), int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ParameterError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
        self.epoch = 0
        self._plans: dict[int, list[PlannedBatch]] = {}
        self._reader: FeatureReader | None = None  # this process's handles, opened on first use
        self._shard_files: dict[int, h5py.File] = {}
        self._pid = os.getpid()
        self._len = len(self.plan(0))

    # ---- planning ------------------------------------------------------------ #
    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plan(self, epoch: int) -> list[PlannedBatch]:
        if epoch not in self._plans:
            self._plans = {epoch: plan_epoch(
                self.rows, self.batch_size, shuffle=self.shuffle, seed=self.seed, epoch=epoch,
                extra_pool=self.extra_pool, mix=self.mix, drop_singleton=self.shuffle,
            )}
        return self._plans[epoch]

    def __len__(self) -> int:
        return self._len

    @property
    def samples_per_epoch(self) -> int:
        """Samples of the current epoch, all ranks together."""
        return sum(b.size for b in self.plan(self.epoch))

    def global_batch_size(self, epoch: int, i: int) -> int:
        """Samples in batch ``i`` of ``epoch``, all ranks together."""
        return self.plan(int(epoch))[i].size

    # ---- files: opened lazily, per process ----------------------------------- #
    def _forget_handles(self) -> None:
        self._reader, self._shard_files, self._pid = None, {}, os.getpid()

    def _store_reader(self) -> FeatureReader:
        if self._pid != os.getpid():  # forked: never touch the parent's handles
            self._forget_handles()
        if self._reader is None:
            self._reader = self.store.reader()
        return self._reader

    def _shard_file(self, j: int) -> h5py.File:
        if self._pid != os.getpid():
            self._forget_handles()
        f = self._shard_files.get(j)
        if f is None:
            f = self._shard_files[j] = self.shards[j].open_file()
        return f

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in [self._reader, *self._shard_files.values()]:
                if f is not None:
                    f.close()
        self._reader, self._shard_files = None, {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_reader"], state["_shard_files"] = None, {}
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    # ---- reading ------------------------------------------------------------- #
    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        epoch, i = key if isinstance(key, tuple) else (self.epoch, key)
        epoch, i = int(epoch), int(i)
        plan = self.plan(epoch)
        if not 0 <= i < len(plan):
            raise IndexError(i)
        b = plan[i]
        total = b.size
        # ``wanted``: the positions this rank serves (None: all); ``read``: those it reads, which
        # with mixing include the partners of ``wanted``, wherever in the global batch they are.
        wanted = None if self.world_size == 1 else b.share(self.rank, self.world_size)[1]
        aug, mix = self.augmentation, None
        if aug is not None and aug.mixes:
            labels, sources = self._batch_labels(b)
            rng = np.random.default_rng(derive_seed(self.seed, epoch, i, MIX_PURPOSE))
            mix = plan_mixing(labels, sources == SOURCE_STORE, aug.mixing, aug.mixup_alpha, rng)
            wanted = np.arange(total, dtype=np.int64) if wanted is None else wanted
            read = np.union1d(wanted, mix.partner[wanted])
        else:
            read = wanted
        x, y, src, idx = self._read(b if read is None else b.select(read))
        if self.time_shift > 0:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, i, 2))
            time_shift_(x, self.time_shift, g, positions=read, total=total)
        out = {"x": x, "y": y, "source": src, "index": idx}
        if aug is not None:
            out = self._augment(out, aug, mix, epoch, i, total, read, wanted)
        return out

    def _batch_labels(self, b: PlannedBatch) -> tuple[np.ndarray, np.ndarray]:
        """Labels and sources of every position of a planned batch (nothing read)."""
        labels = [self.labels[b.rows]] + [self.extra_labels[j][rows] for j, rows in enumerate(b.extra)]
        sources = [np.full(b.rows.size, SOURCE_STORE)] + [np.full(rows.size, j + 1) for j, rows in enumerate(b.extra)]
        return np.concatenate(labels), np.concatenate(sources)

    def _read(self, b: PlannedBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs, labels, sources and source rows of a (part of a) planned batch, in position order."""
        xs = [self.view.read(self._store_reader(), b.rows) if b.rows.size
              else torch.zeros((0,) + tuple(self.view.output_shape))]
        ys = [self.labels[b.rows]]
        src = [np.full(b.rows.size, SOURCE_STORE)]
        idx = [b.rows]
        for j, (source, rows) in enumerate(zip(self.sources, b.extra)):
            if rows.size == 0:
                continue
            # Pool rows are dealt at random: read them sorted, then restore the order.
            uniq, inverse = sorted_unique(rows)
            block = self.shards[j].read([source.inputs], rows=uniq, file=self._shard_file(j))[source.inputs]
            xs.append(torch.from_numpy(block if inverse is None else block[inverse]).float().clamp_(0.0, 1.0))
            ys.append(self.extra_labels[j][rows])
            src.append(np.full(rows.size, j + 1))
            idx.append(rows)
        x = xs[0] if len(xs) == 1 else torch.cat(xs)
        return (x, torch.from_numpy(np.concatenate(ys)), torch.from_numpy(np.concatenate(src).astype(np.int64)),
                torch.from_numpy(np.concatenate(idx)))

    @property
    def profile(self) -> RowProfile:
        if self._profile is None:
            self._profile = row_profile(self.view)
        return self._profile

    def _augment(self, batch: dict[str, torch.Tensor], aug: Augmentation, mix: MixPlan | None, epoch: int,
                 i: int, total: int, read: np.ndarray | None, wanted: np.ndarray | None) -> dict[str, torch.Tensor]:
        """Gain (every sample read), mixing (``wanted`` with their partners), masks (``wanted``).

        Every draw is made for the ``total`` positions of the global batch; a sample takes
        those of its position (see :mod:`advaudio.augment`).
        """
        x = batch["x"]
        positions = np.arange(total, dtype=np.int64) if read is None else read  # of the rows of x
        if aug.gain_db > 0:
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, i, GAIN_PURPOSE))
            gains = draw_gains(total, aug.gain_db, g)[torch.from_numpy(positions)]
            rows = self._augmented_rows(batch["source"], aug)
            x[rows] = apply_gain_(x[rows], gains[rows], self.profile)
        if mix is not None:
            own = torch.from_numpy(np.searchsorted(positions, wanted))
            partner = torch.from_numpy(np.searchsorted(positions, mix.partner[wanted]))
            weight = torch.from_numpy(mix.weight[wanted])
            y = batch["y"]
            batch = {k: v[own] for k, v in batch.items()}
            batch["x"] = mix_inputs(x[own], x[partner], weight, aug.mixing, self.profile)
            batch["target"] = mix_targets(y[own], y[partner], weight, len(self.store.classes))
            positions = wanted
        if aug.masks:
            x = batch["x"]
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, i, MASK_PURPOSE))
            draws = draw_masks(total, x.shape[-2], x.shape[-1], aug, g).take(torch.from_numpy(positions))
            rows = self._augmented_rows(batch["source"], aug)
            x[rows] = apply_masks_(x[rows], draws.take(rows))
        return batch

    @staticmethod
    def _augmented_rows(source: torch.Tensor, aug: Augmentation) -> torch.Tensor:
        """Rows that masks and gain apply to: store clips, and extra samples only with ``aug.extra``."""
        return torch.arange(source.numel()) if aug.extra else torch.nonzero(source == SOURCE_STORE).flatten()


class EpochBatchSampler(Sampler):
    """Yields ``(epoch, i)`` for every batch of the dataset's current epoch."""

    def __init__(self, dataset: StoreBatches):
        self.dataset = dataset

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.dataset.epoch
        return iter([(epoch, i) for i in range(len(self.dataset))])

    def __len__(self) -> int:
        return len(self.dataset)


def _worker_init(_worker_id: int) -> None:
    info = get_worker_info()
    if info is not None:  # drop anything inherited; the worker opens its own handles
        info.dataset._forget_handles()


def default_workers(device: str | torch.device = "cpu", *, cpus: int | None = None) -> int:
    """DataLoader workers for training on ``device``, sized to the CPUs this process may use.

    On CUDA the GPU computes and the CPUs only prepare batches: one worker per CPU
    but one (the training process feeds the GPU), at most 8 (more buys nothing once
    the GPU waits on no batch). On CPU none: the training process's threads already
    use every CPU for the model, and a worker process that takes one of them stalls
    all of torch's threads at every barrier (``benchmarks/bench_round.py`` on 2 busy
    cores: 0.62x a plain loop with one worker, 0.93x reading in the training process).
    ``cpus``: default :func:`advaudio.threads.choose_threads`' count.
    """
    if torch.device(device).type != "cuda":
        return 0

    n = choose_threads().threads if cpus is None else int(cpus)
    return max(1, min(8, n - 1))


def make_loader(dataset: StoreBatches, *, workers: int = 0, device: str | torch.device = "cpu",
                prefetch: int = 2) -> DataLoader:
    """A DataLoader over a batch-level dataset: ``batch_size=None``, persistent workers,
    pinned memory when the device is CUDA. Call ``dataset.set_epoch(e)`` before iterating."""
    if workers < 0:
        raise ParameterError(f"workers must be >= 0, got {workers}")
    device = torch.device(device)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=EpochBatchSampler(dataset),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=prefetch if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device, *,
              dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Copy a batch to ``device``; asynchronous from pinned memory on CUDA. ``dtype``: the
    model's floating type, which the inputs ``x`` are cast to (a float64 reference run)."""
    non_blocking = device.type == "cuda"
    out = {k: v.to(device, non_blocking=non_blocking) for k, v in batch.items()}
    if dtype is not None and out["x"].dtype != dtype:
        out["x"] = out["x"].to(dtype)
    return out
