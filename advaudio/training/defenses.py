"""Defenses: what the training step minimises, given the batch's *inputs* as well as its labels.

The training step (:mod:`advaudio.training.loop`) calls, for every batch::

    loss = defense.loss(net, x, y, step_context=context)

instead of ``model.training_loss(net(x), y)``, so a defense can perturb the inputs it
trains on (on-the-fly adversarial training: PGD-AT, TRADES, fast-AT) without the loop
knowing how.  ``net`` is what the step calls: the model, or under torchrun its
DistributedDataParallel wrapper (whose forward synchronises the gradients); inner
attack loops that must not go through the wrapper use ``context.classifier``.

Built-in: ``none``, clean training (exactly the step advaudio always ran).  The paper's
``shards`` defense, retraining on stored adversarial examples of the previous round,
is not a loss: it is the data (``TrainConfig.extra_sources``/``mix``, ``advaudio
retrain``) and combines with any defense here.

Plugins: entry-point group ``advaudio.defenses`` (:mod:`advaudio.plugins`), naming a
:class:`Defense` subclass or a factory ``f(**options)`` returning an object with
``loss``; the options are ``TrainConfig.defense_options`` (the keyword-only
parameters of the factory, or of the class's ``__init__``, with their defaults).
A defense must set ``context.output`` to the model output whose ``main_logits``
count as the batch's training accuracy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from advaudio.errors import ParameterError, PluginError
from advaudio.plugins import PluginInfo, Registry

__all__ = ["DEFENSES", "Defense", "NoDefense", "StepContext", "create_defense", "defense_options"]


@dataclass
class StepContext:
    """What one training step gives a defense besides the batch.

    Attributes:
        classifier: the plain model (``training_loss``, ``main_logits``; an attack's inner
            loop runs on it, not on the DDP wrapper).
        epoch, step: 0-based epoch and batch index (with ``seed`` and ``rank``: seeds for a
            defense's own random draws, so that a resumed run repeats them).
        seed: the run's seed.
        rank: the process's rank under torchrun (0 otherwise).
        label_smoothing: the run's label smoothing, applied by :meth:`criterion`.
        denominator: None for the batch mean; under DDP the summed loss is divided by it
            (a rank's share of the global mean), as :meth:`criterion` does.
        output: set by the defense: the output whose ``main_logits`` count as training accuracy.
    """

    classifier: torch.nn.Module
    epoch: int
    step: int
    seed: int
    rank: int = 0
    label_smoothing: float = 0.0
    denominator: float | None = None
    output: Any = None

    def criterion(self, output: Any, y: torch.Tensor) -> torch.Tensor:
        """The model's training loss of ``output`` against ``y``, with the run's smoothing and reduction."""
        return self.classifier.training_loss(output, y, label_smoothing=self.label_smoothing,
                                             denominator=self.denominator)


class Defense:
    """Base of the defenses: :meth:`loss` of one training batch."""

    name: ClassVar[str] = ""

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             step_context: StepContext) -> torch.Tensor:
        """The loss to minimise for inputs ``x`` with labels ``y``; sets ``step_context.output``."""
        raise NotImplementedError


class NoDefense(Defense):
    """``none``: clean training, the loss of the model's output on the batch itself."""

    name = "none"

    def loss(self, model, x, y, *, step_context):
        output = model(x)
        step_context.output = output
        return step_context.criterion(output, y)


def _plugin_factory(obj: Any, info: PluginInfo) -> Callable[..., Any]:
    if not callable(obj):
        raise PluginError(f"defense {info.name!r} from {info.describe()} is {type(obj).__name__}, not a Defense "
                          "class or a factory f(**options)")
    return obj


#: Defense name → a class or factory called with the run's ``defense_options``.
DEFENSES: Registry[Callable[..., Any]] = Registry("advaudio.defenses", {"none": NoDefense}, what="defense",
                                                  adapt=_plugin_factory)


def _factory(name: str) -> Callable[..., Any]:
    if name not in DEFENSES:
        raise ParameterError(f"unknown defense {name!r}; known: {', '.join(DEFENSES)}")
    return DEFENSES[name]


def defense_options(name: str) -> dict[str, Any]:
    """The options defense ``name`` takes (keyword-only parameters of its factory or ``__init__``), with defaults."""
    factory = _factory(name)
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: no declared options
        return {}
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_options(name: str, options: dict[str, Any]) -> None:
    """ParameterError naming the options defense ``name`` does not take, or a required one missing."""
    accepted = defense_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ParameterError(f"defense {name!r} has no option(s) {', '.join(unknown)}; its options: "
                             f"{', '.join(accepted) or 'none'}")
    missing = sorted(k for k, v in accepted.items() if v is inspect.Parameter.empty and k not in options)
    if missing:
        raise ParameterError(f"defense {name!r} needs option(s) {', '.join(missing)}")


def create_defense(name: str, **options: Any) -> Defense:
    """Build defense ``name`` with ``options`` (checked against what it takes)."""
    check_options(name, options)
    defense = _factory(name)(**options)
    if not callable(getattr(defense, "loss", None)):
        info = DEFENSES.plugin(name)
        source = f" from {info.describe()}" if info else ""
        raise PluginError(f"defense {name!r}{source} built {type(defense).__name__}, which has no loss(model, x, y, "
                          "*, step_context)")
    return defense


def defense_plugin(name: str) -> PluginInfo | None:
    """Where defense ``name`` comes from when a plugin provides it; None for a built-in."""
    return DEFENSES.plugin(name)
