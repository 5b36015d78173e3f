"""File primitives every writer shares: atomic commits, owner-named temporaries, checksums, strict JSON.

A file is written under a temporary name unique to its writer (host and
process id) and renamed when complete: the rename is the commit, so a killed
writer never leaves a file that is later taken as good, and two writers never
collide. A temporary is removed only once its owner is gone, so a second run
never deletes a live run's file. Checkpoints and results files use these too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import socket
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


def _host() -> str:
    # '-' separates the owner's parts; a host name keeps its dots.
    return socket.gethostname().replace("-", "_").replace("/", "_") or "localhost"


def tmp_path_for(path: str | os.PathLike) -> Path:
    """``NAME.tmp-HOST-PID``: a temporary sibling name owned by this process (two writers never collide)."""
    path = Path(path)
    return path.with_name(f"{path.name}{TMP_SUFFIX}-{_host()}-{os.getpid()}")


def tmp_owner(path: str | os.PathLike) -> tuple[str | None, int] | None:
    """(host, pid) of a temporary file's writer (host None in the older ``NAME.tmp-PID``); None if not one."""
    _, sep, owner = Path(path).name.rpartition(TMP_SUFFIX + "-")
    if not sep:
        return None
    host, _, pid = owner.rpartition("-")
    return (host or None, int(pid)) if pid.isdigit() else None


def _owner_alive(host: str | None, pid: int) -> bool:
    """Whether a temporary's writer may still run: another host's always may (it cannot be asked)."""
    if host is not None and host != _host():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a writer's uncommitted temporary file."""
    return TMP_SUFFIX in Path(path).name


def _reason(exc: BaseException) -> str:
    """One line saying why an I/O call failed ("No space left on device")."""
    if getattr(exc, "strerror", None):
        return exc.strerror
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _discard(tmp: Path) -> None:
    """Remove a failed writer's temporary (emptied first: frees a full disk even while open)."""
    with contextlib.suppress(OSError):
        os.truncate(tmp, 0)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(final: str | os.PathLike, *, errors: tuple[type[BaseException], ...] = (OSError,)):
    """Yield this process's temporary path for ``final``; commit it (fsync, rename) when the block succeeds.

    On any failure the temporary is removed; an ``errors`` exception (an I/O error: a
    full disk, a quota, a read-only directory) becomes a one-line StoreError naming
    ``final``, so no command ends in a traceback or leaves a file taken as good.
    """
    final = Path(final)
    tmp = tmp_path_for(final)
    try:
        yield tmp
        commit_file(tmp, final)
    except errors as exc:
        _discard(tmp)
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"cannot write {final}: {_reason(exc)}") from None
    except BaseException:
        _discard(tmp)
        raise


@contextlib.contextmanager
def h5_create(path: str | os.PathLike, **kwargs):
    """A new HDF5 file built in memory and written to ``path`` with plain file I/O when the block ends.

    HDF5 does not survive a failed write: after ENOSPC its close double-frees
    (SIGABRT ``free(): invalid pointer``) or crashes (SIGSEGV). Built in memory
    (the ``core`` driver, no backing store), the file meets the disk only through
    Python's ``write``, whose failure is an ordinary OSError; the caller
    (:func:`atomic_write`) removes the partial file. Files written so are a shard
    or master file: megabytes to a few hundred.
    """
    f = h5py.File(path, "w", driver="core", backing_store=False, **kwargs)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    with open(path, "wb") as fh:
        fh.write(image)


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


def json_text(obj: Any) -> str:
    """The text :func:`write_json_atomic` writes for ``obj`` (strict JSON, sorted keys, indented)."""
    return json.dumps(jsonable(obj), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``jsonable(obj)`` to ``path`` atomically (temporary file, fsync, rename)."""
    write_text_atomic(path, json_text(obj))


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_write(path) as tmp, open(tmp, "w") as fh:
        fh.write(text)


def remove_stale_tmp(directory: str | os.PathLike) -> int:
    """Delete temporary files whose writer is gone (killed); returns how many.

    A live writer's file (this host, its pid running), or one of another host, is left alone.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    removed = 0
    for p in directory.iterdir():
        owner = tmp_owner(p)
        if owner is None or _owner_alive(*owner):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, what: str):
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block.

    A second holder is refused at once with a StoreError saying who holds it: two
    runs writing one store would do the work twice. The lock is the kernel's
    (``flock``), so it goes with its process, even after ``kill -9``.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
                raise StoreError(f"another run ({holder}) is writing {what}; wait for it to finish "
                                 f"(it holds {path})") from None
            locked = False  # a file system without locks (some NFS): advisory, so go on unlocked
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def open_h5_read(path: str | os.PathLike) -> h5py.File:
    """Open an HDF5 file read-only.

    File locking is left to ``HDF5_USE_FILE_LOCKING`` (set it to ``FALSE`` on
    shared file systems without lock support); readers never write.
    """
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
