"""Where training runs: the device, the torchrun job, and batch norm over the global batch.

Under ``torchrun --nproc-per-node N [--nnodes M …] -m advaudio train …`` (the
environment holds ``WORLD_SIZE`` > 1, ``RANK``, ``LOCAL_RANK``),
:func:`advaudio.training.train` joins the process group itself
(:func:`setup_distributed`) — NCCL when the device is CUDA (each process on
``cuda:LOCAL_RANK``, whatever ``cuda:N`` says), gloo on CPU — wraps the model in
``DistributedDataParallel`` and leaves the group at the end, also on error (a
group the caller initialised is used and left alone).

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
* Validation and test folds are split across ranks (:meth:`Distributed.share`);
  confusion matrices and loss sums are all-reduced, as are the training loss,
  correct predictions and sample counts: metrics are global.
* Rank 0 alone writes ``checkpoint.pt``, ``metrics.json`` and progress output;
  a barrier after each write keeps the others from running ahead of it. All
  ranks read the same checkpoint to resume (multi-node: ``out_dir`` on a shared
  file system). The checkpoint holds the plain model's state dict (no
  ``module.`` prefix; the synchronised batch-norm layers have the same keys)
  and ``distributed: {world_size, backend, sync_batchnorm}``; ``metrics.json``
  has ``world_size``, and each epoch's record the world size that ran it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from advaudio.errors import ParameterError


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


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision type on ``device``: bfloat16 where the GPU computes in it
    (Ampere and later: float32's range, so no loss scaling), else float16; None off CUDA."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def needs_grad_scaler(device: torch.device, amp: bool) -> bool:
    """Whether training with ``amp`` on ``device`` scales the loss (float16 only: its range is small)."""
    return bool(amp) and amp_dtype(device) == torch.float16


def autocast(device: torch.device, enabled: bool):
    """Autocast to :func:`amp_dtype` on CUDA when ``enabled``; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=amp_dtype(device))
    return contextlib.nullcontext()


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

    def share(self, rows: np.ndarray) -> np.ndarray:
        """This rank's rows of an evaluation set (``rank::world``; all of them in one process)."""
        return rows[self.rank :: self.world_size] if self.enabled else rows

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


def is_sync_batchnorm(m: torch.nn.Module) -> bool:
    return isinstance(m, (CpuSyncBatchNorm, torch.nn.SyncBatchNorm))
