"""The feature store: chunked HDF5 feature shards linked into one master file, and its manifest.

Layout of a store directory ``<cache>/<dataset>-<fingerprint>/``::

    store.h5            master file; exists only once the store is complete
    manifest.json       shards with clip counts and sha256 checksums, errors
    stamps.json         size and mtime of each shard when linked (the cheap check on open)
    featurize.lock      locked by the featurize run that writes the store (one at a time)
    shards/shard-NNNNN.h5
                        one file per featurize task (the only writer of it)
    adversarial/*.h5    adversarial shards written by the attack stage
                        (format: advaudio.store.adversarial)

``store.h5`` holds ``features/<name>`` as HDF5 virtual datasets over the
shards (shape ``(clips, bands, frames)``, float32, chunked per clip in the
shards), real arrays ``meta/{index,clip_id,label,fold,path}`` and
``errors/{index,clip_id,path,reason}``, and attributes ``classes`` (JSON list,
index = label), ``config`` (JSON of every parameter), ``fingerprint``,
``dataset``, ``format_version``, ``manifest_sha256`` (sha256 of ``manifest.json``'s
bytes) and ``sha256``, the digest of everything else it holds (:func:`master_digest`).

Integrity, checked whenever a store is opened: ``store.h5`` against its own digest
(its labels, folds, paths, classes and configuration decide which clips are test
clips), ``manifest.json`` against the digest in ``store.h5`` and its schema, every
feature shard against its sha256 in the manifest (cheaply: size and mtime first). A
chain, so one flipped byte anywhere is a one-line StoreError naming the file. A
``store.h5`` of an earlier release has no digests: it opens as before (its manifest
is still schema-checked), and ``advaudio featurize`` with the same arguments records
them (:mod:`advaudio.store.sealed` says why the digest lives inside the file).

Every file is written under a temporary name and renamed when complete, so a
killed writer never leaves a file that is later taken as good.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advaudio.errors import DamagedFileError, StoreError
from advaudio.store.adversarial import AdversarialShard, shard_paths
from advaudio.store.files import (
    atomic_write,
    h5_create,
    json_text,
    open_h5_read,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)
from advaudio.store.reader import FeatureReader
from advaudio.store.schema import Fields
from advaudio.store.sealed import DIGEST_KEY, ContentDigest, parse_json_strict

FORMAT_VERSION = 1
MASTER_NAME = "store.h5"
MANIFEST_NAME = "manifest.json"
#: Size and mtime of every shard as written: what the cheap check on open compares. Kept out of
#: the manifest, which stays a function of the data (a resumed run's equals a fresh run's).
STAMPS_NAME = "stamps.json"
#: Held (flock) by the featurize run writing the store.
LOCK_NAME = "featurize.lock"
SHARD_DIR = "shards"
#: The attribute of ``store.h5`` holding the sha256 of ``manifest.json``'s bytes.
MANIFEST_DIGEST_ATTR = "manifest_sha256"
_META = ("index", "clip_id", "label", "fold", "path")
_ERRORS = ("index", "clip_id", "path", "reason")

_STR = h5py.string_dtype()


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
    with atomic_write(path) as tmp, h5_create(tmp, track_order=True) as f:
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
    return sha256_file(path)


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
    with atomic_write(master) as tmp, h5_create(tmp, track_order=True) as f:
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
        # The master records the manifest's digest, then its own over everything it holds.
        text = json_text(manifest)
        f.attrs[MANIFEST_DIGEST_ATTR] = hashlib.sha256(text.encode()).hexdigest()
        f.attrs[DIGEST_KEY] = master_digest(f)
        # Manifest first, then the master: a store is complete iff store.h5 exists.
        write_text_atomic(store_dir / MANIFEST_NAME, text)
        write_json_atomic(store_dir / STAMPS_NAME, {rel: shard_stamp(store_dir / rel) for rel in shard_files})
    return master


def _virtual_sources(ds: h5py.Dataset) -> list[tuple[str, str, Any]]:
    """Where a virtual dataset's rows come from: (file, dataset, rows) per source."""
    if not ds.is_virtual:
        return []
    return [(m.file_name, m.dset_name, m.vspace.get_select_bounds()) for m in ds.virtual_sources()]


def master_digest(f: h5py.File, arrays: dict[str, np.ndarray] | None = None) -> str:
    """The content digest of ``store.h5``: its attributes (but :data:`~advaudio.store.sealed.DIGEST_KEY`),
    its ``meta`` and ``errors`` arrays, and each feature array's shape, dtype, fill value and sources.

    ``arrays`` (``"meta/label"`` → values) are those already read, so opening a store
    reads nothing twice.
    """
    arrays = arrays or {}
    digest = ContentDigest()
    for key in sorted(f.attrs):
        if key != DIGEST_KEY:
            digest.value(f"attr:{key}", f.attrs[key])
    for group, names in (("meta", _META), ("errors", _ERRORS)):
        for name in names:
            key = f"{group}/{name}"
            digest.array(key, arrays[key] if key in arrays else f[key][()])
    for name in sorted(f["features"]):
        ds = f["features"][name]
        # Plain Python values only: a numpy scalar's repr changes between numpy releases.
        sources = [[str(file), str(dset), [[int(x) for x in corner] for corner in bounds]]
                   for file, dset, bounds in _virtual_sources(ds)]
        digest.value(f"features/{name}", json.dumps([[int(n) for n in ds.shape], ds.dtype.str,
                                                     str(float(ds.fillvalue)), sources]))
    return digest.hexdigest()


def check_manifest(data: Any, path: Path) -> list[dict[str, Any]]:
    """The shard entries of a manifest, after checking its schema (DamagedFileError otherwise).

    A shard's ``file`` must be a relative path inside the store (a manifest never points
    elsewhere), its ``clips`` a count, its ``sha256`` a digest.
    """
    fields = Fields(data, path=path, what="manifest")
    fields.string("fingerprint")
    fields.string("dataset")
    fields.count("clips")
    fields.items("errors", optional=True)
    entries = []
    for entry in fields.objects("shards"):
        rel = entry.string("file", nonempty=True)
        if os.path.isabs(rel) or ".." in Path(rel).parts:
            entry.fail("file", f"must be a path inside the store, got {rel!r}")
        entry.count("clips")
        entry.sha256("sha256")
        entries.append(dict(entry.data))
    return entries


# --------------------------------------------------------------------------- #
# Reading a store
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class StoredRepresentation:
    """One feature array of a store: its name, per-clip shape, dtype and compression."""

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
    check : refuse a damaged store on open (the default): ``store.h5`` against the
        digest of its content, ``manifest.json`` against the digest in ``store.h5``
        and its schema, every feature shard against the manifest — a cheap check of
        size and modification time recorded when the shard was written, and its
        sha256 when those differ (once per process). A damaged file is a
        DamagedFileError (a StoreError) naming it. ``False`` (``store info
        --verify``) opens a damaged store anyway and lists what is wrong with it in
        :attr:`problems` (and :meth:`verify`).
    """

    def __init__(self, path: str | os.PathLike, *, check: bool = True):
        path = Path(path)
        if path.is_file() and path.name == MASTER_NAME:
            path = path.parent
        self.directory = path
        self.master = path / MASTER_NAME
        self.check = check
        #: What is wrong with the store, found on open (``check=False`` opens it anyway): short lines
        #: for ``store info --verify``. With ``check`` the first one is raised instead.
        self.problems: list[str] = []
        if not path.is_dir():
            raise StoreError(f"no feature store at {path}")
        if not self.master.is_file():
            what = "is not a regular file" if self.master.exists() else "does not exist"
            raise StoreError(
                f"{path} is not a complete feature store ({MASTER_NAME} {what}); "
                "rerun `advaudio featurize` with the same arguments to finish it"
            )
        self._read_master()
        manifest_path = path / MANIFEST_NAME
        self.manifest: dict[str, Any] = {}
        self.shard_entries: list[dict[str, Any]] = []
        try:
            if manifest_path.exists() and not manifest_path.is_file():
                raise StoreError(f"manifest {manifest_path} is not a regular file (it resolves to "
                                 f"{manifest_path.resolve()})")
            raw = manifest_path.read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {manifest_path}: {exc.strerror or exc}") from None
        recorded = self.recorded_digests.get(MANIFEST_DIGEST_ATTR)
        if recorded is not None and hashlib.sha256(raw).hexdigest() != recorded:
            self._damaged(f"checksum mismatch: {MANIFEST_NAME}",
                          f"checksum mismatch: {manifest_path} differs from the digest recorded in {MASTER_NAME}")
        try:
            self.manifest = parse_json_strict(raw, path=manifest_path, what="manifest")
            self.shard_entries = check_manifest(self.manifest, manifest_path)
            if self.manifest.get("fingerprint") != self.fingerprint:
                raise DamagedFileError(f"manifest {manifest_path} is damaged: its fingerprint "
                                       f"{self.manifest.get('fingerprint')!r} is not {MASTER_NAME}'s {self.fingerprint!r}")
            if sum(int(e["clips"]) for e in self.shard_entries) != len(self):
                raise DamagedFileError(f"manifest {manifest_path} is damaged: its shards hold "
                                       f"{sum(int(e['clips']) for e in self.shard_entries)} clips, "
                                       f"{MASTER_NAME} {len(self)}")
        except DamagedFileError as exc:
            self.manifest = self.manifest if isinstance(self.manifest, dict) else {}
            self.shard_entries = []
            self._damaged(f"{MANIFEST_NAME}: {str(exc).partition(' is damaged: ')[2] or exc}", str(exc))
        missing = [e["file"] for e in self.shard_entries if not (path / e["file"]).exists()]
        self.problems += [f"missing: {rel}" for rel in missing]
        if missing and check:
            raise StoreError(f"store {path} is missing shard files: {', '.join(missing[:5])}")
        for entry in self.shard_entries:
            file = path / entry["file"]
            if file.exists() and not file.is_file():
                self._damaged(f"not a regular file: {entry['file']}",
                              f"shard {file} is not a regular file (it resolves to {file.resolve()}); "
                              "the store is damaged")
        if check:
            try:
                stamps = json.loads((path / STAMPS_NAME).read_text()) if (path / STAMPS_NAME).is_file() else {}
            except (OSError, ValueError):
                stamps = {}  # a store of an earlier release, or stamps lost: every shard is hashed
            stamps = stamps if isinstance(stamps, dict) else {}
            for entry in self.shard_entries:
                stamp = stamps.get(entry["file"])
                check_shard_file(path / entry["file"], entry, stamp=stamp if isinstance(stamp, dict) else None,
                                 manifest=manifest_path)

    def _damaged(self, problem: str, message: str) -> None:
        """Record ``problem``; with ``check``, refuse the store with ``message`` (and how to find the rest)."""
        self.problems.append(problem)
        if self.check:
            raise DamagedFileError(f"{message}; the store is damaged "
                                   "(`advaudio store info --verify` lists every damaged file)")

    def _read_master(self) -> None:
        """Attributes and metadata of ``store.h5`` (small: read eagerly), checked against its digest."""
        arrays: dict[str, np.ndarray] = {}
        with open_h5_read(self.master) as f:
            try:
                a = f.attrs
                for key in ("classes", "config", "fingerprint", "dataset"):
                    if key not in a:
                        raise StoreError(f"{self.master} lacks attribute {key!r}; not a store.h5, or damaged")
                for group, names in (("meta", _META), ("errors", _ERRORS)):
                    for name in names:
                        arrays[f"{group}/{name}"] = f[f"{group}/{name}"][()]
                self.recorded_digests = {k: str(_attr_text(a[k])) for k in (DIGEST_KEY, MANIFEST_DIGEST_ATTR)
                                         if k in a}
                if DIGEST_KEY in a and master_digest(f, arrays) != self.recorded_digests[DIGEST_KEY]:
                    self._damaged(f"checksum mismatch: {MASTER_NAME}",
                                  f"checksum mismatch: {self.master} differs from the digest written into it")
                self.classes: list[str] = json.loads(_attr_text(a["classes"]))
                self.config: dict[str, Any] = json.loads(_attr_text(a["config"]))
                self.fingerprint: str = _attr_text(a["fingerprint"])
                self.dataset: str = _attr_text(a["dataset"])
                self.representations: dict[str, StoredRepresentation] = {}
                compression = self.config.get("storage", {}).get("compression")
                for name, ds in f["features"].items():
                    self.representations[name] = StoredRepresentation(
                        name, tuple(int(x) for x in ds.shape[1:]), str(ds.dtype), compression
                    )
            except (KeyError, ValueError, TypeError, AttributeError, OSError) as exc:
                # a dataset or attribute missing or of another kind: HDF5 said so in its own words
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DamagedFileError(f"{self.master} is damaged or not a store.h5 ({reason})") from None
        self.index = arrays["meta/index"]
        self.clip_ids = np.asarray([_attr_text(s) for s in arrays["meta/clip_id"]], dtype=object)
        self.labels = arrays["meta/label"]
        self.folds = arrays["meta/fold"]
        self.paths = np.asarray([_attr_text(s) for s in arrays["meta/path"]], dtype=object)
        self.errors = [
            {"index": int(i), "clip_id": _attr_text(c), "path": _attr_text(p), "reason": _attr_text(r)}
            for i, c, p, r in zip(arrays["errors/index"], arrays["errors/clip_id"], arrays["errors/path"],
                                  arrays["errors/reason"])
        ]
        lengths = {len(arrays[f"meta/{k}"]) for k in _META}
        if len(lengths) != 1 or any(len(r.shape) != 2 for r in self.representations.values()):
            raise DamagedFileError(f"{self.master} is damaged: its metadata arrays differ in length")

    @property
    def sealed(self) -> bool:
        """Whether ``store.h5`` carries its digests (written by this release; not by an earlier one)."""
        return DIGEST_KEY in self.recorded_digests

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

    def reader(self) -> FeatureReader:
        """A :class:`FeatureReader` on ``store.h5``: chunk-aligned reads of the feature arrays.

        One per process (it keeps shard files open); close it, or use it as a
        context manager.
        """
        return FeatureReader(self.master)

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
        """Recompute every checksum (store.h5, manifest, each shard); returns the problems found.

        Problems found on open (a damaged ``store.h5`` or manifest, a missing shard) come first.
        """
        problems = list(self.problems)
        entries = [(e["file"], e["sha256"]) for e in self.shard_entries
                   if (self.directory / e["file"]).is_file()]
        for shard in self.adversarial_shards():
            expected = AdversarialShard.recorded_sha256(shard) or "(no checksum file)"
            entries.append((str(shard.relative_to(self.directory)), expected))
        for rel, expected in entries:
            file = self.directory / rel
            if file.exists() and not file.is_file():  # a link to a device is never read (/dev/zero: forever)
                problems.append(f"not a regular file: {rel}")
            elif not file.is_file():
                problems.append(f"missing: {rel}")
            elif sha256_file(file) != expected:
                problems.append(f"checksum mismatch: {rel}")
        return problems

    def adversarial_shards(self) -> list[Path]:
        """Registered adversarial shards (complete files only; temporaries ignored)."""
        return shard_paths(self.directory)

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
            "shards": len(self.shard_entries),
            "adversarial_shards": [str(p.relative_to(self.directory)) for p in self.adversarial_shards()],
            "size_bytes": self.disk_bytes(),
            "errors": self.errors,
            "config": self.config,
        }


def _attr_text(value: Any) -> str:
    """An HDF5 string attribute or array item as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


# (path, size, mtime_ns) → sha256 already checked in this process: a shard is hashed at most once.
_CHECKED: dict[tuple[str, int, int], str] = {}


def shard_stamp(path: str | os.PathLike) -> dict[str, int]:
    """What the manifest records of a written shard for the cheap check: its size and mtime."""
    stat = Path(path).stat()
    return {"bytes": int(stat.st_size), "mtime_ns": int(stat.st_mtime_ns)}


def check_shard_file(path: Path, entry: dict[str, Any], *, stamp: dict[str, int] | None, manifest: Path) -> None:
    """StoreError unless shard ``path`` is the file its manifest ``entry`` describes.

    Unchanged size and mtime since it was linked (``stamp``) mean an untouched
    file (the cheap path); anything else — a rewrite, a copy, no stamp — costs
    one sha256. ``store info --verify`` hashes every file regardless.
    """
    stat = path.stat()
    if stamp and stat.st_size != stamp.get("bytes"):
        raise DamagedFileError(f"checksum mismatch: {path} has {stat.st_size} bytes, {stamp.get('bytes')} when written; "
                         "the store is damaged (`advaudio store info --verify` lists every damaged file)")
    if stamp and stamp.get("mtime_ns") == stat.st_mtime_ns:
        return
    key = (str(path), int(stat.st_size), int(stat.st_mtime_ns))
    if _CHECKED.get(key) == entry["sha256"]:
        return
    if sha256_file(path) != entry["sha256"]:
        raise DamagedFileError(f"checksum mismatch: {path} differs from its sha256 in {manifest}; the store is damaged "
                         "(`advaudio store info --verify` lists every damaged file)")
    _CHECKED[key] = entry["sha256"]


def check_same_store(store: Store, fingerprint: str | None, *, what: str) -> None:
    """StoreError unless ``fingerprint`` (recorded by ``what``) is ``store``'s.

    ``what`` names the file that records it, e.g. ``"checkpoint run/checkpoint.pt"``.
    A checkpoint or shard belongs to the store it was made from: the same
    fingerprint means the same features of the same clips.
    """
    if fingerprint != store.fingerprint:
        raise StoreError(f"{what} was made from store {fingerprint}, not from {store.directory} "
                         f"(store fingerprint {store.fingerprint})")
