"""AutoAttack robust accuracy at a fixed ε (Croce & Hein 2020; RobustBench's protocol).

The only import of AutoAttack's code, as :mod:`._foolbox` is Foolbox's. The
implementation is the authors' reference code as published on the package index
(``pyautoattack``, MIT, no declared dependencies; ``pip install advaudio[autoattack]``).
The alternatives were read and tried: ``torchattacks.AutoAttack`` is a re-implementation
whose targeted attacks take ``n_classes - 1`` targets (49 on ESC-50, not the standard 9),
which runs none of the reference's checks, and whose package declares stale pins
(``requests~=2.25.1``, ``torchvision``: a CUDA torch next to the CPU wheel); ART's
``AutoAttack`` composes ART's own attacks (its own defaults, targeted over every class)
behind its NumPy estimator wrappers, a large install for one metric.

Protocol: the ``standard`` version (APGD-CE, APGD-T, FAB-T, Square 5000 queries) with
``min(9, classes - 1)`` target classes — 9 on 10- and 50-class stores, as RobustBench on
CIFAR-10/100 — on every clip the model classifies correctly; robust accuracy is the
fraction of *all* clips still classified correctly (a clip misclassified when clean counts
as not robust), with its Clopper–Pearson 95 % interval. AutoAttack's own flags
(a randomised or dynamic model, logits that look like probabilities, zero gradients,
Square doing better than the white-box attacks) come back as warnings.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from advaudio.attacks._model import attack_mode
from advaudio.errors import ParameterError

__all__ = ["NORMS", "RobustAccuracy", "autoattack_available", "autoattack_version", "binomial_interval",
           "parse_autoattack", "robust_accuracy"]

#: advaudio's norm names → AutoAttack's.
NORMS = {"linf": "Linf", "l2": "L2", "l1": "L1"}
VERSION = "standard"
STANDARD_TARGETS = 9


def _module():
    try:
        import pyautoattack
    except ImportError:
        raise ParameterError("AutoAttack needs the pyautoattack package: pip install 'advaudio[autoattack]' "
                             "(or pip install pyautoattack)") from None
    return pyautoattack


def autoattack_available() -> bool:
    try:
        _module()
    except ParameterError:
        return False
    return True


def autoattack_version() -> str | None:
    try:
        return str(getattr(_module(), "__version__", "unknown"))
    except ParameterError:
        return None


def _number(text: str) -> float:
    num, slash, den = text.partition("/")
    try:
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        raise ParameterError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ParameterError(f"ε must be a positive number, got {text!r}")
    return value


def parse_autoattack(text: str) -> tuple[tuple[str, float], ...]:
    """``"linf:8/255,l2:0.5"`` → ``(("linf", 0.0314), ("l2", 0.5))`` (ε in model-input units)."""
    out = []
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        norm, sep, eps = item.partition(":")
        norm = norm.strip().lower()
        if not sep or norm not in NORMS:
            raise ParameterError(f"AutoAttack takes NORM:EPS items (norms: {', '.join(NORMS)}), got {item!r}")
        out.append((norm, _number(eps.strip())))
    if not out:
        raise ParameterError("AutoAttack needs at least one NORM:EPS, e.g. linf:8/255")
    if len(set(out)) != len(out):
        raise ParameterError(f"AutoAttack lists a norm and ε twice: {text!r}")
    return tuple(out)


def binomial_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper–Pearson (exact) interval of a proportion ``k / n``; (0, 1) when ``n`` is 0."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    a = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


@dataclass(frozen=True)
class RobustAccuracy:
    """AutoAttack's robust accuracy at one (norm, ε) on ``n`` clips."""

    norm: str
    eps: float
    robust_accuracy: float  # robust clips / n (misclassified-when-clean clips are not robust)
    ci_low: float
    ci_high: float
    n: int
    n_correct: int  # clips classified correctly before the attack (those attacked)
    n_robust: int
    per_attack: dict[str, float] = field(default_factory=dict)  # robust accuracy after each attack
    warnings: tuple[str, ...] = ()
    version: str = VERSION
    target_classes: int = STANDARD_TARGETS
    seconds: float = math.nan
    library: str = ""
    robust: tuple[bool, ...] = ()  # per clip, in the order given

    def to_dict(self, *, clips: bool = False) -> dict[str, Any]:
        d = asdict(self)
        d["warnings"] = list(self.warnings)
        if clips:
            d["robust"] = [bool(v) for v in self.robust]
        else:
            d.pop("robust")
        return d


class _Logits(nn.Module):
    """What AutoAttack calls: the classifying logits, float32."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        main = getattr(self.model, "main_logits", None)
        return (main(out) if main is not None else out).float()


class _Collect(logging.Handler):
    """AutoAttack's log: its warnings (the checks' flags) and its progress lines."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.progress: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        (self.messages if record.levelno >= logging.WARNING else self.progress).append(record.getMessage())


@contextlib.contextmanager
def _flags() -> Iterator[tuple[list[str], list[str]]]:
    """AutoAttack's checks, as it logs or warns them."""
    logger = logging.getLogger("auto-attack")
    handler, level, propagate = _Collect(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    messages: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages, handler.progress
        messages.extend(str(w.message) for w in caught if "auto" in str(w.filename).lower()
                        or "autoattack" in str(w.message).lower() or "defense" in str(w.message).lower())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        messages[:0] = handler.messages
        seen: set[str] = set()
        messages[:] = [m for m in messages if not (m in seen or seen.add(m))]


_AFTER = re.compile(r"robust accuracy after ([A-Z0-9-]+): ([0-9.]+)%")


def _per_attack(progress: list[str], attacked: int, n: int) -> dict[str, float]:
    """Robust accuracy (of all ``n`` clips) after each attack, from AutoAttack's progress lines."""
    out = {}
    for line in progress:
        m = _AFTER.search(line)
        if m and n:
            out[m.group(1).lower()] = round(float(m.group(2)) / 100 * attacked) / n
    return out


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float,
                    num_classes: int, batch_size: int = 250, seed: int = 0,
                    confidence: float = 0.95) -> RobustAccuracy:
    """AutoAttack (standard) robust accuracy of ``model`` on inputs ``x`` (in [0, 1]) with labels ``y``.

    Every clip is given; AutoAttack attacks those the model classifies correctly. The model
    runs in eval mode with frozen weights, on the device of its parameters; torch's global
    RNG (which AutoAttack reseeds) is left as it was.
    """
    if norm not in NORMS:
        raise ParameterError(f"AutoAttack norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if num_classes < 4:
        raise ParameterError(f"AutoAttack's targeted DLR loss needs at least 4 classes; the model has {num_classes}")
    aa = _module()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = x.detach().to(device=device, dtype=torch.float32)
    y = y.detach().to(device=device, dtype=torch.long)
    n = int(len(x))
    net = _Logits(model)
    targets = min(STANDARD_TARGETS, num_classes - 1)
    t0 = time.perf_counter()
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with attack_mode(model), torch.random.fork_rng(devices=devices), _flags() as (messages, progress):
        torch.manual_seed(seed)
        attack = aa.AutoAttack(net, norm=NORMS[norm], eps=float(eps), version=VERSION, seed=seed, device=device)
        attack.apgd_targeted.n_target_classes = targets
        attack.fab.n_target_classes = targets
        with torch.no_grad():
            clean = torch.cat([net(x[i:i + batch_size]).argmax(1) for i in range(0, n, batch_size)]) == y \
                if n else torch.zeros(0, dtype=torch.bool, device=device)
        robust = clean.clone()
        per_attack: dict[str, float] = {}
        if int(clean.sum()) > 0:
            idx = torch.nonzero(clean).flatten()
            x_adv, y_adv = attack.run_standard_evaluation(x[idx], y[idx], batch_size=batch_size)
            with torch.no_grad():
                still = torch.cat([net(x_adv[i:i + batch_size]).argmax(1)
                                   for i in range(0, len(idx), batch_size)]) == y[idx]
            # the perturbation must lie within ε (AutoAttack's own final check, enforced)
            delta = (x_adv - x[idx]).flatten(1)
            size = {"linf": delta.abs().amax(1), "l2": delta.norm(dim=1), "l1": delta.abs().sum(1)}[norm]
            outside = size > eps * (1 + 1e-4) + 1e-6
            if bool(outside.any()):
                messages.append(f"{int(outside.sum())} adversarial input(s) lie outside the ε-ball; "
                                "they are counted as robust")
                still = still | outside
            robust[idx] = still
            per_attack = _per_attack(progress, len(idx), n)
    n_robust = int(robust.sum())
    lo, hi = binomial_interval(n_robust, n, confidence)
    return RobustAccuracy(norm=norm, eps=float(eps), robust_accuracy=n_robust / n if n else math.nan,
                          ci_low=lo, ci_high=hi, n=n, n_correct=int(clean.sum()), n_robust=n_robust,
                          per_attack=per_attack, warnings=tuple(messages), target_classes=targets,
                          seconds=time.perf_counter() - t0, library=f"pyautoattack {autoattack_version()}",
                          robust=tuple(bool(v) for v in robust.cpu().tolist()))
