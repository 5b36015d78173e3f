"""The train stage: a CNN on a view of a feature store, with checkpoints that resume exactly.

>>> cfg = TrainConfig(store="cache/esc10-…", view="stft", model="resnet18", test_fold=5)
>>> metrics = train(cfg, out_dir="cache/runs/resnet18-stft")
>>> evaluate("cache/runs/resnet18-stft/checkpoint.pt")["accuracy"]

Splits are by fold: the test fold is held out; the training folds are the
others; a validation set is either one more fold (``val_fold``) or a
stratified fraction of the training rows (``val_fraction``). The view's
normalisation is fitted on the training rows only.

Reproducibility and exact resume
--------------------------------
Every random choice is a pure function of ``(seed, epoch[, batch])``:

* model initialisation: ``torch.manual_seed(seed)`` before the model is built;
* batch composition and extra-source draws: a numpy generator seeded from
  ``(seed, epoch)`` (:func:`advaudio.data.plan_epoch`);
* time-shift augmentation: a torch generator seeded from ``(seed, epoch, batch)``,
  so it does not matter which DataLoader worker serves a batch;
* dropout and any other use of the global torch RNG: the global generator is
  reseeded from ``(seed, epoch)`` at the start of every epoch.

So a run resumed from the checkpoint of epoch ``e`` needs no RNG state to
continue exactly like an unbroken run: it restores weights, optimizer,
scheduler and GradScaler state and starts epoch ``e + 1`` with the same seeds.
(The global RNG states are saved anyway, and restored, for code that uses them
between epochs.) Exactness holds on CPU; CUDA kernels are not bitwise
deterministic.

Multi-process training (torchrun / DDP)
---------------------------------------
Under ``torchrun --nproc-per-node N [--nnodes M …] -m advaudio train …`` (the
environment holds ``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``), :func:`train`
joins the process group itself — NCCL when the device is CUDA (each process
on ``cuda:LOCAL_RANK``, whatever ``cuda:N`` says), gloo on CPU — wraps the
model in ``DistributedDataParallel`` and leaves the group at the end, also on
error (a group the caller initialised is used and left alone).

* ``batch_size`` is the global (effective) batch: every rank computes the same
  plan from ``(seed, epoch)`` and reads only its share of each batch (positions
  ``rank::world``; :mod:`advaudio.data`), so the steps are those of a
  single-process run with the same ``batch_size`` — same samples, same
  augmentation, same learning-rate schedule. The local loss is a sum divided by
  ``global batch / world``, so DDP's gradient average is the global batch mean
  even when shares differ in size (or are empty).
* Batch norm is synchronised (``torch.nn.SyncBatchNorm`` on CUDA; on CPU, where
  torch's SyncBatchNorm refuses to run, :class:`CpuSyncBatchNorm`): statistics,
  running statistics and gradients are those of the global batch. A DDP run
  therefore equals a single-process run with the same ``batch_size`` up to
  floating-point reduction order — and it can resume a checkpoint written by
  any world size. Dropout masks differ (each rank seeds its own from
  ``(seed, epoch, rank)``).
* Validation and test folds are split across ranks (rows ``rank::world``);
  confusion matrices and loss sums are all-reduced, as are the training loss,
  correct predictions and sample counts: metrics are global.
* Rank 0 alone writes ``checkpoint.pt``, ``metrics.json`` and progress output;
  a barrier after each write keeps the others from running ahead of it. All
  ranks read the same checkpoint to resume (multi-node: ``out_dir`` on a shared
  file system). The checkpoint holds the plain model's state dict (no
  ``module.`` prefix; the synchronised batch-norm layers have the same keys)
  and ``distributed: {world_size, backend, sync_batchnorm}``; ``metrics.json``
  has ``world_size``, and each epoch's record the world size that ran it.

Checkpoint (``out_dir/checkpoint.pt``, rewritten atomically after every epoch)
------------------------------------------------------------------------------
A dict of tensors and plain Python containers, strings and numbers only, so
``torch.load(path, weights_only=True)`` reads it::

    format, format_version, epoch (completed), epochs, complete,
    model: {config, state_dict}, optimizer, scheduler, scaler (state dicts),
    rng: {torch, cuda, numpy, python}, view (View.to_dict(): names, sizes,
    normalisation statistics), classes, store: {fingerprint, path, dataset},
    train_config (TrainConfig.to_dict()), split (row counts, test/val folds),
    history (per-epoch metrics), test (final test metrics, once complete),
    bn_recalibrated, torch_version, distributed: {world_size, backend, sync_batchnorm}
"""

from __future__ import annotations

import contextlib
import json
import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from advaudio.data import ModelSpaceSource, StoreBatches, derive_seed, make_loader, to_device
from advaudio.errors import ParameterError, StoreError, check_known_fields
from advaudio.progress import progress_bar
from advaudio.store import Store, commit_file, remove_stale_tmp, tmp_path_for, write_json_atomic
from advaudio.views import DEFAULT_PERCENTILES, View, fit_view, parse_input_size, parse_view

CHECKPOINT_NAME = "checkpoint.pt"
METRICS_NAME = "metrics.json"
CHECKPOINT_FORMAT = "advaudio-checkpoint"
CHECKPOINT_VERSION = 1
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "constant")
# Fields that may change when a run is resumed (they do not change the result on CPU).
RESUME_MAY_CHANGE = ("store", "workers", "device")


# --------------------------------------------------------------------------- #
# Configuration
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; recorded in the checkpoint and metrics.

    Parameters
    ----------
    store : feature store directory
    view : representations joined by ``+``, e.g. ``"stft"`` or ``"dwt+chroma"``
    model : architecture name (``advaudio.models.list_models()``)
    width : channel-width multiplier of the model (1.0: the published widths)
    model_options : extra architecture options (e.g. ``{"dropout": 0.3}``)
    input_size : model input ``(H, W)``; None keeps the store's bands × frames
    test_fold : fold held out for testing; None: the highest fold of the store
    val_fold : a fold held out for validation (exclusive with ``val_fraction``)
    val_fraction : stratified fraction of the training rows held out for validation
    epochs, batch_size : length of the run and samples per step
    lr : peak learning rate (one-cycle) or the constant one
    weight_decay : AdamW's decoupled weight decay (SGD: L2)
    optimizer : ``"adamw"`` or ``"sgd"`` (Nesterov, momentum 0.9)
    schedule : ``"onecycle"`` (warm-up then cosine annealing, per step) or ``"constant"``
    warmup_fraction : share of the steps spent warming up (one-cycle ``pct_start``)
    label_smoothing : cross-entropy label smoothing in training
    time_shift : random circular roll along time, as a max fraction of the width
        (0.5 reaches every offset; 0 turns it off); training only
    percentiles : view normalisation percentiles (see :mod:`advaudio.views`)
    seed : seed of every random choice
    workers : DataLoader worker processes (0: read in the training process)
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``/``"cuda:N"``
    amp : mixed precision (float16 autocast + GradScaler) when on CUDA
    extra_sources : model-space inputs (adversarial shards) mixed into training batches
    mix : fraction of each training batch taken from ``extra_sources``
    init_checkpoint : start from this checkpoint's weights and view (fine-tuning)
    provenance : where the training data came from, recorded as given (retraining:
        the round, the parent checkpoint, each adversarial shard's attack and budget)
    recalibrate_bn : after the last epoch, recompute batch-norm running statistics
        with one pass over the training batches at the final weights (see :func:`recalibrate_bn`)
    """

    store: str
    view: str = "stft"
    model: str = "resnet18"
    width: float = 1.0
    model_options: dict = field(default_factory=dict)
    input_size: tuple[int, int] | None = (128, 128)
    test_fold: int | None = None
    val_fold: int | None = None
    val_fraction: float = 0.0
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    warmup_fraction: float = 0.3
    label_smoothing: float = 0.0
    time_shift: float = 0.5
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    amp: bool = True
    extra_sources: tuple[ModelSpaceSource, ...] = ()
    mix: float = 0.0
    init_checkpoint: str | None = None
    recalibrate_bn: bool = True
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)
        put("store", str(self.store))
        put("view", "+".join(parse_view(self.view)))
        put("model", str(self.model).strip().lower())
        put("input_size", parse_input_size(self.input_size))
        put("model_options", dict(self.model_options or {}))
        put("percentiles", tuple(float(p) for p in self.percentiles))
        put("extra_sources", tuple(ModelSpaceSource.from_dict(s) for s in self.extra_sources))
        if self.init_checkpoint is not None:
            put("init_checkpoint", str(self.init_checkpoint))
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("workers", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")
        for name in ("lr", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ParameterError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr <= 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")
        if not self.width > 0:
            raise ParameterError(f"width must be positive, got {self.width}")
        if self.optimizer not in OPTIMIZERS:
            raise ParameterError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ParameterError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        checks = (("val_fraction", 0, 1, True), ("warmup_fraction", 0, 1, False),
                  ("label_smoothing", 0, 1, True), ("time_shift", 0, 1, False), ("mix", 0, 1, True))
        for name, lo, hi, open_hi in checks:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and lo <= value and (value < hi if open_hi else value <= hi)):
                raise ParameterError(f"{name} must be in [{lo}, {hi}{')' if open_hi else ']'}, got {value!r}")
        if self.val_fold is not None and self.val_fraction > 0:
            raise ParameterError("give val_fold or val_fraction, not both")
        if self.val_fold is not None and self.val_fold == self.test_fold:
            raise ParameterError(f"val_fold and test_fold are both {self.val_fold}")
        if self.mix > 0 and not self.extra_sources:
            raise ParameterError("mix > 0 needs extra_sources")
        if self.extra_sources and self.mix == 0:
            raise ParameterError("extra_sources need mix > 0 (the fraction of each batch they fill)")
        resolve_device(self.device, check_available=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["percentiles"] = list(self.percentiles)
        d["extra_sources"] = [s.to_dict() for s in self.extra_sources]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        check_known_fields(cls, d, "training parameter(s)")
        return cls(**dict(d))


def resolve_device(device: str | torch.device, *, check_available: bool = True) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; ParameterError for CUDA without a GPU."""
    text = str(device).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise ParameterError(f"device must be auto, cpu or cuda[:N], got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ParameterError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if check_available and dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device 'cuda' asked for but torch sees no CUDA GPU (use --device cpu or auto)")
    return dev


# --------------------------------------------------------------------------- #
# Distributed training
# --------------------------------------------------------------------------- #
@dataclass
class Distributed:
    """This process's place in a (possibly one-process) training job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    owned: bool = False  # this module initialised the process group (and destroys it)
    comm_device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Sums of ``values`` over the ranks (float64; exact for counts below 2**53)."""
        t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.comm_device)
        if self.enabled:
            dist.all_reduce(t)
        return t.cpu().numpy()

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend, "sync_batchnorm": self.enabled}


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ParameterError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def setup_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the torchrun job this process belongs to (if any); returns it and the device to use.

    An existing default process group is used as it is; otherwise, with
    ``WORLD_SIZE`` > 1 in the environment, one is initialised from it (``env://``):
    NCCL for CUDA, gloo for CPU. On CUDA each process takes ``cuda:LOCAL_RANK``.
    """
    initialised = dist.is_available() and dist.is_initialized()
    world = dist.get_world_size() if initialised else env_world_size()
    if world <= 1:
        return Distributed(), device
    if not dist.is_available():
        raise ParameterError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ParameterError(f"LOCAL_RANK {local_rank} but torch sees {torch.cuda.device_count()} GPU(s); "
                                 "start at most one process per GPU (torchrun --nproc-per-node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owned = False
    if not initialised:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            dist.init_process_group(backend=backend, device_id=device)
        else:
            dist.init_process_group(backend=backend)
        owned = True
    backend = str(dist.get_backend())
    ctx = Distributed(world_size=dist.get_world_size(), rank=dist.get_rank(), local_rank=local_rank,
                      backend=backend, owned=owned,
                      comm_device=device if "nccl" in backend else torch.device("cpu"))
    return ctx, device


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over the ranks (the backward pass sums the gradients too)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g)
        return g


class CpuSyncBatchNorm(torch.nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of all ranks, for devices torch's SyncBatchNorm refuses (CPU).

    In training mode, inside a process group of more than one rank, the batch
    mean and (biased) variance are those of all ranks' samples together
    (two all-reduces: sums, then centred sums of squares; differentiable, so
    gradients flow across ranks as in a single large batch) and the running
    statistics are updated with them (unbiased variance) — identical on every
    rank. Otherwise it is plain batch norm. Same parameters, buffers and state
    dict keys as ``BatchNorm{1,2,3}d``.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        sync = (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)
        if not sync:
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        local_count = input.numel() // c if c else 0
        stats = _AllReduceSum.apply(torch.cat([input.sum(dims), input.new_tensor([float(local_count)])]))
        count = float(stats[c].detach())
        if count < 2:
            raise ValueError(f"expected more than 1 value per channel when training, got {int(count)} "
                             "over all ranks")
        mean = stats[:c] / count
        centred = input - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / count
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (count / (count - 1)), alpha=factor)
        return out


def convert_sync_batchnorm(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Batch-norm layers → synchronised ones (torch's on CUDA, :class:`CpuSyncBatchNorm` elsewhere).

    Parameters and buffers are moved, not copied (an optimizer built before still
    holds them); state dict keys do not change.
    """
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, (CpuSyncBatchNorm, torch.nn.SyncBatchNorm)):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
        if hasattr(module, "qconfig"):
            out.qconfig = module.qconfig
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out


def _is_sync_bn(m: torch.nn.Module) -> bool:
    return isinstance(m, (CpuSyncBatchNorm, torch.nn.SyncBatchNorm))


def _rows_share(rows: np.ndarray, ctx: Distributed) -> np.ndarray:
    return rows[ctx.rank :: ctx.world_size] if ctx.enabled else rows


# --------------------------------------------------------------------------- #
# Splits
# --------------------------------------------------------------------------- #
def split_rows(store: Store, config: TrainConfig) -> dict[str, Any]:
    """Train / validation / test rows by fold (see the module docstring)."""
    folds = store.fold_ids
    if len(folds) < 2:
        raise StoreError(f"store {store.directory} has only fold(s) {folds}; fold-based training needs two or more")
    test_fold = int(config.test_fold) if config.test_fold is not None else max(folds)
    test = store.select(folds=[test_fold])
    val = np.zeros(0, np.int64)
    if config.val_fold is not None:
        val = store.select(folds=[int(config.val_fold)])
        train_rows = store.select(exclude_folds=[test_fold, int(config.val_fold)])
    else:
        train_rows = store.select(exclude_folds=[test_fold])
        if config.val_fraction > 0:
            rng = np.random.default_rng(derive_seed(config.seed, 0x5A1))
            picked = []
            for label in np.unique(store.labels[train_rows]):
                members = train_rows[store.labels[train_rows] == label]
                k = int(round(config.val_fraction * members.size))
                k = min(max(k, 1), members.size - 1) if members.size > 1 else 0
                picked.append(rng.permutation(members)[:k])
            val = np.sort(np.concatenate(picked)) if picked else val
            train_rows = np.setdiff1d(train_rows, val)
    if train_rows.size == 0:
        raise StoreError(f"no training clips left in {store.directory} after holding out the test/validation folds")
    return {
        "train": train_rows,
        "val": val,
        "test": test,
        "test_fold": test_fold,
        "val_fold": config.val_fold,
        "train_folds": sorted(int(k) for k in np.unique(store.folds[train_rows])),
    }


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
@dataclass
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
    split: Mapping[str, Any],
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
        "split": _plain(split),
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


def _plain(split: Mapping[str, Any]) -> dict[str, Any]:
    """Split description without the row arrays (counts instead)."""
    out = {}
    for k, v in split.items():
        if isinstance(v, np.ndarray):
            out[f"{k}_clips"] = int(v.size)
        else:
            out[k] = v
    return out


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
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

    obj = _read_checkpoint(path)
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


# --------------------------------------------------------------------------- #
# Loss, metrics
# --------------------------------------------------------------------------- #
def _logits(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def _training_loss(output, y: torch.Tensor, smoothing: float, denominator: float | None = None) -> torch.Tensor:
    """Mean cross-entropy over the batch; with ``denominator``, the sum divided by it instead
    (a DDP share: sum / (global batch / world), so DDP's gradient average is the global mean)."""
    if denominator is None:
        ce = lambda logits: F.cross_entropy(logits, y, label_smoothing=smoothing)  # noqa: E731
    else:
        ce = lambda logits: F.cross_entropy(logits, y, label_smoothing=smoothing,  # noqa: E731
                                            reduction="sum") / denominator
    loss = ce(_logits(output))
    if hasattr(output, "aux1") and hasattr(output, "aux2"):  # GoogLeNet auxiliary heads, weight 0.3
        loss = loss + 0.3 * (ce(output.aux1) + ce(output.aux2))
    return loss


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


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def run_evaluation(model: torch.nn.Module, loader, dataset: StoreBatches | None, *, device: torch.device,
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
            batch = to_device(batch, device)
            with _autocast(device, amp):
                logits = _logits(model(batch["x"]))
            loss_sum += float(F.cross_entropy(logits.float(), batch["y"], reduction="sum"))
            pred = logits.argmax(1)
            confusion += torch.bincount((batch["y"] * c + pred).cpu(), minlength=c * c)
    if distributed is not None and distributed.enabled:
        total = distributed.all_reduce(np.concatenate([[loss_sum], confusion.numpy()]))
        loss_sum, confusion = float(total[0]), torch.from_numpy(np.rint(total[1:]).astype(np.int64))
    out = summarize_confusion(confusion.view(c, c).numpy(), classes)
    out["loss"] = loss_sum / max(out["n"], 1)
    return out


# --------------------------------------------------------------------------- #
# Training
# --------------------------------------------------------------------------- #
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
    synced = (any(_is_sync_bn(m) for m in layers) and dist.is_available() and dist.is_initialized()
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
            x = batch["x"].to(device, non_blocking=device.type == "cuda")
            n = x.shape[0]
            if synced:  # the batch is the global one: skip it, or not, on every rank alike
                count = torch.tensor([float(n)], dtype=torch.float64, device=comm)
                dist.all_reduce(count)
                n = int(count.item())
            if n < 2:
                continue
            with _autocast(device, amp):
                model(x)
            seen += n
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return seen


def _build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and normalisation parameters (1-D tensors).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def _build_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch),
            pct_start=config.warmup_fraction, anneal_strategy="cos",
            cycle_momentum=config.optimizer == "sgd",
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _check_resume(saved: Mapping[str, Any], config: TrainConfig, store: Store, path: Path) -> None:
    if saved["store"]["fingerprint"] != store.fingerprint:
        raise StoreError(f"{path} was trained on store {saved['store']['fingerprint']}, "
                         f"not on {store.directory} ({store.fingerprint})")
    now = config.to_dict()
    before = saved["train_config"]
    changed = sorted(k for k in set(now) | set(before)
                     if k not in RESUME_MAY_CHANGE and now.get(k) != before.get(k))
    if changed:
        detail = "; ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in changed)
        raise ParameterError(f"cannot resume {path} with different parameters ({detail}); "
                             "use another output directory for a new run")


def _metrics(config, store, view, model, split, history, test, device, ckpt_path, complete,
             distributed: Distributed | None = None) -> dict[str, Any]:
    train_seconds = sum(h["seconds"] for h in history)
    samples = sum(h["samples"] for h in history)
    out = {
        "complete": complete,
        "epochs_done": len(history),
        "epochs": config.epochs,
        "history": list(history),
        "samples_per_second": samples / train_seconds if train_seconds > 0 else None,
        "wall_seconds": train_seconds + (test or {}).get("seconds", 0.0),
        "device": str(device),
        "model": dict(model.config),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "view": view.to_dict(),
        "store": {"path": str(store.directory), "fingerprint": store.fingerprint, "dataset": store.dataset},
        "split": _plain(split),
        "config": config.to_dict(),
        "checkpoint": str(ckpt_path),
        "round": int(config.provenance.get("round", 0)),
        "world_size": (distributed or Distributed()).world_size,
        "distributed": (distributed or Distributed()).to_dict(),
    }
    if test is not None:
        out["test"] = dict(test)
        out["test_accuracy"] = test["accuracy"]
        out["per_class_accuracy"] = test["per_class_accuracy"]
        out["confusion_matrix"] = test["confusion_matrix"]
    if history and "val_accuracy" in history[-1]:
        out["val_accuracy"] = history[-1]["val_accuracy"]
    return out


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a model on a view of a store; returns the metrics also written to ``metrics.json``.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this with the same
    arguments; see "Multi-process training" in the module docstring. Every rank
    returns the same (global) metrics; rank 0 alone writes files.

    Parameters
    ----------
    config : the run (see :class:`TrainConfig`)
    out_dir : directory of ``checkpoint.pt`` and ``metrics.json``
    resume : continue from ``out_dir/checkpoint.pt`` if there is one (the parameters
        must be the same; the world size may differ); without it an existing checkpoint is an error
    progress : progress bars on standard error (rank 0 only)
    stop_after : stop once this many epochs are complete (the schedule still spans
        ``config.epochs``; a later ``resume`` finishes the run)
    callback : called after every training step with a dict (epoch, batch, batches, loss);
        under DDP on every rank, with the loss of that rank's share

    Raises
    ------
    StoreError : store or checkpoint missing, incompatible or damaged
    ParameterError : invalid parameters, or a checkpoint exists and ``resume`` is False
    """
    device = resolve_device(config.device)
    ctx, device = setup_distributed(device)
    try:
        return _train(config, ctx, device, out_dir=Path(out_dir), resume=resume, progress=progress,
                      stop_after=stop_after, callback=callback)
    finally:
        if ctx.owned and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, ctx: Distributed, device: torch.device, *, out_dir: Path, resume: bool,
           progress: bool, stop_after: int | None, callback) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from advaudio.models import create_model, model_from_config

    main = ctx.is_main
    progress = progress and main
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    if main:
        remove_stale_tmp(out_dir)
    store = Store(config.store)
    use_amp = bool(config.amp and device.type == "cuda")
    split = split_rows(store, config)

    saved = None
    if ckpt_path.exists():
        if not resume:
            raise ParameterError(f"{ckpt_path} already exists; pass --resume to continue that run "
                                 "or choose another output directory")
        saved = _read_checkpoint(ckpt_path)
        _check_resume(saved, config, store, ckpt_path)
        metrics_path = out_dir / METRICS_NAME
        if saved.get("complete") and int(saved["epoch"]) >= config.epochs and metrics_path.is_file():
            # A finished run is left byte for byte: attack shards are keyed by its sha256.
            ctx.barrier()
            return json.loads(metrics_path.read_text())
    ctx.barrier()  # every rank has decided on the same checkpoint before rank 0 may rewrite it

    init = None
    if config.init_checkpoint is not None and saved is None:
        init = _read_checkpoint(config.init_checkpoint)
        if init["store"]["fingerprint"] != store.fingerprint:
            raise StoreError(f"init checkpoint {config.init_checkpoint} was trained on store "
                             f"{init['store']['fingerprint']}, not on {store.directory} ({store.fingerprint})")

    # ---- view: from the checkpoint being resumed / fine-tuned, or fitted on the training rows
    if saved is not None or init is not None:
        view = View.from_dict((saved or init)["view"])
        if view.name != config.view or view.input_size != config.input_size:
            raise ParameterError(f"the checkpoint's view is {view.name} at {view.input_size}; "
                                 f"the configuration asks for {config.view} at {config.input_size}")
    else:
        view = fit_view(store, config.view, rows=split["train"], input_size=config.input_size,
                        percentiles=config.percentiles)
    view.check_store(store)

    # ---- model (the same initial weights on every rank: same seed, then DDP broadcasts rank 0's)
    torch.manual_seed(config.seed)
    model = create_model(config.model, in_channels=1, num_classes=store.num_classes, width=config.width,
                         **config.model_options)
    if init is not None:
        other = model_from_config(init["model"]["config"]).config
        if other != model.config:
            raise ParameterError(f"init checkpoint's model {other} differs from the configured {model.config}")
        model.load_state_dict(init["model"]["state_dict"])
    if saved is not None:
        model.load_state_dict(saved["model"]["state_dict"])
    min_size = getattr(model, "min_input_size", 1)
    if min(view.output_shape[1:]) < min_size:
        raise ParameterError(f"{config.model} needs inputs of at least {min_size}×{min_size}; the view gives "
                             f"{view.output_shape[1]}×{view.output_shape[2]} (raise --input-size)")
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    net: torch.nn.Module = model  # what the training step calls: the model or its DDP wrapper
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        model = convert_sync_batchnorm(model, device)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # ---- data: each rank reads its share of every global batch and of the evaluation folds
    train_ds = StoreBatches(store, view, split["train"], batch_size=config.batch_size, shuffle=True,
                            seed=config.seed, time_shift=config.time_shift,
                            extra_sources=config.extra_sources, mix=config.mix,
                            rank=ctx.rank, world_size=ctx.world_size)
    eval_bs = max(config.batch_size, 64)
    val_rows, test_rows = _rows_share(split["val"], ctx), _rows_share(split["test"], ctx)
    val_ds = StoreBatches(store, view, val_rows, batch_size=eval_bs) if val_rows.size else None
    test_ds = StoreBatches(store, view, test_rows, batch_size=eval_bs) if test_rows.size else None
    has_val = split["val"].size > 0
    train_loader = make_loader(train_ds, workers=config.workers, device=device)
    val_loader = make_loader(val_ds, workers=min(config.workers, 1), device=device) if val_ds else None

    optimizer = _build_optimizer(model, config)
    scheduler = _build_scheduler(optimizer, config, len(train_ds))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    recalibrated = False
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if use_amp and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])
        set_rng_states(saved["rng"])
        history = list(saved["history"])
        start_epoch = int(saved["epoch"])
        recalibrated = bool(saved.get("bn_recalibrated", False))

    classes = store.classes
    common = dict(model=model, view=view, classes=classes, store=store, config=config, split=split,
                  distributed=ctx.to_dict())

    def reseed(epoch: int) -> None:  # dropout & co: a function of (seed, epoch), and of the rank under DDP
        torch.manual_seed(derive_seed(config.seed, epoch, 3, *((ctx.rank,) if ctx.rank else ())))

    last = config.epochs if stop_after is None else min(config.epochs, int(stop_after))
    for epoch in range(start_epoch, last):
        reseed(epoch)
        train_ds.set_epoch(epoch)
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        t0 = time.perf_counter()
        bar = progress_bar(total=len(train_ds), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                           enabled=progress, leave=False)
        for step, batch in enumerate(train_loader):
            batch = to_device(batch, device)
            x, y = batch["x"], batch["y"]
            n = y.shape[0]
            denominator = train_ds.global_batch_size(epoch, step) / ctx.world_size if ctx.enabled else None
            with _autocast(device, use_amp):
                output = net(x)
                loss = _training_loss(output, y, config.label_smoothing, denominator)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_value = float(loss.detach())
            if denominator is None:
                loss_sum += loss_value * n
            else:  # the share's summed loss, and its mean for the callback
                loss_sum += loss_value * denominator
                loss_value = loss_value * denominator / max(n, 1)
            correct += int((_logits(output).detach().argmax(1) == y).sum())
            seen += n
            elapsed = time.perf_counter() - t0
            # refresh=False: the bar redraws on update() at its own pace (every 30 s in a log)
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}",
                            sps=f"{seen * ctx.world_size / max(elapsed, 1e-9):.0f}", refresh=False)
            bar.update(1)
            if callback is not None:
                callback({"epoch": epoch + 1, "batch": step + 1, "batches": len(train_ds), "loss": loss_value})
        bar.close()
        if ctx.enabled:  # global sums: the same numbers on every rank
            total = ctx.all_reduce([loss_sum, correct, seen])
            loss_sum, correct, seen = float(total[0]), int(round(total[1])), int(round(total[2]))
        seconds = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": float(scheduler.get_last_lr()[0]),
            "samples": seen,
            "seconds": seconds,
            "samples_per_second": seen / seconds if seconds > 0 else None,
            "world_size": ctx.world_size,
        }
        if has_val:
            v = run_evaluation(model, val_loader, val_ds, device=device, classes=classes, amp=use_amp,
                               distributed=ctx)
            record.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
        history.append(record)
        if main:
            save_checkpoint(ckpt_path, epoch=epoch + 1, history=history, optimizer=optimizer, scheduler=scheduler,
                            scaler=scaler, **common)
            write_json_atomic(out_dir / METRICS_NAME, _metrics(config, store, view, model, split, history, None,
                                                               device, ckpt_path, False, ctx))
        ctx.barrier()
        if progress:
            extra = f", val acc {record['val_accuracy']:.3f}" if "val_accuracy" in record else ""
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}, "
                       f"acc {record['train_accuracy']:.3f}{extra}, {record['samples_per_second']:.0f} samples/s",
                       file=sys.stderr)

    complete = len(history) >= config.epochs
    test = None
    if complete:
        t0 = time.perf_counter()
        if config.recalibrate_bn and not recalibrated:
            # The training distribution (augmentation, extra sources) on a plan no epoch used.
            reseed(config.epochs)
            train_ds.set_epoch(config.epochs)
            recalibrate_bn(model, train_loader, device=device, amp=use_amp)
            recalibrated = True
        test_loader = make_loader(test_ds, workers=min(config.workers, 1), device=device) if test_ds else None
        test = run_evaluation(model, test_loader, test_ds, device=device, classes=classes, amp=use_amp,
                              distributed=ctx)
        test["fold"] = split["test_fold"]
        test["seconds"] = time.perf_counter() - t0
        del test_loader
        if main:
            save_checkpoint(ckpt_path, epoch=len(history), history=history, optimizer=optimizer,
                            scheduler=scheduler, scaler=scaler, test=test, bn_recalibrated=recalibrated, **common)
    metrics = _metrics(config, store, view, model, split, history, test, device, ckpt_path, complete, ctx)
    if main:
        write_json_atomic(out_dir / METRICS_NAME, metrics)
    ctx.barrier()  # the files exist (and are final) when train() returns on any rank
    del train_loader, val_loader
    for ds in (train_ds, val_ds, test_ds):
        if ds is not None:
            ds.close()
    return metrics


# --------------------------------------------------------------------------- #
# Evaluation of a saved model
# --------------------------------------------------------------------------- #
def evaluate(
    checkpoint: str | Path | Checkpoint,
    *,
    store: str | Path | Store | None = None,
    fold: int | None = None,
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on one fold.

    Parameters
    ----------
    checkpoint : path of a checkpoint (or a loaded :class:`Checkpoint`)
    store : the feature store (default: the one recorded in the checkpoint); it must be
        the store the model was trained on (same fingerprint: same features of the same clips)
    fold : the fold to evaluate (default: the checkpoint's test fold)

    Raises
    ------
    StoreError : the store is not the checkpoint's (other fingerprint) or lacks the view's
        representations
    """
    dev = resolve_device(device)
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint, device=dev)
    ck.model.to(dev)
    s = store if isinstance(store, Store) else Store(store if store is not None else ck.store_path)
    if s.fingerprint != ck.store_fingerprint:
        missing = [n for n in ck.view.representations if n not in s.representations]
        raise StoreError(
            f"store {s.directory} has fingerprint {s.fingerprint}, but {ck.path} was trained on store "
            f"{ck.store_fingerprint} ({ck.store_path}); its features were computed from other parameters "
            "or clips, so the model's view and normalisation do not apply"
            + (f" (it also lacks {', '.join(missing)}; it has {', '.join(s.representations)})" if missing else "")
        )
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
