"""Defenses: what the training step minimises, given the batch's *inputs* as well as its labels.

The training step (:mod:`advaudio.training.loop`) calls, for every batch::

    loss = defense.loss(net, x, y, step_context=context)

instead of ``model.training_loss(net(x), y)``, so a defense can perturb the inputs it
trains on (on-the-fly adversarial training: PGD-AT, TRADES, fast-AT) without the loop
knowing how.  ``net`` is what the step calls: the model, or under torchrun its
DistributedDataParallel wrapper (whose forward synchronises the gradients); inner
attack loops that must not go through the wrapper use ``context.classifier``.

Built-in:

* ``none``: clean training (exactly the step advaudio always ran);
* ``pgd-at`` (Madry et al. 2018): the loss of PGD examples made against the current
  weights (random start, ``steps`` signed steps of ``alpha``, projected on the ε-ball);
* ``trades`` (Zhang et al. 2019): the clean loss plus ``beta`` times the KL divergence
  between the clean and the adversarial output, the adversarial input maximising that KL;
* ``fast-at`` (Wong et al. 2020, "fast is better than free"): one FGSM step of ``alpha``
  from a uniform random start in the ε-ball.

The paper's ``shards`` defense, retraining on stored adversarial examples of the
previous round, is not a loss: it is the data (``TrainConfig.extra_sources``/``mix``,
``advaudio retrain``) and combines with any defense here.

On-the-fly attacks
------------------
They run the project's own batched steps (:func:`advaudio.attacks.stepping.gradient_attack`)
in model-input space ([0, 1]: ε, α are in those units, with the input bounds), on
``context.classifier`` (never the DDP wrapper: the inner steps must not synchronise
gradients), with the weights frozen and **the model in eval mode**: batch norm uses its
running statistics and dropout is off while the attack is made, then the step trains on
the result in train mode. Eval mode makes a sample's adversarial example a function of
that sample and the weights alone, not of which other samples share its batch (or its
DDP share), so a torchrun job makes the same examples as one process, and the attack
neither moves the running statistics nor draws from the global RNG; it is also TRADES's
reference choice. Train-mode batch statistics of a 32-sample batch that is being
perturbed are a noisy target. The cost: early in training, running statistics lag the
weights (the one-cycle warm-up absorbs it).

Every random start is drawn per sample from a generator seeded by (seed, epoch, step,
the sample's position in the global batch) (:meth:`StepContext.sample_seeds`, as the
time shifts of :mod:`advaudio.data` are), so a resumed run and every DDP world size draw
the same starts.

Defaults (ε = 8/255, the image-domain convention, in [0, 1] view units): the views are
normalised to their 0.5-99.5 percentiles, so 8/255 is 3.1 % of a view's range, about
2.5 dB on the 80 dB a log-magnitude STFT view spans; a clean ESC-10 model is fooled
(untargeted) at smaller ε than this on most clips, and targeted 90 % budgets are near
0.1 (README), so 8/255 asks for robustness in the range attacks actually use without
destroying the clean accuracy of a model trained on 320 clips. α and the steps are the
papers' CIFAR-10 values: PGD-AT 7 steps of 2/255; TRADES 10 steps of 2/255 (its 0.007),
β = 6; fast-AT α = 1.25 ε.

Plugins: entry-point group ``advaudio.defenses`` (:mod:`advaudio.plugins`), naming a
:class:`Defense` subclass or a factory ``f(**options)`` returning an object with
``loss``; the options are ``TrainConfig.defense_options`` (the keyword-only
parameters of the factory, or of the class's ``__init__``, with their defaults).
A defense must set ``context.output`` to the model output whose ``main_logits``
count as the batch's training accuracy.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.nn import functional as F

from advaudio.attacks import attack_mode
from advaudio.attacks.stepping import gradient_attack, unit_noise
from advaudio.data import derive_seed
from advaudio.errors import ParameterError, PluginError
from advaudio.plugins import PluginInfo, Registry

__all__ = ["DEFENSES", "Defense", "FastAT", "NoDefense", "PGDAT", "StepContext", "TRADES", "create_defense",
           "defense_options"]

#: The on-the-fly defenses' default ε in model-input units (see the module docstring).
DEFAULT_EPSILON = 8 / 255
NORMS = ("linf", "l2")


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
        world_size: the number of ranks (1 otherwise).
        batch_size: the global batch's size (None: the batch is all there is, ``len(x)``);
            under DDP this rank's samples are at positions ``rank, rank + world_size, …``.
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
    world_size: int = 1
    batch_size: int | None = None
    label_smoothing: float = 0.0
    denominator: float | None = None
    output: Any = None

    def criterion(self, output: Any, y: torch.Tensor) -> torch.Tensor:
        """The model's training loss of ``output`` against ``y``, with the run's smoothing and reduction."""
        return self.classifier.training_loss(output, y, label_smoothing=self.label_smoothing,
                                             denominator=self.denominator)

    def positions(self, n: int) -> list[int]:
        """The places of this rank's ``n`` samples in the global batch (see :mod:`advaudio.data`)."""
        if self.world_size <= 1:
            return list(range(n))
        return list(range(self.rank, self.rank + n * self.world_size, self.world_size))

    def sample_seeds(self, n: int, purpose: int) -> list[int]:
        """One seed per sample from (seed, epoch, step, global position, purpose): the same draw for a
        sample whether the run was resumed or how many ranks share its batch."""
        return [derive_seed(self.seed, self.epoch, self.step, p, 7, purpose) for p in self.positions(n)]


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


@contextlib.contextmanager
def _running_stats_kept(model: torch.nn.Module) -> Iterator[None]:
    """A train-mode forward that normalises with its batch's statistics but leaves the running ones
    (and their counters) as they were: TRADES's adversarial forward, so that running statistics follow
    the clean inputs, as the final precise-BN pass over clean batches does."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
              and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
             for m in layers]
    for m in layers:
        m.momentum = 0.0  # running = (1 - 0) · running + 0 · batch
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def _check(name: str, *, epsilon: float, alpha: float | None, steps: int, norm: str = "linf") -> None:
    if not (isinstance(epsilon, (int, float)) and 0 <= epsilon <= 1):
        raise ParameterError(f"{name}: epsilon is in model-input units, [0, 1]; got {epsilon!r}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ParameterError(f"{name}: alpha (the step) must be positive, got {alpha!r}")
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
        raise ParameterError(f"{name}: steps must be an integer >= 1, got {steps!r}")
    if norm not in NORMS:
        raise ParameterError(f"{name}: norm must be one of {', '.join(NORMS)}, got {norm!r}")


class _OnTheFly(Defense):
    """Shared by the adversarial-training defenses: the attack against the current weights."""

    epsilon: float
    alpha: float
    steps: int
    norm: str = "linf"

    def _start(self, x: torch.Tensor, context: StepContext) -> torch.Tensor | None:
        """Unit random-start draws per sample (None: no random start)."""
        return unit_noise(tuple(x.shape[1:]), norm=self.norm, seeds=context.sample_seeds(len(x), 1),
                          device=x.device).to(x.dtype)

    def adversarial(self, x: torch.Tensor, y: torch.Tensor, context: StepContext, *, objective=None,
                    noise: torch.Tensor | None = None) -> torch.Tensor:
        """``steps`` steps of ``alpha`` from ``x`` (+ the random start) within the ε-ball, in [0, 1]."""
        if self.epsilon == 0 or len(x) == 0:
            return x.detach()
        eps = torch.full((len(x),), float(self.epsilon), dtype=x.dtype, device=x.device)
        with attack_mode(context.classifier):
            r = gradient_attack(lambda v: context.classifier.main_logits(context.classifier(v)), x.detach(), y,
                                eps, targeted=False, norm=self.norm, steps=self.steps,
                                rel_stepsize=self.alpha / self.epsilon, noise=noise, early_stop=False,
                                objective=objective)
        return r.adversarial


class PGDAT(_OnTheFly):
    """``pgd-at`` (Madry et al. 2018): minimise the loss of PGD examples of the current weights.

    Options: ``epsilon`` (the ε-ball, model-input units), ``alpha`` (step; default 2/255 in L∞,
    2.5 ε / steps in L2), ``steps`` (7), ``random_start`` (uniform in the ball, Madry's), ``norm``.
    """

    name = "pgd-at"

    def __init__(self, *, epsilon: float = DEFAULT_EPSILON, alpha: float | None = None, steps: int = 7,
                 random_start: bool = True, norm: str = "linf") -> None:
        _check(self.name, epsilon=epsilon, alpha=alpha, steps=steps, norm=norm)
        self.epsilon, self.steps, self.norm = float(epsilon), int(steps), norm
        self.alpha = float(alpha) if alpha is not None else (2 / 255 if norm == "linf" else 2.5 * epsilon / steps)
        self.random_start = bool(random_start)

    def loss(self, model, x, y, *, step_context):
        noise = self._start(x, step_context) if self.random_start else None
        x_adv = self.adversarial(x, y, step_context, noise=noise)
        output = model(x_adv)
        step_context.output = output
        return step_context.criterion(output, y)


class FastAT(_OnTheFly):
    """``fast-at`` (Wong et al. 2020): one FGSM step of ``alpha`` (1.25 ε) from a uniform random start.

    With ``random_start=False`` and ``alpha = epsilon`` it is plain FGSM training (Goodfellow et al.).
    """

    name = "fast-at"
    steps = 1

    def __init__(self, *, epsilon: float = DEFAULT_EPSILON, alpha: float | None = None,
                 random_start: bool = True) -> None:
        _check(self.name, epsilon=epsilon, alpha=alpha, steps=1)
        self.epsilon = float(epsilon)
        self.alpha = float(alpha) if alpha is not None else 1.25 * self.epsilon
        self.random_start = bool(random_start)

    def loss(self, model, x, y, *, step_context):
        noise = self._start(x, step_context) if self.random_start else None
        x_adv = self.adversarial(x, y, step_context, noise=noise)
        output = model(x_adv)
        step_context.output = output
        return step_context.criterion(output, y)


class TRADES(_OnTheFly):
    """``trades`` (Zhang et al. 2019): ``CE(f(x), y) + β · KL(f(x) ‖ f(x'))``, x' maximising the KL.

    The inner maximisation starts at ``x + 0.001·N(0, I)`` (the reference code's start) and takes
    ``steps`` (10) steps of ``alpha`` (2/255); ``beta`` is 6, the paper's. The clean forward goes
    through the step's ``model`` (the DDP wrapper under torchrun); the adversarial one through the plain
    classifier in train mode, with its batch statistics, leaving the running statistics to the clean
    inputs (DDP averages the gradient of both terms once: the parameters' hooks fire per backward).
    """

    name = "trades"

    def __init__(self, *, epsilon: float = DEFAULT_EPSILON, alpha: float = 2 / 255, steps: int = 10,
                 beta: float = 6.0, norm: str = "linf") -> None:
        _check(self.name, epsilon=epsilon, alpha=alpha, steps=steps, norm=norm)
        if not (isinstance(beta, (int, float)) and beta >= 0):
            raise ParameterError(f"{self.name}: beta must be >= 0, got {beta!r}")
        self.epsilon, self.alpha, self.steps = float(epsilon), float(alpha), int(steps)
        self.beta, self.norm = float(beta), norm

    def _start(self, x, context):
        out = []
        for s in context.sample_seeds(len(x), 2):
            g = torch.Generator().manual_seed(int(s))
            out.append(torch.randn(tuple(x.shape[1:]), generator=g))
        if not out:
            return None
        # gradient_attack starts at x + ε·noise: 0.001·N(0, I) in the reference code
        return (torch.stack(out) * (0.001 / max(self.epsilon, 1e-12))).to(device=x.device, dtype=x.dtype)

    def loss(self, model, x, y, *, step_context):
        classifier = step_context.classifier
        with torch.no_grad(), attack_mode(classifier):
            clean_p = F.softmax(classifier.main_logits(classifier(x)).float(), dim=1)

        def kl(logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return F.kl_div(F.log_softmax(logits.float(), dim=1), clean_p[rows], reduction="sum")

        x_adv = self.adversarial(x, y, step_context, objective=kl, noise=self._start(x, step_context))
        output = model(x)
        step_context.output = output
        natural = step_context.criterion(output, y)
        with _running_stats_kept(classifier):
            adv_logits = classifier.main_logits(classifier(x_adv))
        denominator = step_context.denominator if step_context.denominator is not None else max(len(x), 1)
        robust = F.kl_div(F.log_softmax(adv_logits.float(), dim=1),
                          F.softmax(classifier.main_logits(output).float(), dim=1),
                          reduction="sum") / denominator
        return natural + self.beta * robust


def _plugin_factory(obj: Any, info: PluginInfo) -> Callable[..., Any]:
    if not callable(obj):
        raise PluginError(f"defense {info.name!r} from {info.describe()} is {type(obj).__name__}, not a Defense "
                          "class or a factory f(**options)")
    return obj


#: Defense name → a class or factory called with the run's ``defense_options``.
DEFENSES: Registry[Callable[..., Any]] = Registry(
    "advaudio.defenses", {"none": NoDefense, "pgd-at": PGDAT, "trades": TRADES, "fast-at": FastAT},
    what="defense", adapt=_plugin_factory)


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


def resolved_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every option defense ``name`` takes and its default (what a run records and hashes)."""
    defaults = {k: v for k, v in defense_options(name).items() if v is not inspect.Parameter.empty}
    return {**defaults, **options}


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
