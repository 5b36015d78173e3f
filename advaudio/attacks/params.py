"""Parameters of the attacks: one frozen dataclass per attack, and the run settings all share.

Foolbox 3 gives each attack a constructor with only its own parameters; so does
advaudio: :class:`PGDParams` has ``steps`` but no ``regularization``, and a key an
attack does not take is a :class:`~advaudio.errors.ParameterError` naming the ones it
does.  Values are checked for type and range when a dataclass is built, so a
configuration that exists is one that can run.  This module imports neither torch
nor Foolbox at import time; :data:`PARAMS` (name → dataclass) is a view of the one
attack registry (:mod:`advaudio.attacks.registry`), imported on first use.

A plugin attack (:mod:`advaudio.plugins`) declares its parameters as a frozen,
keyword-only dataclass subclassing :class:`AttackParams` (``attack``, ``kind`` and
``norms`` as class variables; a fixed-budget one with an ``epsilon`` field), so that
``-p name.key=value`` and a study's ``[attacks.params.name]`` reach it like any other.

Step sizes: for fgsm/bim/pgd ``step_size`` is *relative to ε* (Foolbox's
``rel_stepsize``), so the trajectory scales with the budget during bisection; for cw
it is Adam's learning rate (in tanh space), for ead the initial ISTA step, for
boundary both the spherical and the source step.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from advaudio import plugins
from advaudio.errors import ParameterError

__all__ = [
    "FIXED_BUDGET",
    "MAX_EVALUATIONS_PER_CLIP",
    "MINIMISATION",
    "PARAMS",
    "SHARED_SETTINGS",
    "AttackConfig",
    "AttackParams",
    "BIMParams",
    "BoundaryParams",
    "CarliniWagnerParams",
    "DeepFoolParams",
    "EADParams",
    "FGSMParams",
    "FMNParams",
    "HopSkipJumpParams",
    "PGDParams",
]

FIXED_BUDGET = "fixed-budget"
#: Budget searches of fixed-budget attacks, the first the default (:func:`~advaudio.attacks.tune_budget`).
SEARCHES = ("per-clip", "bisection")
#: Where the per-clip search's tolerance applies: only the budget (their quantile), or every clip's
#: minimal ε (:func:`~advaudio.attacks.search.per_clip_search`).
PRECISIONS = ("quantile", "clip")
MINIMISATION = "minimisation"
#: The kinds an attack can be (a plugin's params_type says which).
KINDS = (FIXED_BUDGET, MINIMISATION)
TARGET_RULES = ("random", "least-likely")
START_RULES = ("nearest", "noise")
DECISION_RULES = ("EN", "L1")
#: Where cw/ead's polish starts its first run: the clip's smallest fooling point, or the clean clip.
POLISH_STARTS = ("best", "clean")
#: Settings of :class:`AttackConfig` that every attack takes beside its own parameters.
SHARED_SETTINGS = ("targeted", "target_rule", "seed")
#: Probes of a fixed-budget attack's ε search per clip, at most (``tune_budget``'s ``max_iter``).
SEARCH_PROBES = 20
#: Model evaluations per clip (gradients or forward queries) of one budget search above which the
#: attack stage refuses to start unless told to (``allow_expensive``). Generous: Foolbox's research
#: defaults stay below it (CW 9 × 1000 steps with a retry: 27 000; HopSkipJump 64 steps of 10 000
#: gradient samples: about 640 000), while a run above it takes days per thousand clips on a GPU.
MAX_EVALUATIONS_PER_CLIP = 1_000_000

_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _checked(owner: str, name: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotated type (ints widen to float), or a ParameterError."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint)
    if value is None and optional:
        return None
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base in (bool, str) and isinstance(value, base):
        return value
    raise ParameterError(f"{owner}.{name} must be {_TYPE_WORDS[base]}, got {value!r}")


def _require(ok: bool, owner: str, name: str, what: str, value: Any) -> None:
    if not ok:
        raise ParameterError(f"{owner}.{name} must be {what}, got {value!r}")


def _check_types(obj: Any, owner: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        object.__setattr__(obj, f.name, _checked(owner, f.name, getattr(obj, f.name), hints[f.name]))


@dataclass(frozen=True, kw_only=True)
class AttackParams:
    """Base of the per-attack parameter dataclasses (``norm`` is the budget norm)."""

    attack: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    norms: ClassVar[tuple[str, ...]] = ()  # allowed budget norms, the first is the default

    norm: str = ""

    def __post_init__(self) -> None:
        if not self.norm:
            object.__setattr__(self, "norm", self.norms[0])
        _check_types(self, self.attack)
        _require(self.norm in self.norms, self.attack, "norm", f"one of {', '.join(self.norms)}", self.norm)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "steps":
                _require(value >= 1, self.attack, f.name, ">= 1", value)
            elif isinstance(value, float):
                _require(math.isfinite(value) and value >= 0, self.attack, f.name, "finite and >= 0", value)
        self._check()

    def _check(self) -> None:
        """Ranges particular to one attack (after the types and the common ranges)."""

    def evaluations(self) -> int:
        """Model evaluations (gradients or forward queries) one run costs per clip, at most."""
        return int(getattr(self, "steps", 1))

    def cost_text(self) -> str:
        """How :meth:`evaluations` is counted, for messages (``"steps=40"``)."""
        return f"steps={getattr(self, 'steps', 1)}"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackParams:
        unknown = sorted(set(data) - set(cls.names()))
        if unknown:
            raise ParameterError(
                f"{cls.attack} has no parameter {', '.join(unknown)}; it takes {', '.join(cls.names())} "
                f"(and, like every attack, {', '.join(SHARED_SETTINGS)})"
            )
        return cls(**data)

    def resolved(self) -> AttackParams:
        """These parameters with defaults that depend on other parameters filled in."""
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class _GradientParams(AttackParams):
    """Fixed-budget gradient attacks: ``epsilon`` (None: given to the run, or tuned)."""

    kind: ClassVar[str] = FIXED_BUDGET
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")

    epsilon: float | None = None


@dataclass(frozen=True, kw_only=True)
class FGSMParams(_GradientParams):
    """fgsm: one step of ``step_size``·ε (relative to ε); ``random_start`` in the ε-ball."""

    attack: ClassVar[str] = "fgsm"

    step_size: float = 1.0
    random_start: bool = False

    def evaluations(self) -> int:
        return 1

    def cost_text(self) -> str:
        return "one step"


@dataclass(frozen=True, kw_only=True)
class BIMParams(_GradientParams):
    """bim: ``steps`` signed-gradient steps of ``step_size``·ε, no random start by default."""

    attack: ClassVar[str] = "bim"

    steps: int = 10
    step_size: float = 0.2
    random_start: bool = False


@dataclass(frozen=True, kw_only=True)
class PGDParams(_GradientParams):
    """pgd: ``steps`` steps of ``step_size``·ε (None: 2.5 / steps), random start by default."""

    attack: ClassVar[str] = "pgd"

    steps: int = 40
    step_size: float | None = None
    random_start: bool = True

    def resolved(self) -> PGDParams:
        if self.step_size is not None:
            return self
        return dataclasses.replace(self, step_size=2.5 / self.steps)


@dataclass(frozen=True, kw_only=True)
class DeepFoolParams(AttackParams):
    """deepfool: ``steps`` linearised steps over the ``candidates`` top classes, ``overshoot``."""

    attack: ClassVar[str] = "deepfool"
    kind: ClassVar[str] = MINIMISATION
    norms: ClassVar[tuple[str, ...]] = ("l2", "linf")

    steps: int = 50
    candidates: int = 10
    overshoot: float = 0.02

    def _check(self) -> None:
        _require(self.candidates >= 2, self.attack, "candidates", ">= 2", self.candidates)

    def evaluations(self) -> int:
        return self.steps * self.candidates  # a gradient per candidate class per step

    def cost_text(self) -> str:
        return f"steps={self.steps} × candidates={self.candidates}"


@dataclass(frozen=True, kw_only=True)
class _ConstSearchParams(AttackParams):
    """CW-type attacks: per clip, a binary search over the constant c, then retries.

    Run in plain torch (:mod:`advaudio.attacks.constsearch`), each clip with its own
    constant and stopping rule:

    * ``steps`` is the most optimisation steps per constant; with ``abort_early`` a
      clip leaves the batch once it fools and its smallest fooling perturbation
      shrank by less than ``min_improvement`` (relative) over ``patience`` steps, or
      its objective did over ``loss_patience`` steps (the loss has plateaued; None:
      ``patience``);
    * ``pilot`` evenly spaced clips search from ``initial_const`` with
      ``binary_search_steps`` + ``pilot_extra`` constants (×10 until one fools, then
      bisection); the others start at the pilot's median smallest fooling constant
      and grow by the pilot's spread, so their ``binary_search_steps`` refine rather
      than look for the decade (``pilot=0``: every clip from ``initial_const``, C&W's
      search); ``start_const`` instead starts every clip there, moving ×/÷
      ``const_growth`` (no pilot: a clip's result does not depend on its batch);
    * then every clip that fooled is **polished**: up to ``polish_steps`` steps at its
      smallest fooling constant and as many at the largest that failed, the second from
      its smallest fooling point, the first from there too (``polish_start="best"``) or
      from the clean clip (``"clean"``), stopping when the objective or the norm gains less than
      ``polish_min_improvement`` over ``polish_patience`` steps (the early abort cuts
      the search's constants short; the polish converges; ``polish_steps=0``: none).

    ``initial_const`` is 1e-2 (Foolbox: 1e-3), which suits the logits of
    spectrogram CNNs and saves one search step.  Clips still missing their target
    are re-run ``const_retries`` times with ``initial_const *
    10**binary_search_steps`` and twice the steps.  Defaults measured on real
    ESC-10 models (README, "Attack cost"); Foolbox's research defaults are
    ``steps=1000, binary_search_steps=9, abort_early=False, pilot=0``.
    """

    kind: ClassVar[str] = MINIMISATION

    steps: int = 1000
    step_size: float = 1e-2
    binary_search_steps: int = 3
    initial_const: float = 1e-2
    confidence: float = 0.0
    const_retries: int = 1
    abort_early: bool = True
    patience: int = 10
    min_improvement: float = 1e-3
    loss_patience: int | None = None
    pilot: int = 5
    pilot_extra: int = 5
    start_const: float | None = None
    const_growth: float = 4.0
    polish_steps: int = 1000
    polish_patience: int = 50
    polish_min_improvement: float = 1e-4
    polish_start: str = "best"

    def _check(self) -> None:
        _require(self.binary_search_steps >= 1, self.attack, "binary_search_steps", ">= 1",
                 self.binary_search_steps)
        _require(self.initial_const > 0, self.attack, "initial_const", "> 0", self.initial_const)
        _require(self.const_retries >= 0, self.attack, "const_retries", ">= 0", self.const_retries)
        _require(self.patience >= 1, self.attack, "patience", ">= 1", self.patience)
        _require(self.loss_patience is None or self.loss_patience >= 1, self.attack, "loss_patience", ">= 1",
                 self.loss_patience)
        _require(self.min_improvement < 1, self.attack, "min_improvement", "in [0, 1)", self.min_improvement)
        _require(self.pilot >= 0, self.attack, "pilot", ">= 0", self.pilot)
        _require(self.pilot_extra >= 0, self.attack, "pilot_extra", ">= 0", self.pilot_extra)
        _require(self.start_const is None or self.start_const > 0, self.attack, "start_const", "> 0",
                 self.start_const)
        _require(self.const_growth > 1, self.attack, "const_growth", "> 1", self.const_growth)
        _require(self.polish_steps >= 0, self.attack, "polish_steps", ">= 0", self.polish_steps)
        _require(self.polish_patience >= 1, self.attack, "polish_patience", ">= 1", self.polish_patience)
        _require(0 <= self.polish_min_improvement < 1, self.attack, "polish_min_improvement", "in [0, 1)",
                 self.polish_min_improvement)
        _require(self.polish_start in POLISH_STARTS, self.attack, "polish_start", f"one of {', '.join(POLISH_STARTS)}",
                 self.polish_start)

    def evaluations(self) -> int:
        # every retry doubles the steps: 1 + 2 + 4 … times the first search's; each search is polished twice
        searches = self.const_retries + 1
        return self.binary_search_steps * self.steps * (2**searches - 1) + 2 * self.polish_steps * searches

    def cost_text(self) -> str:
        return (f"binary_search_steps={self.binary_search_steps} × steps={self.steps}"
                + (f" + 2 × polish_steps={self.polish_steps}" if self.polish_steps else "")
                + (f", const_retries={self.const_retries} doubling the steps" if self.const_retries else ""))


@dataclass(frozen=True, kw_only=True)
class CarliniWagnerParams(_ConstSearchParams):
    """cw: at most ``steps`` Adam steps (learning rate ``step_size``, tanh space) per constant."""

    attack: ClassVar[str] = "cw"
    norms: ClassVar[tuple[str, ...]] = ("l2",)


@dataclass(frozen=True, kw_only=True)
class EADParams(_ConstSearchParams):
    """ead: as cw with FISTA steps (initial ``step_size``), L1 weight β = ``regularization``."""

    attack: ClassVar[str] = "ead"
    norms: ClassVar[tuple[str, ...]] = ("l1",)

    regularization: float = 1e-2
    decision_rule: str = "EN"
    # FISTA's L1 iterates stall for a few steps before shrinking again: with cw's patience of 10 a
    # clip aborts early at a median ×1.12 of the long run's norm, with 30 at ×1.00 (tiny test model,
    # 24 clips; tests/test_attack_economy.py)
    patience: int = 30
    # EAD's L1 solutions move with the constant and its momentum makes the objective non-monotone: from
    # the pilot's learned bracket 3 constants end up to ×1.27 above the long run's L1 per clip, C&W's own
    # search over 9 constants ×1.50 when the objective's plateau is judged over 30 steps, ×1.005 over 100
    # (17 % of the long run's steps; same tiny model, 24 clips)
    binary_search_steps: int = 9
    pilot: int = 0
    loss_patience: int | None = 100
    # on a real model (ESC-10 ResNet-18 w0.5) the early abort still leaves the L1 budget ×1.62 above the long
    # run's (9 × 1000, no abort): FISTA's shrinkage keeps paying off as its step decays. The polish runs that
    # whole decaying schedule (no abort within its 1000 steps) at the smallest fooling and the largest failing
    # constant: ×1.115 at 39 % of the long run's steps (README, "Attack cost")
    polish_patience: int = 1000
    # a warm start from the search's dense fooling point keeps FISTA's L1 up (one clip ×1.50 of the long
    # run at the same constant); from the clean clip, as each of EAD's own constants starts, the polish
    # at the clip's constant retraces the long run's: per clip median ×1.000, 3 of 36 clips > 5 % above it
    # instead of 9 (README, "Attack cost")
    polish_start: str = "clean"

    def _check(self) -> None:
        super()._check()
        _require(self.decision_rule in DECISION_RULES, self.attack, "decision_rule",
                 f"one of {', '.join(DECISION_RULES)}", self.decision_rule)


@dataclass(frozen=True, kw_only=True)
class FMNParams(AttackParams):
    """fmn: fast minimum-norm attack (Pintor et al. 2021): ``steps`` steps of at most
    ``max_stepsize`` (cosine-annealed), ε adapted by ``gamma`` per step; the L1 / L∞
    variants project by ``binary_search_steps`` bisection steps."""

    attack: ClassVar[str] = "fmn"
    kind: ClassVar[str] = MINIMISATION
    norms: ClassVar[tuple[str, ...]] = ("l2", "linf", "l1")

    steps: int = 100
    max_stepsize: float = 1.0
    gamma: float = 0.05
    binary_search_steps: int = 10

    def _check(self) -> None:
        _require(self.max_stepsize > 0, self.attack, "max_stepsize", "> 0", self.max_stepsize)
        _require(0 < self.gamma < 1, self.attack, "gamma", "in (0, 1)", self.gamma)
        _require(self.binary_search_steps >= 1, self.attack, "binary_search_steps", ">= 1",
                 self.binary_search_steps)


@dataclass(frozen=True, kw_only=True)
class _DecisionParams(AttackParams):
    """Decision-based attacks: starting points by ``start_rule`` from the pool or
    ``noise_draws`` seeded uniform-noise images; at most ``max_queries`` model
    queries per clip (every forward: the starting point's check, Foolbox's checks,
    estimates and binary searches), whatever ``steps`` allows."""

    kind: ClassVar[str] = MINIMISATION

    start_rule: str = "nearest"
    noise_draws: int = 256
    max_queries: int = 1000

    def _check(self) -> None:
        _require(self.max_queries >= 2, self.attack, "max_queries", ">= 2 (the start's check and one more)",
                 self.max_queries)
        _require(self.start_rule in START_RULES, self.attack, "start_rule",
                 f"one of {', '.join(START_RULES)}", self.start_rule)
        _require(self.noise_draws >= 0, self.attack, "noise_draws", ">= 0", self.noise_draws)


@dataclass(frozen=True, kw_only=True)
class BoundaryParams(_DecisionParams):
    """boundary: ``steps`` random-walk steps; ``step_size`` is the spherical and source step."""

    attack: ClassVar[str] = "boundary"
    norms: ClassVar[tuple[str, ...]] = ("l2",)

    steps: int = 5000
    step_size: float = 1e-2

    def evaluations(self) -> int:
        return 2 * self.steps  # a candidate and its spherical step per step

    def cost_text(self) -> str:
        return f"steps={self.steps}, 2 queries each"


@dataclass(frozen=True, kw_only=True)
class HopSkipJumpParams(_DecisionParams):
    """hopskipjump: ``steps`` iterations; gradient estimates of ``gradient_eval_steps``
    samples at first, at most ``max_gradient_eval_steps`` (Foolbox: 10000)."""

    attack: ClassVar[str] = "hopskipjump"
    norms: ClassVar[tuple[str, ...]] = ("l2", "linf")

    steps: int = 40
    gradient_eval_steps: int = 100
    max_gradient_eval_steps: int = 1000

    def _check(self) -> None:
        super()._check()
        for name in ("gradient_eval_steps", "max_gradient_eval_steps"):
            _require(getattr(self, name) >= 1, self.attack, name, ">= 1", getattr(self, name))

    def evaluations(self) -> int:
        # per step: the gradient estimate's samples, and about 50 queries of boundary and step-size search
        return self.steps * (max(self.gradient_eval_steps, self.max_gradient_eval_steps) + 50)

    def cost_text(self) -> str:
        return f"steps={self.steps} × (max_gradient_eval_steps={self.max_gradient_eval_steps} + ~50)"


#: The built-in attacks' parameter dataclasses, in the order listings show them (the registry's
#: specs carry the same classes: :mod:`advaudio.attacks.registry` checks it).
BUILTIN_PARAMS: dict[str, type[AttackParams]] = {
    cls.attack: cls
    for cls in (FGSMParams, BIMParams, PGDParams, DeepFoolParams, CarliniWagnerParams, EADParams, FMNParams,
                BoundaryParams, HopSkipJumpParams)
}
_GROUP = "advaudio.attacks"


class _ParamsView(Mapping):
    """Attack name → its parameter dataclass: the built-ins' from :data:`BUILTIN_PARAMS`, a plugin's
    from its spec in the attack registry (found by group through :mod:`advaudio.plugins`).

    Membership and iteration read plugin metadata only and import no torch, so ``--help``
    stays cheap; looking a plugin up loads it.
    """

    def __getitem__(self, name: str) -> type[AttackParams]:
        if isinstance(name, str) and name in BUILTIN_PARAMS:
            return BUILTIN_PARAMS[name]
        if name not in self:
            raise KeyError(name)
        return plugins.registry(_GROUP)[name].params_type

    def _plugin_names(self) -> list[str]:
        return sorted({info.name for info in plugins.declared(_GROUP)} - set(BUILTIN_PARAMS))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in BUILTIN_PARAMS or name in self._plugin_names())

    def __iter__(self):
        return iter([*BUILTIN_PARAMS, *self._plugin_names()])

    def __len__(self) -> int:
        return len(BUILTIN_PARAMS) + len(self._plugin_names())

    def __repr__(self) -> str:
        return f"PARAMS({list(self)!r})"


#: Attack name → its parameter dataclass: built-ins and plugins.
PARAMS: Mapping[str, type[AttackParams]] = _ParamsView()


def params_type(name: str) -> type[AttackParams]:
    """The parameter dataclass of attack ``name``."""
    try:
        return PARAMS[name]
    except (KeyError, TypeError):
        raise ParameterError(f"unknown attack {name!r}; known: {', '.join(PARAMS)}") from None


@dataclass(frozen=True, kw_only=True)
class AttackConfig:
    """One attack run: the attack's own parameters and the settings every attack shares.

    Build it from the parameter dataclass, ``AttackConfig(params=PGDParams(steps=20),
    seed=1)``, or from flat values, ``AttackConfig.create("pgd", steps=20, seed=1)``.
    :meth:`to_dict` is the flat form recorded in results files and shard attributes
    (``name``, the shared settings and that attack's parameters only).

    Attributes:
        params: the attack and its parameters (see :data:`PARAMS`).
        targeted: run targeted where the attack supports it (default); attacks that
            cannot be targeted run untargeted and say so in their notes.
        target_rule: ``"random"`` or ``"least-likely"`` (see :func:`choose_targets`).
        seed: seeds target choice, random starts, noise and Foolbox's draws (>= 0).
    """

    params: AttackParams
    targeted: bool = True
    target_rule: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        known = isinstance(self.params, AttackParams) and self.params.attack in PARAMS
        if not known or type(self.params) is not PARAMS[self.params.attack]:
            raise ParameterError(f"params must be the parameter dataclass of a registered attack "
                                 f"({', '.join(PARAMS)}), got {type(self.params).__name__}")
        owner = self.params.attack
        hints = typing.get_type_hints(AttackConfig)
        for name in SHARED_SETTINGS:
            object.__setattr__(self, name, _checked(owner, name, getattr(self, name), hints[name]))
        _require(self.target_rule in TARGET_RULES, owner, "target_rule", f"one of {', '.join(TARGET_RULES)}",
                 self.target_rule)
        _require(self.seed >= 0, owner, "seed", ">= 0", self.seed)

    @property
    def name(self) -> str:
        return self.params.attack

    @classmethod
    def create(cls, name: str, /, **values: Any) -> AttackConfig:
        """Config of attack ``name`` from flat values: shared settings and that attack's parameters."""
        shared = {k: values.pop(k) for k in SHARED_SETTINGS if k in values}
        return cls(params=params_type(name).from_dict(values), **shared)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AttackConfig:
        """Inverse of :meth:`to_dict`."""
        values = dict(data)
        if "name" not in values:
            raise ParameterError("an attack configuration needs its attack's name")
        return cls.create(values.pop("name"), **values)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{k: getattr(self, k) for k in SHARED_SETTINGS}, **self.params.to_dict()}

    def evaluations_per_clip(self) -> int:
        """Model evaluations per clip of a whole budget search, about: one run for a
        minimisation attack, :data:`SEARCH_PROBES` runs (one per ε probed) for a fixed-budget one."""
        runs = SEARCH_PROBES if self.params.kind == FIXED_BUDGET else 1
        return runs * self.params.evaluations()

    def check_cost(self, *, allowed: bool, how: str) -> None:
        """ParameterError when :meth:`evaluations_per_clip` exceeds :data:`MAX_EVALUATIONS_PER_CLIP`
        (unless ``allowed``); ``how`` says how to insist (``"--allow-expensive"``)."""
        cost = self.evaluations_per_clip()
        if cost <= MAX_EVALUATIONS_PER_CLIP or allowed:
            return
        probes = f"{SEARCH_PROBES} budget probes × " if self.params.kind == FIXED_BUDGET else ""
        raise ParameterError(
            f"{self.name} would cost about {cost:.3g} model evaluations per clip ({probes}{self.params.cost_text()}), "
            f"above the limit of {MAX_EVALUATIONS_PER_CLIP:.0e} (days per thousand clips on a GPU); lower it, "
            f"or insist with {how}"
        )

    def replace(self, **changes: Any) -> AttackConfig:
        """A copy with shared settings and/or parameters changed."""
        shared = {k: changes.pop(k) for k in SHARED_SETTINGS if k in changes}
        params = self.params
        if changes:
            params = type(params).from_dict({**params.to_dict(), **changes})
        return dataclasses.replace(self, params=params, **shared)

    def resolved(self) -> AttackConfig:
        return dataclasses.replace(self, params=self.params.resolved())
