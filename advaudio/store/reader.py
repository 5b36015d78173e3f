"""Reading a store's feature arrays: chunk-aligned, straight into caller buffers.

:class:`FeatureReader` is the reader of ``store.h5``'s virtual datasets (get
one with :meth:`advaudio.store.Store.reader`); it also reads any HDF5 file with
a ``features`` group. :func:`read_rows` and :func:`sorted_unique` are the
sorted, chunk-aligned reads every other array of the store (adversarial
shards) is read with.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advaudio.errors import ParameterError, StoreError
from advaudio.store.files import open_h5_read


# --------------------------------------------------------------------------- #
# Chunk-aligned reads
# --------------------------------------------------------------------------- #
def runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Consecutive runs of sorted ``rows`` as ``(position, start, stop)``."""
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [rows.size]])
    return [(int(a), int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, stops)]


def read_rows(dataset: h5py.Dataset, rows: np.ndarray | Sequence[int]) -> np.ndarray:
    """Read ``dataset[rows]`` for sorted, unique ``rows`` along the first axis.

    Each run of consecutive rows is one hyperslab read straight into the output
    buffer (``read_direct``); with one chunk per clip every read is
    chunk-aligned. Raises ParameterError when ``rows`` is not strictly
    increasing — callers sort first (see :func:`sorted_unique`).
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size > 1 and not np.all(np.diff(rows) > 0):
        raise ParameterError("read_rows needs strictly increasing row indices")
    n = dataset.shape[0]
    if rows.size and (rows[0] < 0 or rows[-1] >= n):
        raise ParameterError(f"row index out of range 0..{n - 1}: {int(rows[0])}..{int(rows[-1])}")
    out = np.empty((rows.size,) + tuple(dataset.shape[1:]), dtype=dataset.dtype)
    for pos, start, stop in runs(rows):
        dataset.read_direct(out, source_sel=np.s_[start:stop], dest_sel=np.s_[pos : pos + stop - start])
    return out


def sorted_unique(rows: Iterable[int]) -> tuple[np.ndarray, np.ndarray | None]:
    """``(unique sorted rows, inverse)``; ``inverse`` is None when ``rows`` was already so."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size <= 1 or np.all(np.diff(rows) > 0):
        return rows, None
    uniq, inverse = np.unique(rows, return_inverse=True)
    return uniq, inverse


class FeatureReader:
    """Reads store rows of feature arrays into caller buffers, chunk by chunk.

    ``store.h5`` holds each representation as a virtual dataset over the shard
    files. The reader resolves the mapping once (rows ``a:b`` → shard file,
    dataset, first row) and reads the shards directly. When a shard dataset is
    chunked one clip per chunk, unfiltered (no compression), native float32 —
    the featurize stage's default — a clip's chunk is a contiguous run of bytes
    in the shard file: its offset is taken from HDF5's chunk index (once per
    clip) and the bytes are copied from a read-only memory map of the shard
    straight into the clip's slot of the output buffer — no HDF5 selection, no
    type conversion, no intermediate copy; reading costs what copying from an
    in-memory array costs. (Shards are immutable once committed, so a mapping
    never sees a file change.) If mapping is not possible, the chunk is read
    with ``read_direct_chunk``; for other layouts (compressed shards, other
    chunk shapes, a plain dataset) HDF5 reads runs of consecutive rows as
    hyperslabs. Results are identical on every path.

    ``path`` is ``store.h5`` (see :meth:`advaudio.store.Store.reader`) or any
    HDF5 file with a ``features`` group. One reader per process: it keeps shard
    files open. Use it as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike):
        self._owned = open_h5_read(path)
        # A plain file may hold its arrays at the top level instead of in ``features``.
        self.group = self._owned["features"] if "features" in self._owned else self._owned
        self.base = Path(self.group.file.filename).resolve().parent
        self._segments: dict[str, list[tuple[int, int, h5py.Dataset | tuple[str, str], int]]] = {}
        self._files: dict[str, h5py.File] = {}
        self._fast: dict[int, bool] = {}
        self._datasets: dict[tuple[str, str], h5py.Dataset] = {}
        self._maps: dict[int, tuple[np.memmap, np.ndarray] | None] = {}
        self._mmaps: dict[str, np.memmap] = {}
        # Per (representation, segment): (dataset, fast?, chunk map), resolved once. The hot
        # loop then makes no h5py attribute lookups (each costs microseconds, per shard per batch).
        self._resolved: dict[tuple[str, int], tuple[h5py.Dataset, bool, Any]] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    # ---- lifecycle ----------------------------------------------------------- #
    def __enter__(self) -> FeatureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}
        self._segments = {}
        self._datasets = {}
        self._fast = {}
        self._maps = {}
        self._mmaps = {}
        self._resolved = {}
        self._shapes = {}
        if self._owned is not None:
            self._owned.close()
            self._owned = None

    def __contains__(self, name: str) -> bool:
        return name in self._shapes or name in self.group

    @property
    def names(self) -> list[str]:
        return list(self.group)

    def shape(self, name: str) -> tuple[int, ...]:
        shape = self._shapes.get(name)
        if shape is None:
            shape = self._shapes[name] = tuple(self.group[name].shape)
        return shape

    # ---- layout -------------------------------------------------------------- #
    def _source_file(self, file_name: str) -> h5py.File:
        if file_name == ".":
            return self.group.file
        path = Path(file_name)
        if not path.is_absolute():
            path = self.base / path
        key = str(path)
        f = self._files.get(key)
        if f is None:
            try:
                f = self._files[key] = h5py.File(path, "r")
            except OSError as exc:
                raise StoreError(f"cannot open shard {path}: {exc} (advaudio store info --verify)") from None
        return f

    def _plan(self, name: str):
        """``[(first row, stop row, dataset, first row in it)]`` covering the array."""
        plan = self._segments.get(name)
        if plan is not None:
            return plan
        if name not in self.group:
            raise StoreError(f"{self.group.file.filename} has no representation {name!r}; "
                             f"it has: {', '.join(self.group) or 'none'}")
        ds = self.group[name]
        plan = None
        if ds.is_virtual:
            plan = []
            for vmap in ds.virtual_sources():
                (v0, *vrest), (v1, *vend) = vmap.vspace.get_select_bounds()
                if vmap.src_space.get_select_type() == h5py.h5s.SEL_ALL:
                    s0, srest = 0, [0] * (ds.ndim - 1)
                else:
                    (s0, *srest), _ = vmap.src_space.get_select_bounds()
                full = all(a == 0 for a in vrest + srest) and tuple(b + 1 for b in vend) == ds.shape[1:]
                if not full:  # not a clip-wise mapping: let HDF5 resolve it
                    plan = None
                    break
                plan.append((v0, v1 + 1, (vmap.file_name, vmap.dset_name), s0))
            if plan is not None:
                plan.sort(key=lambda seg: seg[0])
        if plan is None:
            plan = [(0, ds.shape[0], ds, 0)]
        self._segments[name] = plan
        return plan

    def _dataset(self, ref) -> h5py.Dataset:
        if isinstance(ref, h5py.Dataset):
            return ref
        ds = self._datasets.get(ref)
        if ds is None:
            file_name, dset_name = ref
            ds = self._datasets[ref] = self._source_file(file_name)[dset_name]
        return ds

    @staticmethod
    def _key(ds: h5py.Dataset) -> tuple[str, str]:
        # Not id(ds): h5py hands out a new, short-lived object per lookup and ids get reused.
        return (ds.file.filename, ds.name)

    def _is_fast(self, ds: h5py.Dataset) -> bool:
        key = self._key(ds)
        fast = self._fast.get(key)
        if fast is None:
            fast = (
                not ds.is_virtual
                and ds.chunks == (1,) + tuple(ds.shape[1:])
                and ds.id.get_create_plist().get_nfilters() == 0
                and ds.dtype == np.dtype("=f4")
            )
            self._fast[key] = fast
        return fast

    def _chunk_map(self, ds: h5py.Dataset):
        """``(file mapping, per-row chunk byte offsets)`` of a fast dataset, or None.

        Offsets are looked up in HDF5's chunk index once per row (-1: not yet,
        -2: unusable, read through HDF5 instead).
        """
        key = self._key(ds)
        if key in self._maps:
            return self._maps[key]
        found = None
        if self._is_fast(ds) and ds.file.userblock_size == 0:
            path = ds.file.filename
            try:
                mm = self._mmaps.get(path)
                if mm is None:
                    mm = self._mmaps[path] = np.memmap(path, dtype=np.uint8, mode="r")
                # A plain ndarray view: slicing a np.memmap builds a memmap object per slice.
                found = (mm.view(np.ndarray), [-1] * ds.shape[0])  # a list: indexed by Python ints
            except (OSError, ValueError):
                found = None
        self._maps[key] = found
        return found

    def _resolve(self, name: str, k: int) -> tuple[h5py.Dataset, bool, Any]:
        """Segment ``k`` of ``name``: (dataset, fast?, chunk map or None), resolved once."""
        resolved = self._resolved.get((name, k))
        if resolved is None:
            ds = self._dataset(self._plan(name)[k][2])
            fast = self._is_fast(ds)
            resolved = self._resolved[(name, k)] = (ds, fast, self._chunk_map(ds) if fast else None)
        return resolved

    @staticmethod
    def _chunk_offset(ds: h5py.Dataset, r: int, expected: int, limit: int) -> int:
        """Byte offset of row ``r``'s chunk in its file, or -2 when it cannot be copied raw."""
        try:
            info = ds.id.get_chunk_info_by_coord((r,) + (0,) * (ds.ndim - 1))
        except (OSError, RuntimeError, ValueError):
            return -2
        ok = (info.byte_offset is not None and info.size == expected and info.filter_mask == 0
              and info.byte_offset + expected <= limit)
        return int(info.byte_offset) if ok else -2

    # ---- reading ------------------------------------------------------------- #
    def read_into(self, name: str, rows: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Read ``name[rows]`` (sorted, unique rows) into ``out`` ``(len(rows), ...)`` float32.

        ``out`` may be a view into a larger buffer as long as each sample's slice
        ``out[i]`` is contiguous (e.g. ``buffer[:, a:b, :]``).
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size > 1 and not np.all(np.diff(rows) > 0):
            raise ParameterError("FeatureReader needs strictly increasing row indices")
        plan = self._plan(name)
        total = plan[-1][1] if plan else 0
        if rows.size and (rows[0] < 0 or rows[-1] >= total):
            raise ParameterError(f"row index out of range 0..{total - 1}: {int(rows[0])}..{int(rows[-1])}")
        starts = np.array([seg[0] for seg in plan], dtype=np.int64)
        which = np.searchsorted(starts, rows, side="right") - 1
        contiguous = rows.size > 0 and out[0].flags.c_contiguous
        pending = np.ones(rows.size, dtype=bool)
        if contiguous:
            # The common case in one loop over the rows, Python ints only: each clip's chunk
            # bytes straight from the page cache (per-segment numpy calls cost more than the copy).
            expected = out[0].nbytes
            first = np.array([seg[3] - seg[0] for seg in plan], dtype=np.int64)
            for p, (k, r) in enumerate(zip(which.tolist(), (rows + first[which]).tolist())):
                ds, fast, mapped = self._resolve(name, k)
                if mapped is None:
                    continue
                mm, offsets = mapped
                offset = offsets[r]
                if offset == -1:
                    offset = offsets[r] = self._chunk_offset(ds, r, expected, mm.size)
                if offset >= 0:
                    np.copyto(out[p].reshape(-1).view(np.uint8), mm[offset : offset + expected])
                    pending[p] = False
        for k in np.unique(which[pending]):
            v0, _, ref, s0 = plan[int(k)]
            positions = np.flatnonzero((which == k) & pending)
            local = rows[positions] - v0 + s0
            ds, fast, _ = self._resolve(name, int(k))
            if fast and contiguous:  # chunks the memory map cannot serve: HDF5's raw chunk read
                expected = out[0].nbytes
                zeros = (0,) * (len(out.shape) - 1)
                dsid = ds.id
                for p, r in zip(positions, local):
                    target = out[p].reshape(-1).view(np.uint8)
                    try:
                        mask, data = dsid.read_direct_chunk((int(r),) + zeros, out=target)
                    except (OSError, RuntimeError, ValueError):  # e.g. an unallocated chunk
                        mask, data = 1, None
                    if mask != 0 or data is None or memoryview(data).nbytes != expected:
                        out[p] = ds[int(r)]
            else:
                for pos, start, stop in runs(local):
                    n = stop - start
                    block = np.empty((n,) + tuple(ds.shape[1:]), dtype=np.float32)
                    ds.read_direct(block, source_sel=np.s_[start:stop], dest_sel=np.s_[0:n])
                    out[positions[pos : pos + n]] = block
        return out
