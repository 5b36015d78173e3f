"""How well a model classifies: evaluation of a fold, of a saved checkpoint, and precise batch norm."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from advaudio.data import StoreBatches, make_loader, to_device
from advaudio.errors import ParameterError
from advaudio.models import Classifier
from advaudio.store import Store, check_same_store

from .checkpoint import Checkpoint, load_checkpoint
from .distributed import Distributed, autocast, is_sync_batchnorm, resolve_device


def summarize_confusion(confusion: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class accuracy (recall) and the confusion matrix (rows: true, columns: predicted)."""
    confusion = np.asarray(confusion, dtype=np.int64)
    n = int(confusion.sum())
    per_class = {}
    for i, name in enumerate(classes):
        total = int(confusion[i].sum())
        per_class[name] = float(confusion[i, i] / total) if total else None
    return {
        "n": n,
        "accuracy": float(np.trace(confusion) / n) if n else float("nan"),
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "classes": list(classes),
    }


def _floating_dtype(model: torch.nn.Module) -> torch.dtype:
    """The type of the model's weights (inputs are cast to it: float32, or a float64 reference run)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


@torch.no_grad()
def run_evaluation(model: Classifier, loader, dataset: StoreBatches | None, *, device: torch.device,
                   classes: Sequence[str], amp: bool = False,
                   distributed: Distributed | None = None) -> dict[str, Any]:
    """Accuracy, per-class accuracy, confusion matrix and mean loss of ``model`` on ``dataset``.

    With ``distributed`` (a job of several ranks), ``dataset`` is this rank's share
    (None or ``loader`` None: no rows) and the result is over all ranks' shares.
    """
    model.eval()
    c = len(classes)
    confusion = torch.zeros(c * c, dtype=torch.int64)
    loss_sum = 0.0
    if loader is not None and dataset is not None:
        dataset.set_epoch(0)
        for batch in loader:
            batch = to_device(batch, device, dtype=_floating_dtype(model))
            with autocast(device, amp):
                logits = model.main_logits(model(batch["x"]))
            loss_sum += float(F.cross_entropy(logits.float(), batch["y"], reduction="sum"))
            pred = logits.argmax(1)
            confusion += torch.bincount((batch["y"] * c + pred).cpu(), minlength=c * c)
    if distributed is not None and distributed.enabled:
        total = distributed.all_reduce(np.concatenate([[loss_sum], confusion.numpy()]))
        loss_sum, confusion = float(total[0]), torch.from_numpy(np.rint(total[1:]).astype(np.int64))
    out = summarize_confusion(confusion.view(c, c).numpy(), classes)
    out["loss"] = loss_sum / max(out["n"], 1)
    return out


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, loader, *, device: torch.device, amp: bool = False) -> int:
    """Recompute batch-norm running statistics as exact averages over ``loader`` ("precise BN").

    During training the running mean/variance are exponential averages of batch
    statistics taken while the weights were still moving; in short runs (few
    hundred steps, large learning rates) they lag behind the final weights and
    evaluation-mode accuracy can collapse although training-mode accuracy is
    high. One forward pass over the training batches at the final weights, with
    cumulative averaging, fixes that (Wu & Johnson, "Rethinking 'Batch' in
    BatchNorm", 2021). Returns the number of samples used; models without
    batch norm are left as they are.

    Synchronised batch norm in a job of several ranks (DDP; ``loader`` serves
    this rank's share of every batch, the same number of batches on every rank)
    averages over the global batches: every rank gets the same statistics, and
    the number returned is the global one.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return 0
    synced = (any(is_sync_batchnorm(m) for m in layers) and dist.is_available() and dist.is_initialized()
              and dist.get_world_size() > 1)
    comm = device if synced and "nccl" in str(dist.get_backend()) else torch.device("cpu")
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    was_training = model.training
    model.train()
    seen = 0
    try:
        for batch in loader:
            x = to_device(batch, device, dtype=_floating_dtype(model))["x"]
            n = x.shape[0]
            if synced:  # the batch is the global one: skip it, or not, on every rank alike
                count = torch.tensor([float(n)], dtype=torch.float64, device=comm)
                dist.all_reduce(count)
                n = int(count.item())
            if n < 2:
                continue
            with autocast(device, amp):
                model(x)
            seen += n
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return seen


def evaluate(
    checkpoint: str | Path | Checkpoint,
    *,
    store: str | Path | Store | None = None,
    fold: int | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    autoattack: str | Sequence[tuple[str, float]] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on one fold.

    Parameters
    ----------
    checkpoint : path of a checkpoint (or a loaded :class:`Checkpoint`)
    store : the feature store (default: the one recorded in the checkpoint); it must be
        the store the model was trained on (same fingerprint: same features of the same clips)
    fold : the fold to evaluate (default: the checkpoint's test fold)
    autoattack : AutoAttack's robust accuracy at these ``(norm, ε)`` (or ``"linf:8/255,l2:0.5"``):
        the standard version on every clip of the fold (:mod:`advaudio.attacks.autoattack`); the
        result's ``"autoattack"`` list holds ``norm, eps, robust_accuracy, ci_low, ci_high, n`` …
    seed : AutoAttack's seed

    Raises
    ------
    StoreError : the store is not the checkpoint's (other fingerprint) or lacks the view's
        representations
    """
    dev = resolve_device(device)
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device=dev)
    ck.model.to(dev)
    s = store if isinstance(store, Store) else Store(store if store is not None else ck.store_path)
    check_same_store(s, ck.store_fingerprint, what=f"checkpoint {ck.path}")
    ck.view.check_store(s)
    fold = ck.test_fold if fold is None else int(fold)
    if fold is None:
        raise ParameterError(f"{ck.path} records no test fold; pass a fold")
    rows = s.select(folds=[fold])
    ds = StoreBatches(s, ck.view, rows, batch_size=batch_size)
    loader = make_loader(ds, workers=workers, device=dev)
    t0 = time.perf_counter()
    result = run_evaluation(ck.model, loader, ds, device=dev, classes=ck.classes,
                            amp=bool(ck.config.get("amp", True) and dev.type == "cuda"))
    if autoattack:
        result["autoattack"] = _autoattack(ck, s, ds, autoattack, seed=seed, batch_size=batch_size)
    ds.close()
    result.update(
        checkpoint=str(ck.path),
        store=str(s.directory),
        store_fingerprint=s.fingerprint,
        fold=fold,
        model=ck.model.config if hasattr(ck.model, "config") else None,
        view=ck.view.name,
        epoch=ck.epoch,
        seconds=time.perf_counter() - t0,
    )
    return result


def _autoattack(ck: Checkpoint, store: Store, ds: StoreBatches, wanted, *, seed: int,
                batch_size: int) -> list[dict[str, Any]]:
    """AutoAttack robust accuracy of the checkpoint's model on every clip of ``ds``, per (norm, ε)."""
    from advaudio.attacks.autoattack import parse_autoattack, robust_accuracy

    pairs = parse_autoattack(wanted) if isinstance(wanted, str) else tuple((str(n), float(e)) for n, e in wanted)
    ds.set_epoch(0)
    xs, ys = [], []
    for i in range(len(ds)):
        batch = ds[(0, i)]
        xs.append(batch["x"])
        ys.append(batch["y"])
    x = torch.cat(xs) if xs else torch.zeros((0, *ds.view.output_shape))
    y = torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long)
    model = ck.model.float()
    return [robust_accuracy(model, x, y, norm=norm, eps=eps, num_classes=store.num_classes, seed=seed,
                            batch_size=max(batch_size, 1)).to_dict()
            for norm, eps in pairs]


def write_autoattack(checkpoint: str | Path, result: dict[str, Any]) -> Path:
    """Keep an evaluation's AutoAttack results beside the checkpoint (``autoattack.json``, sealed), where
    ``advaudio report`` finds them; one entry per (fold, norm, ε), a later evaluation replacing its own."""
    from advaudio.store import read_sealed_json, sha256_file, write_sealed_json

    checkpoint = Path(checkpoint)
    path = checkpoint.parent / AUTOATTACK_NAME
    sha = sha256_file(checkpoint)
    entries = []
    try:
        doc = read_sealed_json(path, what="AutoAttack results")
        if doc.get("checkpoint_sha256") == sha:
            entries = list(doc.get("autoattack") or [])
    except Exception:  # absent or damaged: rewritten
        entries = []
    fresh = [{**a, "fold": result["fold"]} for a in result.get("autoattack") or []]
    done = {(a["fold"], a["norm"], a["eps"]) for a in fresh}
    entries = [a for a in entries if (a.get("fold"), a.get("norm"), a.get("eps")) not in done] + fresh
    write_sealed_json(path, {"checkpoint": str(checkpoint), "checkpoint_sha256": sha, "autoattack": entries})
    return path


#: Where ``advaudio evaluate --autoattack`` keeps its results: beside the checkpoint.
AUTOATTACK_NAME = "autoattack.json"
