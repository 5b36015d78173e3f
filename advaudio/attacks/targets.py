"""Target classes of targeted attacks (:func:`choose_targets`).

``"random"`` (default): for sample ``i`` a class drawn uniformly among the
``num_classes - 1`` other classes by a generator seeded with ``(seed, id_i)``
(``id_i`` defaults to the position; pass global ids to make targets independent of
slicing); ``"least-likely"``: the clean model's lowest-logit class.  Never the true
class.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advaudio.attacks._model import as_inputs, attack_mode, batched_logits, model_device
from advaudio.attacks.params import TARGET_RULES
from advaudio.errors import ParameterError

__all__ = ["choose_targets"]


def choose_targets(
    model: nn.Module | None,
    inputs: Any,
    labels: Any,
    *,
    rule: str = "random",
    num_classes: int | None = None,
    seed: int = 0,
    ids: Sequence[int] | np.ndarray | None = None,
    batch_size: int = 256,
) -> torch.LongTensor:
    """Target class per sample, never the true class (CPU LongTensor).

    ``"random"``: uniform over the other ``num_classes - 1`` classes, drawn by a
    generator seeded with ``(seed, ids[i])`` (``ids`` default to positions) — the same
    sample id always gets the same target, whatever the slicing; the model is not
    needed if ``num_classes`` is given.  ``"least-likely"``: the class with the lowest
    clean logit (the second lowest if that is the true class).
    """
    if rule not in TARGET_RULES:
        raise ParameterError(f"target_rule must be one of {TARGET_RULES}, got {rule!r}")
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    y = y.detach().cpu().long().reshape(-1)
    logits = None
    if rule == "least-likely" or num_classes is None:
        if model is None:
            raise ParameterError("choose_targets needs the model (or num_classes for 'random')")
        device = model_device(model)
        x = as_inputs(inputs, device)
        with attack_mode(model):
            logits = batched_logits(model, x, batch_size).cpu()
        num_classes = logits.shape[1] if num_classes is None else num_classes
    if num_classes < 2:
        raise ParameterError("targeted attacks need at least 2 classes")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ParameterError(f"labels must be in [0, {num_classes})")
    return targets_from(rule, y, logits, num_classes, seed, ids)


def targets_from(
    rule: str,
    labels: torch.Tensor,
    logits: torch.Tensor | None,
    num_classes: int,
    seed: int,
    ids: Sequence[int] | np.ndarray | None,
) -> torch.LongTensor:
    y = labels.cpu().long()
    n = len(y)
    if rule == "least-likely":
        assert logits is not None
        masked = logits.detach().cpu().float().clone()
        masked[torch.arange(n), y] = math.inf
        return masked.argmin(dim=1)
    ids_ = np.arange(n) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
    if len(ids_) != n:
        raise ParameterError(f"ids has {len(ids_)} entries for {n} labels")
    offsets = np.array(
        [np.random.default_rng([seed, int(i)]).integers(1, num_classes) for i in ids_],
        dtype=np.int64,
    )
    return (y + torch.from_numpy(offsets)) % num_classes

