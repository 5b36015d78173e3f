"""What every attack spec is: the interface the engine runs, and the context of one run.

An :class:`AttackSpec` describes one registered attack (name, kind, budget norms,
whether it can be targeted, its parameter dataclass) and attacks one chunk of
samples through Foolbox; the engine does everything around it (clean
classification, targets, chunking, seeding, verification, norms).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advaudio.attacks._model import BOUNDS, CountingModel, batched_logits
from advaudio.attacks.params import AttackConfig, AttackParams
from advaudio.attacks.results import Note


@dataclass
class AttackContext:
    """What the chunks of one run share: the counted Foolbox model and the starting-point pools."""

    fb: Any
    fmodel: Any
    counter: CountingModel
    model: nn.Module
    device: torch.device
    batch_size: int
    pool_x: torch.Tensor | None = None
    pool_pred: torch.Tensor | None = None
    noise_x: torch.Tensor | None = None
    noise_pred: torch.Tensor | None = None


class AttackSpec:
    """One registered attack; subclasses per family, parameters from ``params_type``."""

    params_type: ClassVar[type[AttackParams]] = AttackParams
    targetable: ClassVar[bool] = True
    description: ClassVar[str] = ""

    @property
    def name(self) -> str:
        return self.params_type.attack

    @property
    def kind(self) -> str:
        return self.params_type.kind

    @property
    def norms(self) -> tuple[str, ...]:
        """Allowed budget norms, the first is the default."""
        return self.params_type.norms

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "norm": self.norms[0],
            "norms": list(self.norms),
            "targetable": self.targetable,
            "description": self.description,
            "defaults": self.params_type().resolved().to_dict(),
        }

    def plan(self, config: AttackConfig) -> tuple[bool, list[Note]]:
        """Whether the run is targeted, and the notes that say so when it is not."""
        if config.targeted and not self.targetable:
            return False, [Note("untargeted", f"{self.name} cannot be targeted: ran untargeted")]
        return config.targeted, []

    def uses_pool(self, params: AttackParams) -> bool:
        """Whether the run needs a pool of candidate starting points."""
        return False

    def execute(
        self,
        run: AttackContext,
        x: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor | None,
        *,
        config: AttackConfig,
        epsilon: float | None,
        counters: dict[str, int],
    ) -> torch.Tensor:
        """Attack one chunk; returns adversarial inputs (verified by the caller)."""
        raise NotImplementedError

    def chunk_notes(self, counters: dict[str, int], config: AttackConfig) -> list[Note]:
        """Notes on the whole run from the ``counters`` its chunks filled."""
        return []

    @staticmethod
    def criterion(run: AttackContext, labels: torch.Tensor, targets: torch.Tensor | None) -> Any:
        if targets is not None:
            return run.fb.criteria.TargetedMisclassification(targets)
        return run.fb.criteria.Misclassification(labels)

    @staticmethod
    def verify(
        run: AttackContext, adv: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        """Success per sample by the (uncounted) model on float32 inputs in [0, 1]."""
        pred = batched_logits(run.model, adv.float().clamp(*BOUNDS), run.batch_size).argmax(1)
        return pred == targets if targets is not None else pred != labels
