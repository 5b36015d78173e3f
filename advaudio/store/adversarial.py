"""Adversarial shards: the one writer and reader of ``<store>/adversarial/<name>.h5``.

An adversarial shard holds one attack run's inputs in model space, beside the
feature store they were made from (public format, readable with plain h5py)::

    adversarial  (N, 1, H, W) float32 in [0, 1]   model-space inputs, chunked per sample
    clean_index  (N,) int64    row of the source clip in store.h5
    clip_id (str), fold, label, target (-1: untargeted), predicted (int64),
    attacked (clean prediction was correct), success (fooled at all),
    within_budget (fooled within the tuned budget) (bool),
    l1, l2, linf, snr_db (float64)
    minimal_budget (float64, optional) per-clip minimal ε of a fixed-budget attack's
                 per-clip search: the smallest ε found to fool the clip (+inf: never
                 fooled, nan: not attacked)
    minimal_budget_low (float64, optional, beside minimal_budget) the largest ε found
                 not to fool the clip: its minimal ε lies in (low, minimal_budget];
                 with the search's precision "clip" every bracket meets the tolerance,
                 with "quantile" only those near the budget (nan: not attacked)
    attrs (a :class:`ShardAttrs`): attack, attack_config, kind, norm, budget, fooling_rate,
           threshold, targeted, round, split, slice, checkpoint, checkpoint_sha256,
           store_fingerprint, view, test_fold, seed, versions, notes, search, results[,
           precision, budget_low][, domain, waveform_scale, tuning_rule]
           (+ merged_from, slice_budgets, budget_source[, slice_versions] in a merged shard)
    waveform (N, samples) float32, tuning (N,) float64 (waveform-domain shards only,
                 ``domain="waveform"``: the adversarial clips; ``adversarial`` is their
                 features through the view's front end)
    <name>.sha256   sha256 of the shard, committed before the shard itself

:class:`ShardAttrs` is the one reader and writer of the attributes: typed, each
checked when a shard is opened (a mistyped or out-of-range value is refused with
one line naming the shard and the attribute), and every one optional, since any
HDF5 file of model-space inputs opens too (``train --extra``) and shards of earlier
releases lack the newer ones. Values that are not scalars or strings
(configurations, lists) are stored as JSON text. The checksum sits beside each shard instead of
in the store's manifest, which concurrent attack jobs would race on; the
shard's rename is its registration. Names are built by :mod:`advaudio.layout`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advaudio import layout
from advaudio.errors import StoreError
from advaudio.store.files import atomic_write, h5_create, is_temporary, open_h5_read, sha256_file, write_text_atomic
from advaudio.store.reader import read_rows
from advaudio.store.results import KINDS, SPLITS, Note, notes_of
from advaudio.store.schema import Fields

ADVERSARIAL_DIR = "adversarial"
CHECKSUM_SUFFIX = ".sha256"

_STR = h5py.string_dtype()


def shard_paths(store_dir: str | os.PathLike) -> list[Path]:
    """Registered adversarial shards of a store, sorted (complete files only; temporaries ignored)."""
    directory = Path(store_dir) / ADVERSARIAL_DIR
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.h5") if not is_temporary(p))


def shard_path(store_dir: str | os.PathLike, name: str) -> Path:
    """``<store>/adversarial/<name>.h5`` (whether or not it exists)."""
    return Path(store_dir) / ADVERSARIAL_DIR / f"{name}.h5"


def decode_attr(value: Any) -> Any:
    """An HDF5 attribute as the Python value the writer was given.

    Bytes become str, numpy scalars Python scalars, and JSON text (what the
    writer made of lists and dicts, so it starts with ``[`` or ``{``) is parsed.
    """
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _encode_attr(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, np.generic)) else json.dumps(value)


#: How messages name a shard.
SHARD = "adversarial shard"


@dataclass(frozen=True)
class ShardAttrs:
    """Every attribute of an adversarial shard, typed (module docstring); None: not in the file.

    ``budget``, ``fooling_rate`` and ``budget_low`` may be NaN (no budget found, no clip
    attacked, no lower bound): HDF5 keeps NaN, and that is how shards have always said it.
    ``test_fold`` is -1 for a checkpoint without one. ``merged_from`` lists the slices of a
    merged shard (file, sha256, budget, fooling_rate, n_samples, n_attacked, results).
    Attributes this release does not know (a newer writer's) are kept in ``extra`` and
    written back.
    """

    attack: str | None = None
    attack_config: Mapping[str, Any] | None = None
    kind: str | None = None
    norm: str | None = None
    budget: float | None = None
    fooling_rate: float | None = None  # measured, within the budget
    threshold: float | None = None  # the fooling rate the budget was tuned to
    targeted: bool | None = None
    round: int | None = None
    split: str | None = None
    slice: tuple[int, int] | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    store_fingerprint: str | None = None
    view: Mapping[str, Any] | None = None  # View.to_dict() of the model space
    test_fold: int | None = None
    seed: int | None = None
    versions: Mapping[str, Any] | None = None
    notes: tuple[Note, ...] | None = None
    search: str | None = None
    results: str | None = None  # the results file that describes the shard
    precision: str | None = None
    budget_low: float | None = None
    merged_from: tuple[Mapping[str, Any], ...] | None = None
    slice_budgets: tuple[float, ...] | None = None
    budget_source: str | None = None
    slice_versions: tuple[Any, ...] | None = None
    #: the threat model (:data:`advaudio.layout.DOMAINS`; None: a shard written before it existed, the
    #: feature domain's); a waveform-domain shard also holds ``waveform`` (N, samples) float32 in [-B, B],
    #: the adversarial clips whose front end gives ``adversarial``, and ``tuning`` (N,) float64, each
    #: clip's frozen CQT tuning, when the view has a CQT and the store estimates it per clip
    domain: str | None = None
    waveform_scale: float | None = None  # waveform units per attack-space unit: 2B
    tuning_rule: str | None = None  # how the CQT tuning was held during the attack
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def threat_model(self) -> str:
        """The shard's domain, ``feature`` for a shard that does not say."""
        return self.domain or layout.DOMAINS[0]

    @property
    def sliced(self) -> bool:
        """Whether the shard is one slice of a job array (N > 1), which enters training only merged."""
        return self.slice is not None and self.slice[1] > 1

    @property
    def merged(self) -> bool:
        return self.merged_from is not None

    def to_attrs(self) -> dict[str, Any]:
        """The attributes as the writer stores them (JSON text aside), in the order of the fields."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None:
                continue
            if f.name == "notes":
                value = [n.to_json() for n in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], *, path: str | os.PathLike) -> ShardAttrs:
        """Decoded attributes (:func:`decode_attr`) of the shard ``path``, each checked
        (DamagedFileError naming the shard and the attribute)."""
        a = Fields(attrs, path=path, what=SHARD)
        opt = {"optional": True}
        v: dict[str, Any] = dict(
            attack=a.string("attack", nonempty=True, **opt), kind=a.string("kind", choices=KINDS, **opt),
            norm=a.string("norm", **opt), budget=a.number("budget", low=0.0, nan=True, **opt),
            fooling_rate=a.rate("fooling_rate", nan=True, **opt), threshold=a.rate("threshold", **opt),
            targeted=a.boolean("targeted", **opt), round=a.count("round", **opt),
            split=a.string("split", choices=SPLITS, **opt), checkpoint=a.string("checkpoint", **opt),
            checkpoint_sha256=a.sha256("checkpoint_sha256", **opt),
            store_fingerprint=a.string("store_fingerprint", **opt),
            test_fold=a.number("test_fold", low=-1, integer=True, **opt), seed=a.number("seed", integer=True, **opt),
            search=a.string("search", **opt), results=a.string("results", **opt),
            precision=a.string("precision", **opt), budget_low=a.number("budget_low", low=0.0, nan=True, **opt),
            budget_source=a.string("budget_source", **opt),
            domain=a.string("domain", choices=layout.DOMAINS, **opt),
            waveform_scale=a.number("waveform_scale", low=0.0, **opt),
            tuning_rule=a.string("tuning_rule", **opt),
        )
        for key in ("attack_config", "view", "versions"):
            m = a.mapping(key, **opt)
            v[key] = m.data if m is not None else None
        sl = a.items("slice", **opt)
        if sl is not None and not (len(sl) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in sl)
                                   and 0 <= sl[0] < sl[1]):
            a.fail("slice", f"must be [I, N] with 0 <= I < N, got {sl!r}")
        v["slice"] = tuple(sl) if sl is not None else None
        notes = a.items("notes", **opt)
        v["notes"] = notes_of(notes) if notes is not None else None
        merged = a.objects("merged_from", **opt) if "merged_from" in attrs else None
        v["merged_from"] = tuple(m.data for m in merged) if merged is not None else None
        budgets = a.items("slice_budgets", **opt)
        if budgets is not None and not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                           and (math.isnan(b) or b >= 0) for b in budgets):
            a.fail("slice_budgets", f"must be a list of budgets, got {budgets!r}")
        v["slice_budgets"] = tuple(budgets) if budgets is not None else None
        versions = a.items("slice_versions", **opt)
        v["slice_versions"] = tuple(versions) if versions is not None else None
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**v, extra={k: x for k, x in attrs.items() if k not in names})


@dataclass(frozen=True)
class AdversarialShard:
    """A committed adversarial shard: its path, decoded attributes and dataset names.

    Open one with :meth:`open`; arrays are read on demand with :meth:`read`.
    A file with only some of the datasets (any HDF5 file of model-space inputs)
    opens too; readers check for what they need.
    """

    path: Path
    attrs: ShardAttrs = field(repr=False)
    datasets: tuple[str, ...]
    size: int  # samples (rows of ``adversarial``; 0 when absent)

    @classmethod
    def open(cls, path: str | os.PathLike) -> AdversarialShard:
        path = Path(path)
        if not path.is_file():
            if path.exists():
                raise StoreError(f"adversarial shard {path} is not a regular file (it resolves to {path.resolve()})")
            raise StoreError(f"no adversarial shard at {path}")
        with open_h5_read(path) as f:
            raw = {key: decode_attr(value) for key, value in f.attrs.items()}
            names = tuple(f)
            size = int(f["adversarial"].shape[0]) if "adversarial" in f else 0
        return cls(path=path, attrs=ShardAttrs.from_attrs(raw, path=path), datasets=names, size=size)

    @property
    def name(self) -> str:
        """The shard's stem (see :func:`advaudio.layout.parse_shard_stem`)."""
        return self.path.stem

    def __contains__(self, key: str) -> bool:
        return key in self.datasets

    def open_file(self) -> h5py.File:
        """A read-only handle for repeated :meth:`read` calls (caller closes it; one per process)."""
        return open_h5_read(self.path)

    def read(self, keys: Sequence[str] | None = None, *, rows: np.ndarray | Sequence[int] | None = None,
             file: h5py.File | None = None) -> dict[str, np.ndarray]:
        """Datasets ``keys`` (default: all) as arrays; strings decoded to ``object`` arrays.

        ``rows`` (sorted, unique) reads only those samples, chunk-aligned;
        ``file`` is a handle from :meth:`open_file` to read through.
        """
        keys = list(self.datasets if keys is None else keys)
        missing = [k for k in keys if k not in self.datasets]
        if missing:
            raise StoreError(f"{self.path} has no dataset {', '.join(map(repr, missing))} (has {list(self.datasets)})")
        f = file if file is not None else self.open_file()
        try:
            out = {}
            for key in keys:
                ds = f[key]
                value = ds[:] if rows is None else read_rows(ds, rows)
                if h5py.check_string_dtype(ds.dtype) is not None:
                    value = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in value], dtype=object)
                out[key] = value
            return out
        finally:
            if file is None:
                f.close()

    def shape(self, key: str) -> tuple[int, ...]:
        with open_h5_read(self.path) as f:
            return tuple(f[key].shape)

    @staticmethod
    def recorded_sha256(path: str | os.PathLike) -> str | None:
        """The checksum written beside shard ``path``, None when there is none."""
        sidecar = Path(path).with_suffix(CHECKSUM_SUFFIX)
        return sidecar.read_text().strip() if sidecar.is_file() else None

    def verify(self) -> str:
        """The shard's sha256, after checking it against the recorded one (StoreError otherwise)."""
        expected = self.recorded_sha256(self.path)
        if expected is None:
            raise StoreError(f"{self.path} has no checksum file {self.path.with_suffix(CHECKSUM_SUFFIX).name}: "
                             "not a complete attack shard")
        digest = sha256_file(self.path)
        if digest != expected:
            raise StoreError(f"checksum mismatch: {self.path}")
        return digest


def write_adversarial_shard(
    store_dir: str | os.PathLike,
    name: str,
    *,
    arrays: Mapping[str, np.ndarray],
    attrs: ShardAttrs | Mapping[str, Any],
) -> Path:
    """Write ``adversarial/<name>.h5`` atomically: the rename registers it.

    ``arrays`` holds at least ``adversarial`` (N, C, H, W) float32 in model
    space, ``clean_index`` (store rows), ``label``, ``target`` and ``success``
    (module docstring); arrays of three or more axes are chunked per sample,
    ``object`` arrays are stored as strings. ``attrs`` (a mapping is read as
    :class:`ShardAttrs`, checked like a shard's) values that are not scalars or
    strings are stored as JSON. Returns the shard's path.
    """
    if not name or "/" in name or name.startswith("."):
        raise StoreError(f"invalid adversarial shard name {name!r}")
    final = shard_path(store_dir, name)
    if not isinstance(attrs, ShardAttrs):
        attrs = ShardAttrs.from_attrs(attrs, path=final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(final) as tmp:
        _write_shard(tmp, arrays=arrays, attrs=attrs)
        # Checksum first, then the shard: a registered shard always has its checksum.
        write_text_atomic(final.with_suffix(CHECKSUM_SUFFIX), sha256_file(tmp) + "\n")
    return final


def _write_shard(tmp: Path, *, arrays: Mapping[str, np.ndarray], attrs: ShardAttrs) -> None:
    with h5_create(tmp, track_order=True) as f:
        for key, value in attrs.to_attrs().items():
            f.attrs[key] = _encode_attr(value)
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.dtype == object:
                f.create_dataset(key, data=value, dtype=_STR)
            elif value.ndim >= 3:
                f.create_dataset(key, data=value, chunks=(1,) + value.shape[1:] if len(value) else None,
                                 track_times=False)
            else:
                f.create_dataset(key, data=value, track_times=False)
