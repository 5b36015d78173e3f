"""The feature store: chunked HDF5 shards linked into one master file.

Layout of a store directory ``<cache>/<dataset>-<fingerprint>/``::

    store.h5            master file; exists only once the store is complete
    manifest.json       shards with clip counts and sha256 checksums, errors
    shards/shard-NNNNN.h5
                        one file per featurize task (the only writer of it)
    adversarial/*.h5    adversarial shards written by the attack stage

``store.h5`` holds ``features/<name>`` as HDF5 virtual datasets over the
shards (shape ``(clips, bands, frames)``, float32, chunked per clip in the
shards), real arrays ``meta/{index,clip_id,label,fold,path}`` and
``errors/{index,clip_id,path,reason}``, and attributes ``classes`` (JSON list,
index = label), ``config`` (JSON of every parameter), ``fingerprint``,
``dataset`` and ``format_version``.

Every file is written under a temporary name and renamed when complete, so a
killed writer never leaves a file that is later taken as good.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advaudio.errors import StoreError

FORMAT_VERSION = 1
MASTER_NAME = "store.h5"
MANIFEST_NAME = "manifest.json"
SHARD_DIR = "shards"
ADVERSARIAL_DIR = "adversarial"
TMP_SUFFIX = ".tmp"

_STR = h5py.string_dtype()


# --------------------------------------------------------------------------- #
# Small file utilities shared by every writer (checkpoints use them too).
# --------------------------------------------------------------------------- #
def fingerprint(obj: Any, *, length: int = 12) -> str:
    """Hash of a JSON-able object, stable across runs and machines."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sha256_file(path: str | os.PathLike, *, block: int = 1 << 22) -> str:
    """Hex sha256 digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tmp_path_for(path: str | os.PathLike) -> Path:
    """A temporary sibling name unique to this process (two writers never collide)."""
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_SUFFIX}-{os.getpid()}")


def commit_file(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """fsync ``tmp`` and atomically rename it to ``final``; the rename is the commit."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    with contextlib.suppress(OSError):  # directory fsync makes the rename durable
        dfd = os.open(Path(final).parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def jsonable(obj: Any) -> Any:
    """A strict-JSON copy: numpy scalars and arrays → Python, paths → str, NaN/inf → None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    return obj


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``jsonable(obj)`` to ``path`` atomically (temporary file, fsync, rename)."""
    tmp = tmp_path_for(path)
    with open(tmp, "w") as fh:
        json.dump(jsonable(obj), fh, indent=2, sort_keys=True, default=str, allow_nan=False)
        fh.write("\n")
    commit_file(tmp, path)


def remove_stale_tmp(directory: str | os.PathLike) -> int:
    """Delete temporary files left by killed writers; returns how many."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.iterdir() if TMP_SUFFIX + "-" in p.name]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return len(stale)


def open_h5_read(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only.

    File locking is left to ``HDF5_USE_FILE_LOCKING`` (set it to ``FALSE`` on
    shared file systems without lock support); readers never write.
    """
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None


# --------------------------------------------------------------------------- #
# Shards
# --------------------------------------------------------------------------- #
def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def write_feature_shard(
    path: str | os.PathLike,
    *,
    index: np.ndarray,
    clip_id: list[str],
    label: np.ndarray,
    fold: np.ndarray,
    clip_path: list[str],
    features: dict[str, np.ndarray],
    errors: list[tuple[int, str, str, str]],
    compression: str | None,
    attrs: dict[str, Any],
) -> str:
    """Write one featurize shard atomically and return its sha256.

    ``features[name]`` is ``(clips, bands, frames)`` float32; ``errors`` rows are
    ``(table index, clip id, path, reason)`` for clips that could not be used.
    """
    path = Path(path)
    tmp = tmp_path_for(path)
    with h5py.File(tmp, "w", track_order=True) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        meta = f.create_group("meta")
        meta.create_dataset("index", data=np.asarray(index, np.int64))
        meta.create_dataset("clip_id", data=np.asarray(clip_id, dtype=object), dtype=_STR)
        meta.create_dataset("label", data=np.asarray(label, np.int64))
        meta.create_dataset("fold", data=np.asarray(fold, np.int64))
        meta.create_dataset("path", data=np.asarray(clip_path, dtype=object), dtype=_STR)
        group = f.create_group("features")
        for name, array in features.items():
            # One chunk per clip: shuffled training reads whole clips at random.
            group.create_dataset(
                name,
                data=array,
                chunks=(1,) + array.shape[1:] if array.shape[0] else None,
                compression=compression,
                track_times=False,
            )
        err = f.create_group("errors")
        err.create_dataset("index", data=np.asarray([e[0] for e in errors], np.int64))
        for col, key in ((1, "clip_id"), (2, "path"), (3, "reason")):
            err.create_dataset(key, data=np.asarray([e[col] for e in errors], dtype=object), dtype=_STR)
    digest = sha256_file(tmp)
    commit_file(tmp, path)
    return digest


def read_shard_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Clip counts, shapes, errors and attributes of a finished shard."""
    with open_h5_read(path) as f:
        return {
            "clips": int(f["meta/index"].shape[0]),
            "index": f["meta/index"][:],
            "shapes": {k: tuple(d.shape[1:]) for k, d in f["features"].items()},
            "errors": [
                (int(i), c.decode(), p.decode(), r.decode())
                for i, c, p, r in zip(
                    f["errors/index"][:], f["errors/clip_id"][:], f["errors/path"][:], f["errors/reason"][:]
                )
            ],
            "attrs": dict(f.attrs),
        }


def link_master(
    store_dir: str | os.PathLike,
    shard_files: list[str],
    *,
    attrs: dict[str, Any],
    manifest: dict[str, Any],
    representations: list[str],
) -> Path:
    """Link finished shards into ``store.h5`` (virtual datasets) and write the manifest.

    Metadata is small and copied for real; features stay in the shards, so
    linking costs milliseconds whatever the store's size.
    """
    store_dir = Path(store_dir)
    meta: dict[str, list] = {k: [] for k in ("index", "clip_id", "label", "fold", "path")}
    errors: dict[str, list] = {k: [] for k in ("index", "clip_id", "path", "reason")}
    sources: list[tuple[str, int, dict[str, tuple[int, ...]]]] = []
    for rel in shard_files:
        with open_h5_read(store_dir / rel) as f:
            n = int(f["meta/index"].shape[0])
            for key in meta:
                values = f[f"meta/{key}"][:]
                meta[key].extend(v.decode() if isinstance(v, bytes) else v for v in values)
            for key in errors:
                values = f[f"errors/{key}"][:]
                errors[key].extend(v.decode() if isinstance(v, bytes) else v for v in values)
            sources.append((rel, n, {k: (tuple(d.shape[1:]), d.dtype) for k, d in f["features"].items()}))

    total = sum(n for _, n, _ in sources)
    master = store_dir / MASTER_NAME
    tmp = tmp_path_for(master)
    with h5py.File(tmp, "w", track_order=True) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        group = f.create_group("features")
        for name in representations:
            shapes = {s[2][name][0] for s in sources if name in s[2]}
            if len(shapes) > 1:
                raise StoreError(f"shards of {store_dir} disagree on the shape of {name}: {shapes}")
            shape = shapes.pop() if shapes else (0, 0)
            layout = h5py.VirtualLayout(shape=(total,) + shape, dtype=np.float32)
            start = 0
            for rel, n, _ in sources:
                if n:
                    layout[start : start + n] = h5py.VirtualSource(rel, f"features/{name}", shape=(n,) + shape)
                start += n
            # NaN fill: a missing shard reads as NaN, never as plausible zeros.
            group.create_virtual_dataset(name, layout, fillvalue=np.nan)
        mg = f.create_group("meta")
        mg.create_dataset("index", data=np.asarray(meta["index"], np.int64))
        mg.create_dataset("clip_id", data=np.asarray(meta["clip_id"], dtype=object), dtype=_STR)
        mg.create_dataset("label", data=np.asarray(meta["label"], np.int64))
        mg.create_dataset("fold", data=np.asarray(meta["fold"], np.int64))
        mg.create_dataset("path", data=np.asarray(meta["path"], dtype=object), dtype=_STR)
        eg = f.create_group("errors")
        eg.create_dataset("index", data=np.asarray(errors["index"], np.int64))
        for key in ("clip_id", "path", "reason"):
            eg.create_dataset(key, data=np.asarray(errors[key], dtype=object), dtype=_STR)
    # Manifest first, then the master: a store is complete iff store.h5 exists.
    write_json_atomic(store_dir / MANIFEST_NAME, manifest)
    commit_file(tmp, master)
    return master


# --------------------------------------------------------------------------- #
# Reading a store
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Representation:
    name: str
    shape: tuple[int, int]  # (bands, frames)
    dtype: str
    compression: str | None


class Store:
    """A complete feature store, opened read-only.

    Metadata (labels, folds, ids) is loaded eagerly — it is small; feature
    arrays are read on demand through :meth:`open` (one handle per process:
    never share an h5py handle across a fork).

    Parameters
    ----------
    path : directory of the store, or its ``store.h5``
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        if path.is_file() and path.name == MASTER_NAME:
            path = path.parent
        self.directory = path
        self.master = path / MASTER_NAME
        if not path.is_dir():
            raise StoreError(f"no feature store at {path}")
        if not self.master.is_file():
            raise StoreError(
                f"{path} is not a complete feature store (no {MASTER_NAME}); "
                "rerun `advaudio featurize` with the same arguments to finish it"
            )
        manifest_path = path / MANIFEST_NAME
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {manifest_path}: {exc}") from None
        missing = [s["file"] for s in self.manifest.get("shards", []) if not (path / s["file"]).is_file()]
        if missing:
            raise StoreError(f"store {path} is missing shard files: {', '.join(missing[:5])}")
        with open_h5_read(self.master) as f:
            a = f.attrs
            try:
                self.classes: list[str] = json.loads(a["classes"])
                self.config: dict[str, Any] = json.loads(a["config"])
                self.fingerprint: str = str(a["fingerprint"])
                self.dataset: str = str(a["dataset"])
            except KeyError as exc:
                raise StoreError(f"{self.master} lacks attribute {exc}") from None
            self.index = f["meta/index"][:]
            self.clip_ids = np.asarray([s.decode() for s in f["meta/clip_id"][:]], dtype=object)
            self.labels = f["meta/label"][:]
            self.folds = f["meta/fold"][:]
            self.paths = np.asarray([s.decode() for s in f["meta/path"][:]], dtype=object)
            self.errors = [
                {"index": int(i), "clip_id": c.decode(), "path": p.decode(), "reason": r.decode()}
                for i, c, p, r in zip(
                    f["errors/index"][:], f["errors/clip_id"][:], f["errors/path"][:], f["errors/reason"][:]
                )
            ]
            self.representations: dict[str, Representation] = {}
            compression = self.config.get("storage", {}).get("compression")
            for name, ds in f["features"].items():
                self.representations[name] = Representation(
                    name, tuple(int(x) for x in ds.shape[1:]), str(ds.dtype), compression
                )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return f"Store({str(self.directory)!r}, clips={len(self)}, representations={list(self.representations)})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def fold_ids(self) -> list[int]:
        return sorted(int(k) for k in np.unique(self.folds))

    def open(self) -> h5py.File:
        """A fresh read-only handle on ``store.h5`` (caller closes it)."""
        return open_h5_read(self.master)

    def select(self, *, folds: list[int] | None = None, exclude_folds: list[int] | None = None) -> np.ndarray:
        """Sorted row indices of the clips in ``folds`` (all when None) minus ``exclude_folds``."""
        mask = np.ones(len(self), bool)
        valid = set(self.fold_ids)
        for given in (folds or []) + (exclude_folds or []):
            if int(given) not in valid:
                raise StoreError(f"fold {given} does not exist in {self.directory} (folds: {sorted(valid)})")
        if folds is not None:
            mask &= np.isin(self.folds, folds)
        if exclude_folds:
            mask &= ~np.isin(self.folds, exclude_folds)
        return np.flatnonzero(mask)

    def read(self, name: str, rows: np.ndarray | slice | None = None) -> np.ndarray:
        """Read representation ``name`` for ``rows`` (sorted indices) into memory."""
        if name not in self.representations:
            raise StoreError(f"store {self.directory} has no representation {name!r} (has {list(self.representations)})")
        with self.open() as f:
            ds = f["features"][name]
            return ds[:] if rows is None else ds[rows]

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.rglob("*") if p.is_file())

    def verify(self) -> list[str]:
        """Recompute every file checksum in the manifest; returns the problems found."""
        problems = []
        entries = [(e["file"], e["sha256"]) for e in self.manifest.get("shards", [])]
        for shard in self.adversarial_shards():
            sidecar = shard.with_suffix(".sha256")
            expected = sidecar.read_text().strip() if sidecar.is_file() else "(no checksum file)"
            entries.append((str(shard.relative_to(self.directory)), expected))
        for rel, expected in entries:
            file = self.directory / rel
            if not file.is_file():
                problems.append(f"missing: {rel}")
            elif sha256_file(file) != expected:
                problems.append(f"checksum mismatch: {rel}")
        return problems

    def adversarial_shards(self) -> list[Path]:
        """Registered adversarial shards (complete files only; temporaries ignored)."""
        directory = self.directory / ADVERSARIAL_DIR
        if not directory.is_dir():
            return []
        return sorted(p for p in directory.glob("*.h5") if TMP_SUFFIX not in p.name)

    def info(self) -> dict[str, Any]:
        """Everything ``advaudio store info`` shows, as a JSON-able dict."""
        folds, counts = np.unique(self.folds, return_counts=True)
        return {
            "path": str(self.directory),
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "clips": len(self),
            "classes": self.classes,
            "folds": {int(k): int(v) for k, v in zip(folds, counts)},
            "representations": {
                r.name: {"shape": list(r.shape), "dtype": r.dtype, "compression": r.compression}
                for r in self.representations.values()
            },
            "shards": len(self.manifest.get("shards", [])),
            "adversarial_shards": [str(p.relative_to(self.directory)) for p in self.adversarial_shards()],
            "size_bytes": self.disk_bytes(),
            "errors": self.errors,
            "config": self.config,
        }



# --------------------------------------------------------------------------- #
# Adversarial shards
# --------------------------------------------------------------------------- #
def write_adversarial_shard(
    store_dir: str | os.PathLike,
    name: str,
    *,
    arrays: dict[str, np.ndarray],
    attrs: dict[str, Any],
) -> Path:
    """Write ``adversarial/<name>.h5`` atomically: the rename registers it.

    ``arrays`` holds at least ``adversarial`` (N, C, H, W) float32 in model
    space, ``index`` (store rows), ``label``, ``target`` and ``success``; attrs
    values that are not scalars or strings are stored as JSON. The file's
    sha256 is stored beside it (``<name>.sha256``) so ``verify`` can check it
    without a shared manifest that concurrent attack jobs would race on.
    """
    directory = Path(store_dir) / ADVERSARIAL_DIR
    directory.mkdir(parents=True, exist_ok=True)
    if not name or "/" in name or name.startswith("."):
        raise StoreError(f"invalid adversarial shard name {name!r}")
    final = directory / f"{name}.h5"
    tmp = tmp_path_for(final)
    with h5py.File(tmp, "w", track_order=True) as f:
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, int, float, bool, np.generic)) else json.dumps(value)
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.dtype == object:
                f.create_dataset(key, data=value, dtype=_STR)
            elif value.ndim >= 3:
                f.create_dataset(key, data=value, chunks=(1,) + value.shape[1:] if len(value) else None,
                                 track_times=False)
            else:
                f.create_dataset(key, data=value, track_times=False)
    digest = sha256_file(tmp)
    checksum = directory / f"{name}.sha256"
    ctmp = tmp_path_for(checksum)
    ctmp.write_text(digest + "\n")
    commit_file(ctmp, checksum)
    commit_file(tmp, final)
    return final
