"""Adversarial attacks on spectrogram classifiers, tuned to a fooling rate.

This is the only module of advaudio that imports Foolbox 3 (and eagerpy); it is
imported lazily, on the first attack run, so that ``import advaudio.attacks`` and the
CLI stay cheap and Foolbox's pinned, dormant stack never spreads through the code.
Everything here works on a torch model (an :class:`torch.nn.Module` mapping inputs in
[0, 1] of shape ``(N, C, H, W)`` to logits) and tensors; files, stores and checkpoints
belong to the callers.

Registry
--------
:data:`ATTACKS` maps a name to an :class:`AttackSpec`; :func:`list_attacks` describes
them.  Every attack runs through ``foolbox.PyTorchModel(model, bounds=(0, 1))`` with
the model in eval mode.

=========== ============ ================== ======== ========================================
name        kind         budget norm        targeted Foolbox attack / notes
=========== ============ ================== ======== ========================================
fgsm        fixed-budget linf (or l2)       yes      targeted: one signed-gradient step toward
                                                     the target (Kurakin et al.'s step l.l.),
                                                     run as BasicIterative(steps=1, step=ε),
                                                     because Foolbox's FGSM rejects targeted
                                                     criteria; untargeted: Foolbox's FGSM/FGM
bim         fixed-budget linf (or l2)       yes      BasicIterativeAttack (no random start)
pgd         fixed-budget linf (or l2)       yes      ProjectedGradientDescentAttack (random
                                                     start in the ε-ball, seeded)
deepfool    minimisation l2 (or linf)       **no**   DeepFoolAttack; always untargeted (Foolbox
                                                     accepts a targeted criterion but only
                                                     walks to the nearest boundary) — noted
cw          minimisation l2                 yes      L2CarliniWagnerAttack; samples that miss
                                                     the target are retried with a larger
                                                     constant (``const_retries``) — noted
ead         minimisation l1 (L2 also kept)  yes      EADAttack, same retry rule as cw
boundary    minimisation l2                 yes      BoundaryAttack (decision-based); starting
                                                     points from ``starting_pool``, see below
hopskipjump minimisation l2 (or linf)       yes      HopSkipJumpAttack (decision-based), idem
=========== ============ ================== ======== ========================================

Definitions
-----------
*Attacked samples.*  Only samples the clean model classifies correctly are attacked;
the others are excluded (``attacked`` is False, their "adversarial" is the clean input,
``success`` is False) and counted in ``n_excluded``.  All rates below are over the
attacked samples only.

*Success* of one sample is measured by re-running the model on the returned float32
adversarial input (clipped to [0, 1]), never taken from Foolbox: a targeted run succeeds
when the prediction equals the target, an untargeted one when it differs from the true
label.  For fixed-budget attacks the perturbation is within the ε-ball by construction.

*Fooling rate* at a budget ``b``: the fraction of attacked samples that succeed with a
perturbation of norm at most ``b`` (in the attack's budget norm).  For fixed-budget
attacks that is the success fraction of the run at ε = b; for minimisation attacks the
fraction of per-sample minimal norms that are ≤ b.  *Success rate*: the fraction that
succeed at all (minimisation: at any norm; fixed-budget: at the returned budget, so it
equals the fooling rate).  *Misclassification rate*: the fraction no longer classified
as their true label (differs from the fooling rate for targeted runs only).

*Targets* (:func:`choose_targets`): ``"random"`` (default) — for sample ``i`` a class
drawn uniformly among the ``num_classes - 1`` other classes by a generator seeded with
``(seed, id_i)`` (``id_i`` defaults to the position; pass global ids to make targets
independent of slicing); ``"least-likely"`` — the clean model's lowest-logit class.
Never the true class.

*Minimisation failures.*  Where a minimisation attack finds no adversarial (or its
result does not verify), ``adversarial`` holds the clean input (Foolbox's CW/EAD return
zeros there) and its minimal norm is +inf.

*Queries* are per-sample model evaluations made by the attack (a batch of 16 is 16
queries), counted by wrapping the model's forward; ``gradient_queries`` are those that
were differentiated w.r.t. the input.  ``gradient_steps`` = gradient_queries / attacked
samples (PGD with 40 steps: 40).  Foolbox evaluates whole batches, so samples that are
already done still count.  The clean classification and the final verification are not
counted.

*Decision-based starting points* (boundary, hopskipjump; ``start_rule``): for each sample
the nearest (L2) input of ``starting_pool`` (default: the attacked batch itself) that
the model classifies as the target (targeted) or not as the true label (untargeted); if
none, the nearest of ``noise_draws`` seeded uniform-noise images classified that way;
if none either, the sample is not attacked and counts as a failure, with a note.
``start_rule="noise"`` skips the pool.

Budget tuning (:func:`tune_budget`)
-----------------------------------
Fixed-budget attacks: bisection over ε on ``[eps_low, eps_high]`` assuming the fooling
rate is monotone in ε (the seed, targets and PGD random start are held fixed, so each
probe differs only in ε).  The bracket is found by doubling ε from ``eps_low`` (or
``eps_high / 2**8`` when ``eps_low`` is 0) until the rate reaches the threshold — at very
large ε a few fixed-size steps overshoot and the rate is not monotone there, so the
largest ε is not probed first; if even ``eps_high`` falls short, ``reached`` is False.
Bisection then stops when ``hi - lo <= max(atol, rtol*hi)``
(default: 5 % relative) or after ``max_iter`` probes; the budget is ``hi``, the smallest
probed ε whose rate reached the threshold.  Minimisation attacks: one run; the budget is
the smallest per-sample minimal norm ``b`` with ``mean(norms <= b) >= fooling_rate``
(the inverted-CDF quantile, :func:`quantile_budget`; numpy's ``method="higher"``
overshoots: with 10 samples and 0.9 it returns the largest norm).  ``reached`` iff the
success rate reaches the threshold; when it does not, the budget is the largest budget
that was available (largest ε / largest finite norm) and ``reason`` says why.

Performance: fixed-budget attacks also go through Foolbox.  eagerpy's gradient calls
``loss.backward()``, which computes every weight gradient too; runs therefore freeze
the model's parameters (``requires_grad`` off, restored afterwards), which brings
Foolbox's PGD to the cost of a hand-written torch loop (``benchmarks/bench_attack.py``:
≈1.0–1.1× on CPU, identical adversarials).  advaudio adds two forward passes per run
(clean classification, verification).

Step sizes: for fgsm/bim/pgd ``step_size`` is *relative to ε* (Foolbox's
``rel_stepsize``), so the trajectory scales with the budget during bisection; for cw it
is Adam's learning rate (in tanh space), for ead the initial ISTA step, for boundary
both the spherical and the source step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from advaudio.errors import ParameterError, check_known_fields

__all__ = [
    "ATTACKS",
    "AttackConfig",
    "AttackResult",
    "AttackSpec",
    "TuningResult",
    "choose_targets",
    "fooling_rate_curve",
    "foolbox_version",
    "list_attacks",
    "perturbation_norms",
    "quantile_budget",
    "run_attack",
    "tune_budget",
]

FIXED_BUDGET = "fixed-budget"
MINIMISATION = "minimisation"
NORMS = ("linf", "l2", "l1")
TARGET_RULES = ("random", "least-likely")
START_RULES = ("nearest", "noise")
BOUNDS = (0.0, 1.0)
# ε-bracketing of fixed-budget attacks starts at eps_high / 2**GROWTH_DOUBLINGS.
GROWTH_DOUBLINGS = 8


def _foolbox() -> Any:
    """Import Foolbox lazily (≈1 s, pulls in scipy.ndimage) with its noise silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import foolbox  # noqa: PLC0415

    return foolbox


def foolbox_version() -> str:
    """Foolbox's version, for provenance records (imports it)."""
    return str(_foolbox().__version__)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AttackConfig:
    """Parameters of one attack run; every field is JSON-able.

    ``None`` means "the attack's default" (see ``ATTACKS[name].defaults``); the
    resolved configuration is recorded in :attr:`AttackResult.config`.

    Attributes:
        name: registry name (see :data:`ATTACKS`).
        targeted: run targeted where the attack supports it (default); attacks that
            cannot be targeted run untargeted and say so in ``notes``.
        target_rule: ``"random"`` or ``"least-likely"`` (see :func:`choose_targets`).
        norm: budget norm, ``"linf"``, ``"l2"`` or ``"l1"``; default per attack.
        epsilon: perturbation budget of fixed-budget attacks (in ``norm``).
        steps: iterations (fgsm 1, bim 10, pgd 40, deepfool 50, cw/ead 1000 per
            binary-search step, boundary 5000, hopskipjump 40).
        step_size: fgsm/bim/pgd: relative to ε (fgsm 1, bim 0.2, pgd 2.5/steps);
            cw: Adam learning rate (0.01); ead: initial step (0.01); boundary:
            spherical and source step (0.01).  Unused by deepfool/hopskipjump.
        random_start: start uniformly in the ε-ball (pgd True, fgsm/bim False).
        seed: seeds target choice, random starts, noise and Foolbox's draws.
        binary_search_steps: cw/ead search steps over the constant c.
        initial_const: cw/ead starting constant c (Foolbox: 1e-3; 1e-2 here, which
            suits logits of spectrogram CNNs and saves one search step).
        confidence: cw/ead logit margin required.
        const_retries: cw/ead: samples still missing their target are re-run this many
            times with ``initial_const * 10**binary_search_steps`` and twice the steps.
        regularization: ead's β (weight of L1).
        decision_rule: ead's ``"EN"`` or ``"L1"``.
        candidates: deepfool: number of top classes considered.
        overshoot: deepfool's overshoot.
        gradient_eval_steps: hopskipjump's initial gradient-estimate samples.
        max_gradient_eval_steps: hopskipjump's cap on those (Foolbox: 10000).
        start_rule: decision-based starting points, ``"nearest"`` or ``"noise"``.
        noise_draws: number of seeded uniform-noise candidates for starting points.
    """

    name: str
    targeted: bool = True
    target_rule: str = "random"
    norm: str | None = None
    epsilon: float | None = None
    steps: int | None = None
    step_size: float | None = None
    random_start: bool | None = None
    seed: int = 0
    binary_search_steps: int = 9
    initial_const: float = 1e-2
    confidence: float = 0.0
    const_retries: int = 1
    regularization: float = 1e-2
    decision_rule: str = "EN"
    candidates: int = 10
    overshoot: float = 0.02
    gradient_eval_steps: int = 100
    max_gradient_eval_steps: int = 1000
    start_rule: str = "nearest"
    noise_draws: int = 256

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AttackConfig":
        check_known_fields(cls, data, "attack parameter(s)")
        return cls(**data)

    def replace(self, **changes: Any) -> "AttackConfig":
        return dataclasses.replace(self, **changes)


# --------------------------------------------------------------------------- results


def perturbation_norms(clean: Any, adversarial: Any) -> dict[str, np.ndarray]:
    """Per-sample L1, L2, L∞ of ``adversarial - clean`` and SNR in dB (float64).

    ``snr_db = 10·log10(||x||² / ||δ||²)``: +inf where δ = 0.
    """
    x = np.asarray(clean, dtype=np.float64).reshape(len(clean), -1)
    d = np.asarray(adversarial, dtype=np.float64).reshape(len(clean), -1) - x
    energy_d = np.square(d).sum(axis=1)
    energy_x = np.square(x).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = 10.0 * np.log10(energy_x / energy_d)
    snr = np.where(energy_d == 0, np.inf, snr)
    return {
        "l1": np.abs(d).sum(axis=1),
        "l2": np.sqrt(energy_d),
        "linf": np.abs(d).max(axis=1) if d.shape[1] else np.zeros(len(d)),
        "snr_db": snr,
    }


def _stats(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, "median": math.nan}
    return {"mean": float(v.mean()), "median": float(np.median(v))}


@dataclass
class AttackResult:
    """Outcome of :func:`run_attack`; arrays are numpy, one row per input sample.

    ``adversarial`` is float32 in [0, 1] (the clean input for excluded samples and for
    minimisation failures); ``success``/``predicted`` come from re-running the model
    on it; norms are those of ``adversarial - clean``.
    """

    attack: str
    kind: str
    norm: str
    epsilon: float | None
    targeted: bool
    target_rule: str | None
    config: dict[str, Any]
    adversarial: np.ndarray
    labels: np.ndarray
    clean_predicted: np.ndarray
    predicted: np.ndarray
    targets: np.ndarray | None
    attacked: np.ndarray
    success: np.ndarray
    l1: np.ndarray
    l2: np.ndarray
    linf: np.ndarray
    snr_db: np.ndarray
    queries: int
    gradient_queries: int
    wall_time_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def n_attacked(self) -> int:
        return int(self.attacked.sum())

    @property
    def n_excluded(self) -> int:
        return int(len(self.attacked) - self.attacked.sum())

    @property
    def fooling_rate(self) -> float:
        """Fraction of attacked samples that succeed (nan when none attacked)."""
        n = self.n_attacked
        return float(self.success[self.attacked].sum() / n) if n else math.nan

    success_rate = fooling_rate

    @property
    def misclassification_rate(self) -> float:
        n = self.n_attacked
        wrong = self.predicted[self.attacked] != self.labels[self.attacked]
        return float(wrong.sum() / n) if n else math.nan

    @property
    def gradient_steps(self) -> float:
        """Input-gradient evaluations per attacked sample."""
        n = self.n_attacked
        return self.gradient_queries / n if n else 0.0

    def norm_values(self, norm: str | None = None) -> np.ndarray:
        return getattr(self, norm or self.norm)

    def budget_norms(self) -> np.ndarray:
        """Per-sample perturbation norm in the budget norm: +inf for failures, nan for
        excluded samples (for minimisation attacks, the minimal perturbations)."""
        v = self.norm_values().astype(np.float64).copy()
        v[~self.success] = np.inf
        v[~self.attacked] = np.nan
        return v

    def stats(self, mask: np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """Mean/median of l1, l2, linf, snr_db over ``mask`` (default: successes)."""
        m = self.success if mask is None else mask
        return {k: _stats(getattr(self, k)[m]) for k in ("l1", "l2", "linf", "snr_db")}

    def summary(self) -> dict[str, Any]:
        """JSON-able summary without the per-sample arrays."""
        return {
            "attack": self.attack,
            "kind": self.kind,
            "norm": self.norm,
            "epsilon": self.epsilon,
            "targeted": self.targeted,
            "target_rule": self.target_rule,
            "config": self.config,
            "n_samples": int(len(self.labels)),
            "n_attacked": self.n_attacked,
            "n_excluded": self.n_excluded,
            "fooling_rate": self.fooling_rate,
            "success_rate": self.success_rate,
            "misclassification_rate": self.misclassification_rate,
            "stats": self.stats(),
            "queries": self.queries,
            "gradient_queries": self.gradient_queries,
            "gradient_steps": self.gradient_steps,
            "wall_time_s": self.wall_time_s,
            "notes": list(self.notes),
        }


@dataclass
class TuningResult:
    """Outcome of :func:`tune_budget`.

    ``budget`` is ε in ``norm``; ``evaluations`` the (ε, fooling rate) pairs — the
    probes in order for fixed-budget attacks, the empirical CDF of the minimal norms
    for minimisation attacks; ``stats`` are over the samples fooled within the budget;
    ``result`` is the :class:`AttackResult` at the budget (minimisation: the single run,
    ``within_budget`` marks the samples fooled with norm ≤ budget).
    """

    attack: str
    kind: str
    norm: str
    threshold: float
    budget: float
    fooling_rate: float
    success_rate: float
    reached: bool
    reason: str | None
    evaluations: list[tuple[float, float]]
    stats: dict[str, dict[str, float]]
    n_attacked: int
    n_excluded: int
    queries: int
    gradient_queries: int
    wall_time_s: float
    tolerance: dict[str, float] | None
    converged: bool
    result: AttackResult | None
    within_budget: np.ndarray | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("result", "within_budget")
        }
        d["evaluations"] = [[float(e), float(r)] for e, r in self.evaluations]
        d["config"] = self.result.config if self.result is not None else None
        d["targeted"] = self.result.targeted if self.result is not None else None
        return d


# --------------------------------------------------------------------------- helpers


class _CountingModel(nn.Module):
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
def _attack_mode(model: nn.Module) -> Iterator[None]:
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
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG (Foolbox draws from it) without disturbing the caller's."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1)[0])


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    outs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    if not outs:
        return torch.empty(0, 0, device=x.device)
    return torch.cat(outs).float()


def _as_inputs(inputs: Any, device: torch.device) -> torch.Tensor:
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


def _as_labels(labels: Any, n: int, device: torch.device, what: str = "labels") -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    y = y.to(device=device, dtype=torch.long).reshape(-1)
    if len(y) != n:
        raise ParameterError(f"{what} has {len(y)} entries for {n} inputs")
    return y


def quantile_budget(norms: Any, fooling_rate: float) -> tuple[float, bool]:
    """Smallest ``b`` among ``norms`` with ``mean(norms <= b) >= fooling_rate``.

    ``norms`` are per-sample minimal perturbation norms, +inf where the attack failed.
    Returns ``(budget, reached)``; when fewer than ``ceil(fooling_rate·n)`` samples
    have a finite norm, ``reached`` is False and the budget is the largest finite norm
    (nan if there is none).  Equals ``np.quantile(norms, q, method="inverted_cdf")``.
    """
    v = np.sort(np.asarray(norms, dtype=np.float64).reshape(-1))
    if v.size == 0 or np.isnan(v).any():
        raise ParameterError("quantile_budget needs a non-empty array of norms without nan")
    if not 0.0 < fooling_rate <= 1.0:
        raise ParameterError(f"fooling_rate must be in (0, 1], got {fooling_rate}")
    k = max(1, math.ceil(fooling_rate * v.size - 1e-9))  # samples that must be fooled
    finite = v[np.isfinite(v)]
    if k <= finite.size:
        return float(v[k - 1]), True
    return (float(finite[-1]) if finite.size else math.nan), False


# --------------------------------------------------------------------------- targets


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
        device = _model_device(model)
        x = _as_inputs(inputs, device)
        with _attack_mode(model):
            logits = _logits(model, x, batch_size).cpu()
        num_classes = logits.shape[1] if num_classes is None else num_classes
    if num_classes < 2:
        raise ParameterError("targeted attacks need at least 2 classes")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ParameterError(f"labels must be in [0, {num_classes})")
    return _targets_from(rule, y, logits, num_classes, seed, ids)


def _targets_from(
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


# --------------------------------------------------------------------------- specs


@dataclass
class _Run:
    """What one chunk of an attack needs: the counted Foolbox model and the pool."""

    fb: Any
    fmodel: Any
    counter: _CountingModel
    model: nn.Module
    device: torch.device
    batch_size: int
    pool_x: torch.Tensor | None = None
    pool_pred: torch.Tensor | None = None
    noise_x: torch.Tensor | None = None
    noise_pred: torch.Tensor | None = None


class AttackSpec:
    """One registered attack; subclasses per family, parameters from AttackConfig."""

    name: str = ""
    kind: str = ""
    norms: tuple[str, ...] = ()  # allowed budget norms, the first is the default
    targetable: bool = True
    description: str = ""
    defaults: dict[str, Any] = {}

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "norm": self.norms[0],
            "norms": list(self.norms),
            "targetable": self.targetable,
            "description": self.description,
            "defaults": dict(self.defaults),
        }

    def resolve(self, config: AttackConfig) -> AttackConfig:
        """Fill ``None`` fields with this attack's defaults and validate."""
        changes: dict[str, Any] = {}
        if config.norm is None:
            changes["norm"] = self.norms[0]
        elif config.norm not in self.norms:
            raise ParameterError(
                f"{self.name} supports norm(s) {', '.join(self.norms)}, not {config.norm!r}"
            )
        for key, value in self.defaults.items():
            if getattr(config, key) is None:
                changes[key] = value(config) if callable(value) else value
        cfg = dataclasses.replace(config, **changes)
        if cfg.target_rule not in TARGET_RULES:
            raise ParameterError(f"target_rule must be one of {TARGET_RULES}")
        if cfg.start_rule not in START_RULES:
            raise ParameterError(f"start_rule must be one of {START_RULES}")
        if cfg.steps is not None and cfg.steps < 1:
            raise ParameterError("steps must be >= 1")
        return cfg

    def plan(self, config: AttackConfig) -> tuple[bool, list[str]]:
        """Whether the run is targeted, and the notes that say so when it is not."""
        if config.targeted and not self.targetable:
            return False, [f"{self.name} cannot be targeted: ran untargeted"]
        return config.targeted, []

    def execute(
        self,
        run: _Run,
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

    def chunk_notes(self, counters: dict[str, int], config: AttackConfig) -> list[str]:
        return []

    @staticmethod
    def criterion(run: _Run, labels: torch.Tensor, targets: torch.Tensor | None) -> Any:
        if targets is not None:
            return run.fb.criteria.TargetedMisclassification(targets)
        return run.fb.criteria.Misclassification(labels)

    @staticmethod
    def verify(
        run: _Run, adv: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        """Success per sample by the (uncounted) model on float32 inputs in [0, 1]."""
        pred = _logits(run.model, adv.float().clamp(*BOUNDS), run.batch_size).argmax(1)
        return pred == targets if targets is not None else pred != labels


class GradientAttack(AttackSpec):
    """Fixed-budget gradient attacks (FGSM, BIM, PGD): sign/normalised gradient steps
    of size ``step_size·ε``, projection onto the ε-ball, clipping to [0, 1]."""

    kind = FIXED_BUDGET
    norms = ("linf", "l2")
    fb_family = ""  # "BasicIterative" | "ProjectedGradientDescent"

    def attack(self, fb: Any, config: AttackConfig, targeted: bool) -> Any:
        prefix = "Linf" if config.norm == "linf" else "L2"
        cls = getattr(fb.attacks, f"{prefix}{self.fb_family}Attack")
        return cls(
            rel_stepsize=config.step_size,
            steps=config.steps,
            random_start=config.random_start,
        )

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        assert epsilon is not None
        attack = self.attack(run.fb, config, targets is not None)
        _, clipped, _ = attack(
            run.fmodel, x, self.criterion(run, labels, targets), epsilons=float(epsilon)
        )
        return clipped


class FGSM(GradientAttack):
    name = "fgsm"
    description = "fast gradient sign method (one step of size ε; L2: fast gradient method)"
    defaults = {"steps": 1, "step_size": 1.0, "random_start": False}

    def resolve(self, config):
        cfg = super().resolve(config)
        if cfg.steps != 1:
            raise ParameterError("fgsm takes exactly one step; use bim or pgd for more")
        return cfg

    def plan(self, config):
        if config.targeted:
            return True, [
                "fgsm targeted: one gradient step of size ε toward the target class "
                "(x - ε·sign(∇ CE(x, target)), Kurakin et al.'s step-l.l.), run as "
                "Foolbox's BasicIterativeAttack(steps=1, rel_stepsize=1) because "
                "Foolbox's FGSM rejects targeted criteria"
            ]
        return False, []

    def attack(self, fb, config, targeted):
        prefix = "Linf" if config.norm == "linf" else "L2"
        if targeted:
            cls = getattr(fb.attacks, f"{prefix}BasicIterativeAttack")
            return cls(
                rel_stepsize=config.step_size, steps=1, random_start=config.random_start
            )
        cls = getattr(fb.attacks, f"{prefix}FastGradientAttack")
        attack = cls(random_start=config.random_start)
        attack.rel_stepsize = config.step_size
        return attack


class BIM(GradientAttack):
    name = "bim"
    description = "basic iterative method (iterated FGSM, no random start)"
    fb_family = "BasicIterative"
    defaults = {"steps": 10, "step_size": 0.2, "random_start": False}


class PGD(GradientAttack):
    name = "pgd"
    description = "projected gradient descent (Madry et al.), random start in the ε-ball"
    fb_family = "ProjectedGradientDescent"
    defaults = {
        "steps": 40,
        "step_size": lambda cfg: 2.5 / (cfg.steps or 40),
        "random_start": True,
    }


class MinimisationAttack(AttackSpec):
    """Attacks that search the smallest adversarial perturbation per sample."""

    kind = MINIMISATION

    def attack(self, fb: Any, config: AttackConfig, **overrides: Any) -> Any:
        raise NotImplementedError

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        attack = self.attack(run.fb, config)
        raw, _, _ = attack(run.fmodel, x, self.criterion(run, labels, targets), epsilons=None)
        return raw


class DeepFool(MinimisationAttack):
    name = "deepfool"
    norms = ("l2", "linf")
    targetable = False
    description = "DeepFool: linearised steps to the nearest decision boundary"
    defaults = {"steps": 50}

    def plan(self, config):
        if config.targeted:
            return False, [
                "deepfool runs untargeted: Foolbox's DeepFool accepts a targeted criterion "
                "but only walks to the nearest class boundary, so success means "
                "predicted != label"
            ]
        return False, []

    def attack(self, fb, config, **overrides):
        cls = fb.attacks.L2DeepFoolAttack if config.norm == "l2" else fb.attacks.LinfDeepFoolAttack
        return cls(steps=config.steps, candidates=config.candidates, overshoot=config.overshoot)


class ConstSearchAttack(MinimisationAttack):
    """CW-type attacks with a binary search over the constant c; samples that miss
    their target are retried with a larger constant and more steps."""

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        adv = super().execute(
            run, x, labels, targets, config=config, epsilon=epsilon, counters=counters
        )
        ok = self.verify(run, adv, labels, targets)
        const, steps = config.initial_const, config.steps
        for attempt in range(config.const_retries):
            missing = (~ok).nonzero().flatten()
            if len(missing) == 0:
                break
            if attempt == 0:
                counters["retried"] = counters.get("retried", 0) + len(missing)
            const *= 10.0 ** max(config.binary_search_steps, 1)
            steps *= 2
            cfg = dataclasses.replace(config, initial_const=const, steps=steps)
            t = targets[missing] if targets is not None else None
            raw, _, _ = self.attack(run.fb, cfg)(
                run.fmodel, x[missing], self.criterion(run, labels[missing], t), epsilons=None
            )
            adv[missing] = raw
            ok[missing] = self.verify(run, raw, labels[missing], t)
            counters["last_const"] = const  # type: ignore[assignment]
            counters["last_steps"] = steps
        counters["failed"] = counters.get("failed", 0) + int((~ok).sum())
        return adv

    def chunk_notes(self, counters, config):
        if not counters.get("retried"):
            return []
        return [
            f"{self.name}: {counters['retried']} sample(s) missed after the first constant "
            f"search (initial_const={config.initial_const:g}); retried up to "
            f"{config.const_retries} time(s), last with initial_const="
            f"{counters['last_const']:g}, steps={counters['last_steps']}; "
            f"{counters.get('failed', 0)} still failed"
        ]


class CarliniWagnerL2(ConstSearchAttack):
    name = "cw"
    norms = ("l2",)
    description = "Carlini-Wagner L2 (Adam in tanh space, binary search over c)"
    defaults = {"steps": 1000, "step_size": 1e-2}

    def attack(self, fb, config, **overrides):
        return fb.attacks.L2CarliniWagnerAttack(
            binary_search_steps=config.binary_search_steps,
            steps=config.steps,
            stepsize=config.step_size,
            confidence=config.confidence,
            initial_const=config.initial_const,
            abort_early=True,
        )


class EAD(ConstSearchAttack):
    name = "ead"
    norms = ("l1",)
    description = "elastic-net attack (EAD, L1 + L2 regularised CW); budget in L1"
    defaults = {"steps": 1000, "step_size": 1e-2}

    def attack(self, fb, config, **overrides):
        return fb.attacks.EADAttack(
            binary_search_steps=config.binary_search_steps,
            steps=config.steps,
            initial_stepsize=config.step_size,
            confidence=config.confidence,
            initial_const=config.initial_const,
            regularization=config.regularization,
            decision_rule=config.decision_rule,
            abort_early=True,
        )


class DecisionAttack(MinimisationAttack):
    """Decision-based black-box attacks started from adversarial starting points."""

    def execute(self, run, x, labels, targets, *, config, epsilon, counters):
        starts, source = _starting_points(run, x, labels, targets, config)
        for key in ("pool", "noise", "none"):
            counters[key] = counters.get(key, 0) + int((source == key).sum())
        adv = x.clone()
        have = (source != "none").nonzero()[0]
        if len(have):
            idx = torch.from_numpy(have).to(x.device)
            t = targets[idx] if targets is not None else None
            raw, _, _ = self.attack(run.fb, config)(
                run.fmodel,
                x[idx],
                self.criterion(run, labels[idx], t),
                epsilons=None,
                starting_points=starts[idx],
            )
            adv[idx] = raw
        return adv

    def chunk_notes(self, counters, config):
        what = "classified as the target" if config.targeted else "misclassified"
        notes = [
            f"{self.name} starting points ({what}): {counters.get('pool', 0)} nearest from "
            f"the pool, {counters.get('noise', 0)} from {config.noise_draws} uniform-noise "
            f"draws, {counters.get('none', 0)} without any"
        ]
        if counters.get("none"):
            notes.append(
                f"{self.name}: {counters['none']} sample(s) had no starting point and were "
                "not attacked (counted as failures)"
            )
        return notes


class Boundary(DecisionAttack):
    name = "boundary"
    norms = ("l2",)
    description = "boundary attack (Brendel et al.), decision-based random walk"
    defaults = {"steps": 5000, "step_size": 1e-2}

    def attack(self, fb, config, **overrides):
        return fb.attacks.BoundaryAttack(
            steps=config.steps,
            spherical_step=config.step_size,
            source_step=config.step_size,
            tensorboard=False,
        )


class HopSkipJump(DecisionAttack):
    name = "hopskipjump"
    norms = ("l2", "linf")
    description = "HopSkipJump (Chen et al.), decision-based with gradient estimates"
    defaults = {"steps": 40}

    def attack(self, fb, config, **overrides):
        return fb.attacks.HopSkipJumpAttack(
            steps=config.steps,
            initial_gradient_eval_steps=config.gradient_eval_steps,
            max_gradient_eval_steps=config.max_gradient_eval_steps,
            constraint=config.norm,
            tensorboard=False,
        )


def _nearest_valid(
    x: torch.Tensor,
    cand: torch.Tensor,
    cand_pred: torch.Tensor,
    want: torch.Tensor,
    targeted: bool,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest (L2) candidate with the required class, per row of ``x``."""
    flat = x.reshape(len(x), -1)
    best_d = torch.full((len(x),), math.inf, device=x.device)
    best_i = torch.zeros(len(x), dtype=torch.long, device=x.device)
    for s in range(0, len(cand), batch_size):
        c = cand[s : s + batch_size].reshape(-1, flat.shape[1])
        p = cand_pred[s : s + batch_size]
        d = torch.cdist(flat, c)
        valid = p[None, :] == want[:, None] if targeted else p[None, :] != want[:, None]
        d = torch.where(valid, d, torch.full_like(d, math.inf))
        m, i = d.min(dim=1)
        better = m < best_d
        best_d = torch.where(better, m, best_d)
        best_i = torch.where(better, i + s, best_i)
    return best_i, torch.isfinite(best_d)


@torch.no_grad()
def _starting_points(
    run: _Run,
    x: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    config: AttackConfig,
) -> tuple[torch.Tensor, np.ndarray]:
    targeted = targets is not None
    want = targets if targeted else labels
    starts = x.clone()
    source = np.full(len(x), "none", dtype=object)
    todo = torch.ones(len(x), dtype=torch.bool, device=x.device)
    pools = []
    if config.start_rule == "nearest" and run.pool_x is not None:
        pools.append(("pool", run.pool_x, run.pool_pred))
    if config.noise_draws > 0:
        if run.noise_x is None:
            g = torch.Generator().manual_seed(_chunk_seed(config.seed, 2**31 - 1))
            noise = torch.rand((config.noise_draws, *x.shape[1:]), generator=g)
            run.noise_x = noise.to(x.device)
            run.noise_pred = _logits(run.counter, run.noise_x, run.batch_size).argmax(1)
        pools.append(("noise", run.noise_x, run.noise_pred))
    for key, cand, pred in pools:
        if not bool(todo.any()):
            break
        rows = todo.nonzero().flatten()
        idx, found = _nearest_valid(x[rows], cand, pred, want[rows], targeted, run.batch_size)
        rows, idx = rows[found], idx[found]
        if len(rows) == 0:
            continue
        # check with the counted model, as Foolbox will (it raises on a non-adversarial start)
        p = _logits(run.counter, cand[idx], run.batch_size).argmax(1)
        ok = p == want[rows] if targeted else p != want[rows]
        rows, idx = rows[ok], idx[ok]
        starts[rows] = cand[idx]
        todo[rows] = False
        source[rows.cpu().numpy()] = key
    return starts, source


ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        FGSM(),
        BIM(),
        PGD(),
        DeepFool(),
        CarliniWagnerL2(),
        EAD(),
        Boundary(),
        HopSkipJump(),
    )
}


def list_attacks() -> list[dict[str, Any]]:
    """Name, kind, budget norm(s), targetability, description and defaults of each attack."""
    return [spec.info() for spec in ATTACKS.values()]


def _spec(config: AttackConfig) -> AttackSpec:
    if not isinstance(config, AttackConfig):
        raise ParameterError("config must be an AttackConfig")
    try:
        return ATTACKS[config.name]
    except KeyError:
        raise ParameterError(
            f"unknown attack {config.name!r}; known: {', '.join(ATTACKS)}"
        ) from None


# --------------------------------------------------------------------------- running


@dataclass
class _Prepared:
    """Clean evaluation and targets, shared by the probes of one tuning run."""

    model: nn.Module
    spec: AttackSpec
    config: AttackConfig
    x: torch.Tensor
    labels: torch.Tensor
    clean_pred: torch.Tensor
    attacked: torch.Tensor
    targeted: bool
    targets: torch.Tensor | None
    notes: list[str]
    device: torch.device
    batch_size: int
    pool: torch.Tensor | None
    prep_time_s: float


def _prepare(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    config: AttackConfig,
    targets: Any,
    batch_size: int,
    starting_pool: Any,
) -> _Prepared:
    t0 = time.perf_counter()
    spec = _spec(config)
    cfg = spec.resolve(config)
    if batch_size < 1:
        raise ParameterError("batch_size must be >= 1")
    device = _model_device(model)
    x = _as_inputs(inputs, device)
    y = _as_labels(labels, len(x), device)
    with _attack_mode(model):
        logits = _logits(model, x, batch_size)
    num_classes = logits.shape[1] if len(x) else 0
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ParameterError(f"labels must be in [0, {num_classes})")
    clean_pred = logits.argmax(1) if len(x) else y.clone()
    attacked = clean_pred == y
    notes: list[str] = []
    excluded = int((~attacked).sum())
    if excluded:
        notes.append(
            f"{excluded} of {len(x)} sample(s) misclassified when clean: not attacked, "
            "excluded from the rates"
        )
    targeted, plan_notes = spec.plan(cfg)
    notes += plan_notes
    tgt = None
    if targeted:
        if targets is not None:
            tgt = _as_labels(targets, len(x), device, "targets")
            if bool(((tgt == y) & attacked).any()):
                raise ParameterError("a target equals the true class of an attacked sample")
            if len(tgt) and (int(tgt.min()) < 0 or int(tgt.max()) >= num_classes):
                raise ParameterError(f"targets must be in [0, {num_classes})")
            notes.append("targets given by the caller")
        else:
            tgt = _targets_from(cfg.target_rule, y.cpu(), logits.cpu(), num_classes, cfg.seed, None)
            tgt = tgt.to(device)
    elif targets is not None:
        notes.append("targets ignored: the run is untargeted")
    pool = None
    if isinstance(spec, DecisionAttack) and cfg.start_rule == "nearest":
        pool = x if starting_pool is None else _as_inputs(starting_pool, device)
    return _Prepared(
        model=model,
        spec=spec,
        config=cfg,
        x=x,
        labels=y,
        clean_pred=clean_pred,
        attacked=attacked,
        targeted=targeted,
        targets=tgt,
        notes=notes,
        device=device,
        batch_size=batch_size,
        pool=pool,
        prep_time_s=time.perf_counter() - t0,
    )


def _execute(prep: _Prepared, epsilon: float | None, starting_pool_given: bool) -> AttackResult:
    t0 = time.perf_counter()
    spec, cfg, model = prep.spec, prep.config, prep.model
    if spec.kind == FIXED_BUDGET:
        epsilon = cfg.epsilon if epsilon is None else epsilon
        if epsilon is None:
            raise ParameterError(
                f"{spec.name} is a fixed-budget attack: give epsilon (or use tune_budget)"
            )
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ParameterError(f"epsilon must be finite and >= 0, got {epsilon}")
        epsilon = float(epsilon)
        cfg = dataclasses.replace(cfg, epsilon=epsilon)
    elif epsilon is not None or cfg.epsilon is not None:
        raise ParameterError(
            f"{spec.name} is a minimisation attack and takes no epsilon; use "
            "tune_budget or AttackResult.budget_norms()"
        )
    fb = _foolbox()
    x, y = prep.x, prep.labels
    adv = x.clone()
    counters: dict[str, int] = {}
    counter = _CountingModel(model)
    with _attack_mode(model):
        counter.eval()
        fmodel = fb.PyTorchModel(counter, bounds=BOUNDS, device=prep.device)
        run = _Run(fb=fb, fmodel=fmodel, counter=counter, model=model, device=prep.device,
                   batch_size=prep.batch_size)
        if prep.pool is not None:
            run.pool_x = prep.pool
            if starting_pool_given or prep.pool is not x:
                run.pool_pred = _logits(counter, prep.pool, prep.batch_size).argmax(1)
            else:
                # the pool is the batch: its clean predictions are what the attacker saw
                counter.queries += len(x)
                run.pool_pred = prep.clean_pred
        idx = prep.attacked.nonzero().flatten()
        for chunk, s in enumerate(range(0, len(idx), prep.batch_size)):
            sel = idx[s : s + prep.batch_size]
            t = prep.targets[sel] if prep.targets is not None else None
            with _seeded(_chunk_seed(cfg.seed, chunk), prep.device):
                out = spec.execute(run, x[sel], y[sel], t, config=cfg, epsilon=epsilon,
                                   counters=counters)
            adv[sel] = out.detach().to(torch.float32).clamp(*BOUNDS)
        pred = _logits(model, adv, prep.batch_size).argmax(1)
    if prep.targets is not None:
        success = (pred == prep.targets) & prep.attacked
    else:
        success = (pred != y) & prep.attacked
    notes = list(prep.notes) + spec.chunk_notes(counters, cfg)
    if spec.kind == MINIMISATION:
        failed = prep.attacked & ~success
        adv[failed] = x[failed]
        pred = torch.where(failed, prep.clean_pred, pred)
    adv_np = adv.cpu().numpy()
    norms = perturbation_norms(x.cpu().numpy(), adv_np)
    return AttackResult(
        attack=spec.name,
        kind=spec.kind,
        norm=cfg.norm,
        epsilon=epsilon,
        targeted=prep.targeted,
        target_rule=cfg.target_rule if prep.targeted else None,
        config=dict(cfg.to_dict(), targeted=prep.targeted),
        adversarial=adv_np,
        labels=y.cpu().numpy(),
        clean_predicted=prep.clean_pred.cpu().numpy(),
        predicted=pred.cpu().numpy(),
        targets=prep.targets.cpu().numpy() if prep.targets is not None else None,
        attacked=prep.attacked.cpu().numpy(),
        success=success.cpu().numpy(),
        l1=norms["l1"],
        l2=norms["l2"],
        linf=norms["linf"],
        snr_db=norms["snr_db"],
        queries=counter.queries,
        gradient_queries=counter.gradient_queries,
        wall_time_s=time.perf_counter() - t0 + prep.prep_time_s,
        notes=notes,
    )


def run_attack(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    config: AttackConfig,
    epsilon: float | None = None,
    targets: Any = None,
    batch_size: int = 256,
    starting_pool: Any = None,
) -> AttackResult:
    """Run one attack on ``inputs`` (N, C, H, W in [0, 1]) with true ``labels``.

    Args:
        model: torch module mapping inputs to logits; run in eval mode with its
            parameters temporarily frozen (both restored afterwards).
        config: the attack and its parameters.
        epsilon: budget of fixed-budget attacks (overrides ``config.epsilon``);
            minimisation attacks take none.
        targets: target classes (targeted runs); default: chosen by
            ``config.target_rule`` with ``config.seed``.
        batch_size: samples per Foolbox call.
        starting_pool: decision-based attacks: candidate inputs (M, C, H, W) for
            starting points, classified by the model (counted as queries); default:
            ``inputs`` themselves.

    Returns:
        :class:`AttackResult`; see the module docstring for the definitions.
    """
    prep = _prepare(model, inputs, labels, config=config, targets=targets,
                    batch_size=batch_size, starting_pool=starting_pool)
    return _execute(prep, epsilon, starting_pool is not None)


def fooling_rate_curve(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    config: AttackConfig,
    epsilons: Sequence[float],
    targets: Any = None,
    batch_size: int = 256,
    starting_pool: Any = None,
) -> list[tuple[float, float]]:
    """Fooling rate at each ε (same targets and seed throughout).

    Fixed-budget attacks run once per ε; minimisation attacks run once and the rate at
    ε is the fraction of attacked samples whose minimal norm is ≤ ε.
    """
    prep = _prepare(model, inputs, labels, config=config, targets=targets,
                    batch_size=batch_size, starting_pool=starting_pool)
    if prep.spec.kind == FIXED_BUDGET:
        return [
            (float(e), _execute(prep, float(e), starting_pool is not None).fooling_rate)
            for e in epsilons
        ]
    res = _execute(prep, None, starting_pool is not None)
    norms = res.budget_norms()[res.attacked]
    n = len(norms)
    return [(float(e), float((norms <= e).sum() / n) if n else math.nan) for e in epsilons]


def _default_eps_high(norm: str, x: torch.Tensor) -> float:
    d = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
    return {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}[norm]


def tune_budget(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    config: AttackConfig,
    fooling_rate: float = 0.9,
    rtol: float = 0.05,
    atol: float = 0.0,
    eps_low: float = 0.0,
    eps_high: float | None = None,
    max_iter: int = 20,
    targets: Any = None,
    batch_size: int = 256,
    starting_pool: Any = None,
) -> TuningResult:
    """Smallest budget at which the attack reaches ``fooling_rate`` (module docstring).

    Fixed-budget attacks: a doubling bracket, then bisection over ε in
    ``[eps_low, eps_high]`` (default ``eps_high``: the largest meaningful perturbation
    in the norm — 1 for L∞, √(C·H·W) for L2), stopping when ``hi - lo <= max(atol, rtol·hi)`` or after
    ``max_iter`` probes.  Minimisation attacks: one run, the inverted-CDF quantile of
    the per-sample minimal norms (:func:`quantile_budget`).
    """
    t0 = time.perf_counter()
    if not 0.0 < fooling_rate <= 1.0:
        raise ParameterError(f"fooling_rate must be in (0, 1], got {fooling_rate}")
    if rtol < 0 or atol < 0 or (rtol == 0 and atol == 0):
        raise ParameterError("tolerances must be >= 0 and not both 0")
    prep = _prepare(model, inputs, labels, config=config, targets=targets,
                    batch_size=batch_size, starting_pool=starting_pool)
    spec, cfg = prep.spec, prep.config
    pool_given = starting_pool is not None
    n_att = int(prep.attacked.sum())
    n_exc = len(prep.attacked) - n_att
    base = dict(attack=spec.name, kind=spec.kind, norm=cfg.norm, threshold=fooling_rate,
                n_attacked=n_att, n_excluded=n_exc)
    if n_att == 0:
        return TuningResult(
            **base, budget=math.nan, fooling_rate=math.nan, success_rate=math.nan,
            reached=False, reason="no correctly classified samples to attack",
            evaluations=[], stats={}, queries=0, gradient_queries=0,
            wall_time_s=time.perf_counter() - t0, tolerance=None, converged=False,
            result=None, within_budget=None, notes=list(prep.notes),
        )

    if spec.kind == MINIMISATION:
        res = _execute(prep, None, pool_given)
        norms = res.budget_norms()[res.attacked]
        budget, reached = quantile_budget(norms, fooling_rate)
        within = res.success & (res.budget_norms() <= budget)
        fr = float(within[res.attacked].mean())
        finite = np.sort(norms[np.isfinite(norms)])
        curve = [(float(v), float((k + 1) / len(norms))) for k, v in enumerate(finite)]
        reason = None
        if not reached:
            reason = (
                f"success rate {res.success_rate:.3f} < {fooling_rate}: "
                f"{int((~np.isfinite(norms)).sum())} of {len(norms)} sample(s) not fooled "
                f"at any {cfg.norm} norm"
            )
        return TuningResult(
            **base, budget=budget, fooling_rate=fr, success_rate=res.success_rate,
            reached=reached, reason=reason, evaluations=curve, stats=res.stats(within),
            queries=res.queries, gradient_queries=res.gradient_queries,
            wall_time_s=time.perf_counter() - t0, tolerance=None, converged=True,
            result=res, within_budget=within, notes=list(res.notes),
        )

    hi = _default_eps_high(cfg.norm, prep.x) if eps_high is None else float(eps_high)
    lo = float(eps_low)
    if not 0 <= lo < hi:
        raise ParameterError(f"need 0 <= eps_low < eps_high, got {lo}, {hi}")
    evaluations: list[tuple[float, float]] = []
    totals = {"q": 0, "g": 0}

    def probe(eps: float) -> AttackResult:
        r = _execute(prep, eps, pool_given)
        evaluations.append((eps, r.fooling_rate))
        totals["q"] += r.queries
        totals["g"] += r.gradient_queries
        return r

    tol = {"rtol": rtol, "atol": atol}
    # Bracket by doubling up from a small ε before bisecting: at very large ε a
    # few fixed-size gradient steps overshoot, so the fooling rate is not
    # monotone there and probing the largest ε first can miss a small budget.
    notes: list[str] = []
    eps = lo if lo > 0 else hi / 2 ** GROWTH_DOUBLINGS
    closest: tuple[float, AttackResult] | None = None
    while True:
        eps = min(eps, hi)
        r = probe(eps)
        if r.fooling_rate >= fooling_rate:
            best, hi = r, eps
            break
        if closest is None or r.fooling_rate >= closest[1].fooling_rate:  # ties: the larger ε
            closest = (eps, r)
        if eps >= hi:
            # Not reached: report the probe that came closest (its adversarials
            # are the useful ones), not the largest ε.
            c_eps, c = closest
            return TuningResult(
                **base, budget=c_eps, fooling_rate=c.fooling_rate,
                success_rate=c.success_rate, reached=False,
                reason=f"fooling rate at most {c.fooling_rate:.3f} < {fooling_rate} (at {cfg.norm} "
                f"ε={c_eps:g}; probed up to ε={hi:g})",
                evaluations=evaluations, stats=c.stats(), queries=totals["q"],
                gradient_queries=totals["g"], wall_time_s=time.perf_counter() - t0,
                tolerance=tol, converged=False, result=c, within_budget=c.success.copy(),
                notes=list(c.notes),
            )
        lo, eps = eps, eps * 2
    if len(evaluations) == 1 and lo > 0:
        notes.append(f"fooling rate already reached at eps_low={lo:g}")
    converged = True
    while hi - lo > max(atol, rtol * hi) and hi > lo:
        if len(evaluations) >= max_iter:
            converged = False
            notes.append(
                f"bisection stopped after max_iter={max_iter} probes with bracket "
                f"[{lo:g}, {hi:g}] wider than the tolerance"
            )
            break
        mid = 0.5 * (lo + hi)
        r = probe(mid)
        if r.fooling_rate >= fooling_rate:
            hi, best = mid, r
        else:
            lo = mid
    return TuningResult(
        **base, budget=hi, fooling_rate=best.fooling_rate, success_rate=best.success_rate,
        reached=True, reason=None, evaluations=evaluations, stats=best.stats(),
        queries=totals["q"], gradient_queries=totals["g"],
        wall_time_s=time.perf_counter() - t0, tolerance=tol, converged=converged,
        result=best, within_budget=best.success.copy(), notes=list(best.notes) + notes,
    )
