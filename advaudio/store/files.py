"""File primitives every writer shares: atomic commits, owner-named temporaries, checksums, strict JSON.

A file is written under a temporary name unique to its writer (process id)
and renamed when complete: the rename is the commit, so a killed writer never
leaves a file that is later taken as good, and two writers never collide.
Checkpoints and results files use these too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advaudio.errors import StoreError

TMP_SUFFIX = ".tmp"


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


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a writer's uncommitted temporary file."""
    return TMP_SUFFIX in Path(path).name


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


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    tmp = tmp_path_for(path)
    Path(tmp).write_text(text)
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
