"""Sealed files: every small file a stage trusts carries the sha256 of its own content.

The rule: a checksum recorded when a file is written, checked whenever a stage reads
it, and a one-line refusal naming the file when they differ. One mechanism serves
every such file — the digest lives *inside* the file, under the key ``sha256``, and
is computed over everything else the file holds:

* JSON documents (``metrics.json``, attack results, a study's ``cell.json``): a
  top-level key ``"sha256"``, the digest of the canonical JSON of the other keys
  (:func:`json_digest`: sorted keys, no spaces, strict JSON);
* ``store.h5``: an attribute ``sha256`` over its other attributes and the arrays a
  reader takes from it (:class:`ContentDigest`; see :mod:`advaudio.store.feature_store`),
  one of which is the digest of ``manifest.json``, so the manifest is covered too;
* checkpoints: the key ``sha256`` over every other value
  (:func:`advaudio.training.checkpoint.content_digest`, the rule's first user).

Why inside the file and not beside it (as the ``.sha256`` of an adversarial shard):
a file and its digest are committed by one rename, so no kill between two renames can
leave a good file with a stale digest (``metrics.json`` is rewritten after every
epoch, merged results on every merge); a copied or moved file carries its own check;
and a digest cannot be lost on its own. Why of the content and not of the bytes: a
file cannot hold the hash of its own bytes, and the content is what a reader uses —
the bytes of ``store.h5`` (an HDF5 file) change with the library that wrote them,
its labels and folds do not. Feature and adversarial shards keep their outside,
whole-file digests (manifest, sidecar): they are large and read lazily, so they are
hashed once and then trusted by size and modification time.

A file without the key was written before the rule (or had it removed on purpose
by someone who edited the file): it is read as before, and its values still pass
its reader's schema check (:mod:`advaudio.store.schema`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from advaudio.errors import DamagedFileError, StoreError
from advaudio.store.files import jsonable, write_text_atomic

__all__ = ["DIGEST_KEY", "ContentDigest", "json_digest", "parse_json_strict", "read_json_strict", "read_sealed_json", "seal",
           "set_aside", "write_sealed_json"]

#: Where a sealed file keeps its digest: a JSON key, an HDF5 attribute, a checkpoint key.
DIGEST_KEY = "sha256"


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def json_digest(obj: Mapping[str, Any]) -> str:
    """sha256 of a JSON object's canonical text, every key but :data:`DIGEST_KEY`.

    ``obj`` is what ``json.loads`` returns (the reader's view), so a writer seals the
    parsed form of what it writes (:func:`seal`): a value that JSON cannot keep exactly
    (a tuple, a path) is digested as it will be read back.
    """
    return hashlib.sha256(_canonical({k: v for k, v in obj.items() if k != DIGEST_KEY})).hexdigest()


def seal(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as strict JSON (:func:`~advaudio.store.files.jsonable`) with its digest under :data:`DIGEST_KEY`."""
    plain = json.loads(json.dumps(jsonable(dict(obj)), default=str, allow_nan=False))
    plain.pop(DIGEST_KEY, None)
    plain[DIGEST_KEY] = json_digest(plain)
    return plain


def write_sealed_json(path: str | os.PathLike, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``obj`` sealed (:func:`seal`) to ``path`` atomically; returns what was written."""
    sealed = seal(obj)
    write_text_atomic(path, json.dumps(sealed, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return sealed


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def read_json_strict(path: str | os.PathLike, *, what: str) -> Any:
    """The JSON value in ``path``; ``NaN``/``Infinity`` (not JSON, and never written here) refused.

    No file: a StoreError; a file that is not strict JSON (truncated, not text, ``NaN``):
    a DamagedFileError naming ``what`` and the file.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a directory, or a link to a device (/dev/zero reads forever)
        raise StoreError(f"{what} {path} is not a regular file (it resolves to {path.resolve()})")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"no {what} at {path}") from None
    except OSError as exc:
        raise StoreError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return parse_json_strict(raw, path=path, what=what)


def parse_json_strict(raw: bytes, *, path: str | os.PathLike, what: str) -> Any:
    """The JSON value of a file's bytes ``raw`` (read from ``path``), as :func:`read_json_strict`."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DamagedFileError(f"{what} {path} is damaged: not readable JSON ({reason})") from None


def read_sealed_json(path: str | os.PathLike, *, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` without its digest, after checking the digest when it has one.

    ``what`` names the kind of file in messages (``"metrics file"``). A file whose content
    differs from its digest, or that is not a JSON object, is a DamagedFileError; one
    without a digest (an earlier release's) is returned as it is.
    """
    data = read_json_strict(path, what=what)
    if not isinstance(data, dict):
        raise DamagedFileError(f"{what} {path} is damaged: not a JSON object")
    if DIGEST_KEY in data:
        recorded = data.pop(DIGEST_KEY)
        if recorded != json_digest(data):
            raise DamagedFileError(f"checksum mismatch: {what} {path} differs from the digest written with it "
                                   "(damaged, or edited: a file changed on purpose must lose its "
                                   f"{DIGEST_KEY!r} key)")
    return data


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a damaged file to ``NAME.damaged-<YYYYmmdd-HHMMSS>`` beside it (kept for a look, never read
    again) and return the new path; a stage then makes the file afresh."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        os.replace(path, target)
    except OSError as exc:
        raise StoreError(f"cannot set aside the damaged {path}: {exc.strerror or exc}") from None
    return target


class ContentDigest:
    """An incremental sha256 of named values (attributes, arrays) read from an HDF5 file.

    Values are fed in a fixed order by name; arrays count by dtype, shape and bytes,
    strings by their UTF-8 bytes, so the digest is that of what a reader sees and not
    of how the library laid it out on disk.
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def _bytes(self, data: bytes) -> None:
        self._hash.update(len(data).to_bytes(8, "little"))
        self._hash.update(data)

    def value(self, name: str, value: Any) -> None:
        """A scalar or string (an attribute): by name, type and ``repr``."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, np.generic):
            value = value.item()
        self._bytes(f"{name}={type(value).__name__}:{value!r}".encode())

    def array(self, name: str, array: np.ndarray) -> None:
        """A numeric array, or an array of strings (bytes or str items)."""
        array = np.asarray(array)
        if array.dtype == object or array.dtype.kind in "SU":
            self._bytes(f"{name}:strings{array.shape}".encode())
            for item in array.reshape(-1):
                self._bytes(item if isinstance(item, bytes) else str(item).encode())
        else:
            self._bytes(f"{name}:{array.dtype.str}{array.shape}".encode())
            self._bytes(np.ascontiguousarray(array).tobytes())

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
