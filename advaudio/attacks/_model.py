"""How the attacks call the model: eval mode with frozen weights, counted queries, seeding, checks.

*Queries* are per-sample model evaluations made by the attack (a batch of 16 is 16
queries), counted by wrapping the model's forward (:class:`CountingModel`);
``gradient_queries`` are those that were differentiated w.r.t. the input.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from advaudio.errors import ParameterError

BOUNDS = (0.0, 1.0)


class CountingModel(nn.Module):
    """Forwards to ``model`` and counts per-sample evaluations (and differentiated ones)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.queries = 0
        self.gradient_queries = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        self.queries += n
        if x.requires_grad and torch.is_grad_enabled():
            self.gradient_queries += n
        return self.model(x)


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and parameters that do not require grad, both restored afterwards.

    eagerpy's ``value_and_grad`` calls ``loss.backward()``, which would otherwise also
    compute (and accumulate into ``.grad``) every weight gradient at each step.
    """
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (Foolbox draws from it) without disturbing the caller's."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def chunk_seed(seed: int, chunk: int) -> int:
    """Seed of one chunk of a run (or of another stream, by a chunk number no run reaches)."""
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    outs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    if not outs:
        return torch.empty(0, 0, device=x.device)
    return torch.cat(outs).float()


def as_inputs(inputs: Any, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(inputs).detach().to(device=device, dtype=torch.float32)
    if x.ndim != 4:
        raise ParameterError(f"inputs must have shape (N, C, H, W), got {tuple(x.shape)}")
    if x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-6 or hi > 1 + 1e-6 or not (math.isfinite(lo) and math.isfinite(hi)):
            raise ParameterError(
                f"inputs must lie in [0, 1] (the attack bounds), got [{lo:.4g}, {hi:.4g}]"
            )
    return x.clamp(*BOUNDS).contiguous()


def as_labels(labels: Any, n: int, device: torch.device, what: str = "labels") -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    y = y.to(device=device, dtype=torch.long).reshape(-1)
    if len(y) != n:
        raise ParameterError(f"{what} has {len(y)} entries for {n} inputs")
    return y

