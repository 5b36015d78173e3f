"""``gaussian``: train on inputs with Gaussian noise of ``sigma`` added (the loss sees the inputs)."""

from __future__ import annotations

import torch

from advaudio.training import Defense


class GaussianNoise(Defense):
    name = "gaussian"

    def __init__(self, *, sigma: float = 0.1) -> None:
        self.sigma = float(sigma)

    def loss(self, model, x, y, *, step_context):
        # seeded by (seed, epoch, step, rank): a resumed run draws the same noise
        gen = torch.Generator().manual_seed(hash((step_context.seed, step_context.epoch, step_context.step,
                                                  step_context.rank)) & 0x7FFFFFFF)
        noisy = x + self.sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        output = model(noisy)
        step_context.output = output
        return step_context.criterion(output, y)
