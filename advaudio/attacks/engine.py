"""Running one attack: clean classification, targets, chunks through Foolbox, verification.

Everything here works on a torch model (an :class:`torch.nn.Module` mapping inputs
in [0, 1] of shape ``(N, C, H, W)`` to logits) and tensors; files, stores and
checkpoints belong to the callers.  Every attack runs through
``foolbox.PyTorchModel(model, bounds=(0, 1))`` with the model in eval mode.

*Attacked samples.*  Only samples the clean model classifies correctly are attacked;
the others are excluded (``attacked`` is False, their "adversarial" is the clean input,
``success`` is False) and counted in ``n_excluded``.  All rates are over the attacked
samples only.

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

*Minimisation failures.*  Where a minimisation attack finds no adversarial (or its
result does not verify), ``adversarial`` holds the clean input and its minimal norm
is +inf.

*Queries* (see :mod:`advaudio.attacks._model`): ``gradient_steps`` =
gradient_queries / attacked samples (PGD with 40 steps: 40).  Foolbox evaluates whole
batches, so samples that are already done still count.  The clean classification and
the final verification are not counted.

The per-clip budget search of fixed-budget attacks runs its own torch loop with one ε
per sample (:mod:`advaudio.attacks.stepping`, Foolbox's algorithm); :func:`run_attack`
at one ε and the bisection go through Foolbox.

Performance: fixed-budget attacks at one ε also go through Foolbox.  eagerpy's gradient calls
``loss.backward()``, which computes every weight gradient too; runs therefore freeze
the model's parameters (``requires_grad`` off, restored afterwards), which brings
Foolbox's PGD to the cost of a hand-written torch loop (``benchmarks/bench_attack.py``:
≈1.0–1.1× on CPU, identical adversarials).  advaudio adds two forward passes per run
(clean classification, verification).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advaudio.attacks._foolbox import foolbox
from advaudio.attacks._model import (
    BOUNDS,
    CountingModel,
    as_inputs,
    as_labels,
    attack_mode,
    batched_logits,
    chunk_seed,
    model_device,
    seeded,
)
from advaudio.attacks.base import AttackContext, AttackSpec
from advaudio.attacks.params import FIXED_BUDGET, MINIMISATION, AttackConfig
from advaudio.attacks.registry import spec_of
from advaudio.attacks.results import AttackResult, Note, excluded_note, perturbation_norms
from advaudio.attacks.targets import targets_from
from advaudio.errors import ParameterError
from advaudio.progress import Throttle

#: Progress lines (INFO): chunks done, at most one line per 30 s of one run.
_log = logging.getLogger(__name__)

__all__ = ["Prepared", "auto_batch_size", "execute", "prepare", "run_attack"]

#: auto_batch_size: the CPU batch, the CUDA cap, the share of free memory used, the probe batch.
CPU_BATCH = 64
MAX_BATCH = 1024
MEMORY_FRACTION = 0.5
PROBE_BATCH = 8


def auto_batch_size(model: nn.Module, example: torch.Tensor, *, cpu_batch: int = CPU_BATCH,
                    max_batch: int = MAX_BATCH, memory_fraction: float = MEMORY_FRACTION,
                    probe_batch: int = PROBE_BATCH) -> int:
    """Samples per attack call for ``model`` on its device.

    CPU (or any device but CUDA): ``cpu_batch``.  CUDA: one forward and input-gradient
    backward at ``probe_batch`` copies of ``example`` (one input, ``(1, C, H, W)`` or
    ``(C, H, W)``) measures the peak memory per sample (``torch.cuda.max_memory_allocated``);
    the batch is the largest that fits in ``memory_fraction`` of the device's free memory
    (the rest: the attack's own copies of inputs and iterates, the allocator's slack), a
    multiple of 8 when at least 8, between 1 and ``max_batch``.
    """
    if cpu_batch < 1 or max_batch < 1 or probe_batch < 1 or not 0 < memory_fraction <= 1:
        raise ParameterError("auto_batch_size needs batches >= 1 and 0 < memory_fraction <= 1")
    device = model_device(model)
    if device.type != "cuda":
        return cpu_batch
    x1 = example.reshape(1, *example.shape[-3:]) if example.ndim >= 3 else example
    torch.cuda.synchronize(device)
    free, _ = torch.cuda.mem_get_info(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with attack_mode(model):
        x = x1.to(device=device, dtype=torch.float32).expand(probe_batch, *x1.shape[1:]).clone()
        x.requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            (grad,) = torch.autograd.grad(logits.float().logsumexp(1).sum(), x)
        del logits, grad, x
    torch.cuda.synchronize(device)
    per_sample = max(1.0, (torch.cuda.max_memory_allocated(device) - base) / probe_batch)
    n = int(memory_fraction * free // per_sample)
    if n >= 8:
        n -= n % 8
    return max(1, min(max_batch, n))


@dataclass
class Prepared:
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
    notes: list[Note]
    device: torch.device
    batch_size: int
    pool: torch.Tensor | None
    prep_time_s: float


def prepare(
    model: nn.Module,
    inputs: Any,
    labels: Any,
    *,
    config: AttackConfig,
    targets: Any,
    batch_size: int,
    starting_pool: Any,
) -> Prepared:
    t0 = time.perf_counter()
    spec = spec_of(config)
    cfg = config.resolved()
    if batch_size < 1:
        raise ParameterError("batch_size must be >= 1")
    device = model_device(model)
    x = as_inputs(inputs, device)
    y = as_labels(labels, len(x), device)
    with attack_mode(model):
        logits = batched_logits(model, x, batch_size)
    num_classes = logits.shape[1] if len(x) else 0
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ParameterError(f"labels must be in [0, {num_classes})")
    clean_pred = logits.argmax(1) if len(x) else y.clone()
    attacked = clean_pred == y
    notes: list[Note] = []
    excluded = int((~attacked).sum())
    if excluded:
        notes.append(excluded_note(excluded, len(x)))
    targeted, plan_notes = spec.plan(cfg)
    notes += plan_notes
    tgt = None
    if targeted:
        if targets is not None:
            tgt = as_labels(targets, len(x), device, "targets")
            if bool(((tgt == y) & attacked).any()):
                raise ParameterError("a target equals the true class of an attacked sample")
            if len(tgt) and (int(tgt.min()) < 0 or int(tgt.max()) >= num_classes):
                raise ParameterError(f"targets must be in [0, {num_classes})")
            notes.append(Note("targets-given", "targets given by the caller"))
        else:
            tgt = targets_from(cfg.target_rule, y.cpu(), logits.cpu(), num_classes, cfg.seed, None)
            tgt = tgt.to(device)
    elif targets is not None:
        notes.append(Note("targets-ignored", "targets ignored: the run is untargeted"))
    pool = None
    if spec.uses_pool(cfg.params):
        pool = x if starting_pool is None else as_inputs(starting_pool, device)
    return Prepared(
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


def execute(prep: Prepared, epsilon: float | None, starting_pool_given: bool) -> AttackResult:
    t0 = time.perf_counter()
    spec, cfg, model = prep.spec, prep.config, prep.model
    if spec.kind == FIXED_BUDGET:
        epsilon = cfg.params.epsilon if epsilon is None else epsilon
        if epsilon is None:
            raise ParameterError(
                f"{spec.name} is a fixed-budget attack: give epsilon (or use tune_budget)"
            )
        if not (math.isfinite(epsilon) and epsilon >= 0):
            raise ParameterError(f"epsilon must be finite and >= 0, got {epsilon}")
        epsilon = float(epsilon)
        cfg = cfg.replace(epsilon=epsilon)
    elif epsilon is not None:
        raise ParameterError(
            f"{spec.name} is a minimisation attack and takes no epsilon; use "
            "tune_budget or AttackResult.budget_norms()"
        )
    fb = foolbox()
    x, y = prep.x, prep.labels
    adv = x.clone()
    counters: dict[str, int] = {}
    counter = CountingModel(model)
    with attack_mode(model):
        counter.eval()
        fmodel = fb.PyTorchModel(counter, bounds=BOUNDS, device=prep.device)
        run = AttackContext(fb=fb, fmodel=fmodel, counter=counter, model=model, device=prep.device,
                   batch_size=prep.batch_size)
        if prep.pool is not None:
            run.pool_x = prep.pool
            if starting_pool_given or prep.pool is not x:
                run.pool_pred = batched_logits(counter, prep.pool, prep.batch_size).argmax(1)
            else:
                # the pool is the batch: its clean predictions are what the attacker saw
                counter.queries += len(x)
                run.pool_pred = prep.clean_pred
        idx = prep.attacked.nonzero().flatten()
        throttle = Throttle()  # a line at most every 30 s: runs of minutes say how far they are
        for chunk, s in enumerate(range(0, len(idx), prep.batch_size)):
            sel = idx[s : s + prep.batch_size]
            t = prep.targets[sel] if prep.targets is not None else None
            with seeded(chunk_seed(cfg.seed, chunk), prep.device):
                out = spec.execute(run, x[sel], y[sel], t, config=cfg, epsilon=epsilon,
                                   counters=counters)
            adv[sel] = out.detach().to(torch.float32).clamp(*BOUNDS)
            if _log.isEnabledFor(logging.INFO) and throttle.due():
                _log.info("%s: %d of %d clips attacked (%s)", spec.name, s + len(sel), len(idx),
                          throttle.elapsed())
        pred = batched_logits(model, adv, prep.batch_size).argmax(1)
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
        norm=cfg.params.norm,
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
        epsilon: budget of fixed-budget attacks (overrides ``config.params.epsilon``);
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
    prep = prepare(model, inputs, labels, config=config, targets=targets,
                    batch_size=batch_size, starting_pool=starting_pool)
    return execute(prep, epsilon, starting_pool is not None)

