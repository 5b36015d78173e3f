"""The checkpoint file format: its one writer (:func:`save_checkpoint`) and readers.

A checkpoint (``out_dir/checkpoint.pt``, rewritten atomically after every epoch)
is a dict of tensors and plain Python containers, strings and numbers only, so
``torch.load(path, weights_only=True)`` reads it::

    format ("advaudio-checkpoint"), format_version (1), epoch (completed), epochs, complete,
    model: {config, state_dict}, optimizer, scheduler, scaler (state dicts),
    rng: {torch, cuda, numpy, python}, view (View.to_dict(): names, sizes,
    normalisation statistics), classes, store: {fingerprint, path, dataset},
    train_config (TrainConfig.to_dict()), split (FoldSplit.summary(): row counts,
    test/val folds), history (per-epoch metrics), test (final test metrics, once
    complete), bn_recalibrated, torch_version,
    distributed: {world_size, backend, sync_batchnorm},
    ema: {decay, updates, weights} (only with weight averaging; the final save's
    model weights are then the average, see :mod:`.averaging`),
    plugins (only when the run used any: [{group, name, distribution, version}] of its
    model and defense plugins, see :mod:`advaudio.plugins`),
    sha256 (digest of everything else, see :func:`content_digest`)

``complete`` is true only in the final save, the one that carries the test
metrics (after BatchNorm recalibration): a run killed after its last epoch's
checkpoint is resumable, never mistaken for finished. ``sha256`` is checked
on every read, so a damaged file is refused instead of used; files written
before it existed (no ``sha256`` key) load unchecked.

A resumed run needs no RNG state to continue exactly (every random choice is a
function of the seed and the epoch; see :mod:`advaudio.training`); the global
RNG states are saved anyway, and restored, for code that uses them between
epochs. A file of a newer ``format_version`` is refused with a StoreError
naming both versions. A checkpoint of a plugin model whose distribution is not
installed is refused with one line naming the distribution (a PluginError).
"""

from __future__ import annotations

import hashlib
import pickle
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advaudio.errors import StoreError
from advaudio.plugins import require, used
from advaudio.store import Store
from advaudio.store.files import atomic_write
from advaudio.views import View

from .config import TrainConfig
from .distributed import Distributed, resolve_device
from .splits import FoldSplit

CHECKPOINT_FORMAT = "advaudio-checkpoint"
CHECKPOINT_VERSION = 1
#: The key of the content digest (optional in format 1: older files lack it).
DIGEST_KEY = "sha256"
#: What every checkpoint holds; a file without one of these is refused, not half-used.
REQUIRED_KEYS = ("epoch", "epochs", "model", "view", "classes", "store", "train_config")


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and everything needed to feed it.

    ``view.read(store_file, rows)`` gives the model's clean inputs; ``classes[i]``
    names logit ``i``.
    """

    path: Path
    model: torch.nn.Module
    view: View
    classes: list[str]
    store_fingerprint: str
    store_path: str
    config: dict[str, Any]
    epoch: int
    epochs: int
    complete: bool
    split: dict[str, Any]
    history: list[dict[str, Any]]
    test: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def test_fold(self) -> int | None:
        return self.split.get("test_fold")


def content_digest(obj: Mapping[str, Any]) -> str:
    """sha256 of a checkpoint's contents (every key but the digest's own), independent of pickling.

    Tensors count by dtype, shape and bytes; containers by structure (dict keys
    sorted), other values by type and ``repr`` (exact for floats). A flipped byte
    in the file changes a tensor or a value, so the digest no longer matches.
    """
    digest = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            digest.update(f"T{t.dtype}{tuple(t.shape)};".encode())
            if t.numel():
                digest.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, Mapping):
            digest.update(b"{")
            for key in sorted(x, key=lambda k: (type(k).__name__, repr(k))):
                feed(key)
                feed(x[key])
            digest.update(b"}")
        elif isinstance(x, (list, tuple)):  # a tuple may come back as a list: same digest
            digest.update(b"[")
            for v in x:
                feed(v)
            digest.update(b"]")
        else:
            digest.update(f"{type(x).__name__}:{x!r};".encode())

    feed({k: v for k, v in obj.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def _numpy_rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"bit_generator": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def rng_states() -> dict[str, Any]:
    """Global RNG states as weights-only-loadable values."""
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": _numpy_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
    }


def set_rng_states(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))


def save_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module,
    view: View,
    classes: Sequence[str],
    store: Store,
    config: TrainConfig,
    epoch: int,
    split: FoldSplit,
    history: Sequence[Mapping[str, Any]] = (),
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    test: Mapping[str, Any] | None = None,
    bn_recalibrated: bool = False,
    distributed: Mapping[str, Any] | None = None,
    ema: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename); returns its path.

    ``model`` is the plain model (not its DistributedDataParallel wrapper);
    ``distributed`` describes the job that wrote it (default: one process);
    ``ema``: the state of the run's weight average, if it keeps one.
    ``complete`` is ``epoch >= config.epochs`` *and* ``test`` given: only the
    final save of a run carries its test metrics.
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "epochs": int(config.epochs),
        "complete": int(epoch) >= int(config.epochs) and test is not None,
        "model": {"config": dict(model.config), "state_dict": state},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
        "rng": rng_states(),
        "view": view.to_dict(),
        "classes": list(classes),
        "store": {"fingerprint": store.fingerprint, "path": str(store.directory), "dataset": store.dataset},
        "train_config": config.to_dict(),
        "split": split.summary(),
        "history": [dict(h) for h in history],
        "test": dict(test) if test is not None else None,
        "bn_recalibrated": bool(bn_recalibrated),
        "torch_version": str(torch.__version__),
        "distributed": dict(distributed) if distributed is not None else Distributed().to_dict(),
    }
    if ema is not None:  # absent otherwise: a run without it writes the same file as before
        obj["ema"] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in ema.items()}
    plugins = training_plugins(model, config)
    if plugins:  # absent when there are none: files of built-in runs stay as they were
        obj["plugins"] = plugins
    obj[DIGEST_KEY] = content_digest(obj)
    # torch reports a failed write (a full disk) as a RuntimeError of its zip writer.
    with atomic_write(path, errors=(OSError, RuntimeError)) as tmp:
        torch.save(obj, tmp)
    return path


def training_plugins(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, str]]:
    """The plugins a run uses (its model's factory, its defense), as checkpoints and metrics record them."""

    return used([("advaudio.models", getattr(model, "config", {}).get("name")),
                 ("advaudio.defenses", config.defense)])


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as saved (tensors on the CPU), after checking its format and version."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects other than tensors and containers: never unpickled here
        raise StoreError(f"cannot read checkpoint {path}: it holds objects other than tensors and plain "
                         "containers (not an advaudio checkpoint, or damaged)") from None
    except Exception as exc:  # truncated, foreign, damaged
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"{path} is not an advaudio checkpoint")
    if obj.get("format_version", 0) > CHECKPOINT_VERSION:
        raise StoreError(f"{path} has checkpoint format {obj['format_version']}; this advaudio reads up to "
                         f"{CHECKPOINT_VERSION}")
    if DIGEST_KEY in obj and obj[DIGEST_KEY] != content_digest(obj):
        raise StoreError(f"checksum mismatch: checkpoint {path} is damaged (its contents differ from the "
                         "digest written with it)")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    model = obj.get("model")
    if not missing and not (isinstance(model, dict) and "config" in model and "state_dict" in model):
        missing = ["model.config/model.state_dict"]
    if missing:
        raise StoreError(f"checkpoint {path} lacks {', '.join(map(repr, missing))}: not a complete advaudio "
                         "checkpoint")
    return obj


def is_final(obj: Mapping[str, Any]) -> bool:
    """Whether a read checkpoint is its run's final save (complete, with test metrics).

    Files of earlier releases marked every save of the last epoch complete,
    also the one before BatchNorm recalibration and the test: the test entry tells.
    """
    return bool(obj.get("complete")) and obj.get("test") is not None and int(obj["epoch"]) >= int(obj["epochs"])


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint: model rebuilt with ``model_from_config`` (eval mode, on ``device``),
    view, classes, store fingerprint, training configuration and history."""
    from advaudio.models import model_from_config

    obj = read_checkpoint(path)
    # A plugin model that is not installed: one line naming its distribution, not "unknown model".
    require(obj.get("plugins") or [], where=f"checkpoint {path}", groups=("advaudio.models",))
    try:
        model = model_from_config(obj["model"]["config"])
        model.load_state_dict(obj["model"]["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # a model the file does not describe
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"checkpoint {path} holds no usable model: {first}") from None
    model.to(resolve_device(device)).eval()
    return Checkpoint(
        path=Path(path),
        model=model,
        view=View.from_dict(obj["view"]),
        classes=list(obj["classes"]),
        store_fingerprint=obj["store"]["fingerprint"],
        store_path=obj["store"]["path"],
        config=obj["train_config"],
        epoch=int(obj["epoch"]),
        epochs=int(obj["epochs"]),
        complete=is_final(obj),
        split=dict(obj.get("split") or {}),
        history=list(obj.get("history") or []),
        test=obj.get("test"),
        raw=obj,
    )
