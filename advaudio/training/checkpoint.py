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
    distributed: {world_size, backend, sync_batchnorm}

A resumed run needs no RNG state to continue exactly (every random choice is a
function of the seed and the epoch; see :mod:`advaudio.training`); the global
RNG states are saved anyway, and restored, for code that uses them between
epochs. A file of a newer ``format_version`` is refused with a StoreError
naming both versions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from advaudio.errors import StoreError
from advaudio.store import Store, commit_file, tmp_path_for
from advaudio.views import View

from .config import TrainConfig
from .distributed import Distributed, resolve_device
from .splits import FoldSplit

CHECKPOINT_FORMAT = "advaudio-checkpoint"
CHECKPOINT_VERSION = 1


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
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename); returns its path.

    ``model`` is the plain model (not its DistributedDataParallel wrapper);
    ``distributed`` describes the job that wrote it (default: one process).
    ``complete`` is ``epoch >= config.epochs``.
    """
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "epoch": int(epoch),
        "epochs": int(config.epochs),
        "complete": int(epoch) >= int(config.epochs),
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
    tmp = tmp_path_for(path)
    try:
        torch.save(obj, tmp)
        commit_file(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint at ``path`` as saved (tensors on the CPU), after checking its format and version."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or not weights-only
        raise StoreError(f"cannot read checkpoint {path}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise StoreError(f"{path} is not an advaudio checkpoint")
    if obj.get("format_version", 0) > CHECKPOINT_VERSION:
        raise StoreError(f"{path} has checkpoint format {obj['format_version']}; this advaudio reads up to "
                         f"{CHECKPOINT_VERSION}")
    return obj


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint: model rebuilt with ``model_from_config`` (eval mode, on ``device``),
    view, classes, store fingerprint, training configuration and history."""
    from advaudio.models import model_from_config

    obj = read_checkpoint(path)
    model = model_from_config(obj["model"]["config"])
    model.load_state_dict(obj["model"]["state_dict"])
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
        complete=bool(obj["complete"]),
        split=dict(obj.get("split") or {}),
        history=list(obj.get("history") or []),
        test=obj.get("test"),
        raw=obj,
    )
