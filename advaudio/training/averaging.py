"""Weight averaging for evaluation: an exponential moving average (EMA) of the trained weights.

The average of the weights along the last part of training lies in a flatter,
better-generalising region than the last iterate (Polyak & Juditsky 1992; Izmailov
et al. 2018, SWA). :class:`WeightAverage` keeps ``w̄ ← d w̄ + (1 − d) w`` after every
optimizer step, with the warm-up ``d_t = min(d, (1 + t) / (10 + t))`` so that the
random initial weights are forgotten quickly. Only the trainable tensors are averaged;
batch-norm statistics of the averaged weights are recomputed at the end
(:func:`~advaudio.training.evaluation.recalibrate_bn`).

It is a function of the update count, saved in every checkpoint, so a resumed run
continues the same average; under DDP every rank holds the same weights after each
step, hence the same average.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from advaudio.errors import StoreError


class WeightAverage:
    """An EMA of ``model``'s trainable floating-point tensors (by name)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.updates = 0
        self.weights = {name: p.detach().clone() for name, p in model.named_parameters()
                        if p.requires_grad and p.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for name, p in model.named_parameters():
            avg = self.weights.get(name)
            if avg is not None:
                avg.mul_(d).add_(p.detach(), alpha=1.0 - d)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Put the averaged weights into ``model`` (its batch-norm statistics are left as they are)."""
        for name, p in model.named_parameters():
            if name in self.weights:
                p.copy_(self.weights[name])

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "weights": {k: v.detach().cpu() for k, v in self.weights.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        weights = state["weights"]
        if set(weights) != set(self.weights):
            raise StoreError("the checkpoint's weight average does not match the model's parameters")
        self.updates = int(state["updates"])
        for k, v in weights.items():
            self.weights[k].copy_(v)
