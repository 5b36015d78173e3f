"""What every attack spec is: the interface the engine runs, and the context of one run.

An :class:`AttackSpec` describes one registered attack (name, kind, budget norms,
whether it can be targeted, its parameter dataclass) and attacks one chunk of
samples through Foolbox; the engine does everything around it (clean
classification, targets, chunking, seeding, verification, norms).

Fixed-budget attacks have two entry points.  :meth:`AttackSpec.execute` attacks a
chunk at one ε (a run at a given budget, the bisection); :meth:`AttackSpec.perturb`
attacks clips each at its own ε, which the per-clip budget search
(:mod:`~advaudio.attacks.search`) calls with an ε tensor — so the search always runs
the attack's own step, never a stand-in.  A spec declares ``per_clip_epsilon = True``
when it implements ``perturb``; one that does not is bisected over the batch's
fooling rate (a note says so).  A plugin spec (:mod:`advaudio.plugins`) may implement
``perturb`` only: the default ``execute`` runs it at a constant ε.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advaudio.attacks._model import BOUNDS, CountingModel, batched_logits
from advaudio.attacks.params import FIXED_BUDGET, AttackConfig, AttackParams
from advaudio.attacks.results import Note
from advaudio.attacks.stepping import StepResult, unit_noise


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


@dataclass(frozen=True)
class StepContext:
    """What :meth:`AttackSpec.perturb` gets besides the clips: one batch of a per-clip ε search.

    Attributes:
        model: maps inputs in [0, 1] to logits; eval mode, weights frozen, queries counted.
        config: the run's configuration (``config.params``: the attack's parameters, resolved).
        noise: ``(N, ...)`` unit random-start draws, one per clip, seeded by the clip's id
            (:func:`~advaudio.attacks.stepping.unit_noise`) when the parameters have
            ``random_start`` true; else None.  Scaled by each clip's ε they make a start
            that does not depend on the batch, so job-array slices agree.
        early_stop: return each clip's first successful iterate and stop stepping it.
        full_margin: keep stepping successful clips (their output stays the first
            successful iterate) so that the margin is the best over every step; an attack
            may ignore it (the search then interpolates less well, never wrongly).
        steps: run this many steps instead of the parameters' own (the evaluation check
            "more steps no longer help"); None: the parameters'.
    """

    model: nn.Module
    config: AttackConfig
    noise: torch.Tensor | None = None
    early_stop: bool = True
    full_margin: bool = False
    steps: int | None = None


class AttackSpec:
    """One registered attack; subclasses per family, parameters from ``params_type``."""

    params_type: ClassVar[type[AttackParams]] = AttackParams
    targetable: ClassVar[bool] = True
    description: ClassVar[str] = ""
    #: Fixed-budget attacks: :meth:`perturb` takes one ε per clip (the per-clip search runs it).
    #: False: the attack takes one ε per call (:meth:`execute`) and its budget is bisected.
    per_clip_epsilon: ClassVar[bool] = False

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
            "per_clip_epsilon": bool(self.per_clip_epsilon),
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
        """Attack one chunk; returns adversarial inputs (verified by the caller).

        The default, for fixed-budget specs with :meth:`perturb`: that step at a constant ε
        (no early stopping: the last iterate, as Foolbox returns), random starts drawn from
        the chunk's seeded generator.
        """
        if not (self.per_clip_epsilon and self.kind == FIXED_BUDGET):
            raise NotImplementedError(f"{self.name} implements neither execute nor perturb")
        noise = None
        if getattr(config.params, "random_start", False):
            seeds = torch.randint(0, 2**31 - 1, (len(x),)).tolist()  # the engine seeds each chunk
            noise = unit_noise(tuple(x.shape[1:]), norm=config.params.norm, seeds=seeds, device=x.device)
        eps = torch.full((len(x),), float(epsilon), dtype=x.dtype, device=x.device)
        step = StepContext(model=run.counter, config=config, noise=noise, early_stop=False)
        return self.perturb(step, x, labels, targets, eps).adversarial

    def perturb(
        self,
        step: StepContext,
        x: torch.Tensor,
        labels: torch.Tensor,
        targets: torch.Tensor | None,
        epsilon: torch.Tensor,
    ) -> StepResult:
        """Attack clips ``x`` each within its own budget ``epsilon`` (shape ``(N,)``, in ``config.params.norm``).

        ``targets`` is None for an untargeted run (success: predicted != label).  Returns a
        :class:`~advaudio.attacks.stepping.StepResult`: the adversarial inputs (in [0, 1],
        within each clip's ε-ball), success of each, gradient steps each clip took and the
        best margin over the iterates (:func:`~advaudio.attacks.stepping.margins`: > 0 where
        the goal was reached), which the search uses to place its next probe.
        """
        raise NotImplementedError(f"{self.name} takes one ε per call (per_clip_epsilon is False)")

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
