"""The tiny classifier the attack tests share: a 2-layer CNN on 1×16×16 inputs holding a bright
square per class (4 classes), trained for about a second on one thread."""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 4


def make_data(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    x = torch.rand(n, 1, 16, 16, generator=gen) * 0.3
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, 0, r * 8 + 2 : r * 8 + 6, c * 8 + 2 : c * 8 + 6] += 0.6
    return x.clamp(0, 1), y


def make_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, NUM_CLASSES),
    )


def trained_model(*, held_out: int = 16) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (eval mode), trained with seed 0, and ``held_out`` clips it has not seen."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    xt, yt = make_data(512, gen)
    model = make_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        i = torch.randint(0, len(xt), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y = make_data(held_out, gen)
    return model, x, y
