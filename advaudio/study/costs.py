"""What a study's cells cost: the work each does, and an estimate of its time here.

Work is counted, not guessed:

* training: sample passes (training clips × epochs, per round);
* attacks: per attacked clip, the gradient steps and plain forwards (queries) each
  attack takes at its parameters, from the costs *measured* on real ESC-10 models
  with every early exit included (:data:`ATTACK_COSTS`, from
  ``benchmarks/bench_attack_cost.py``), scaled by the parameters a study sets
  (:func:`attack_work`), plus the reruns of the evaluation checks.

Time is estimated from the work in one of two ways, said beside every number:

* ``measured``: the mean seconds per unit of work of this study's finished cells of the
  same model, width and input size (their ``cell.json`` wall times);
* ``probe``: otherwise, a timed training step, attack gradient step (eval mode, frozen
  weights, the gradient w.r.t. the input only) and forward of the model on this machine,
  at the cell's input size.

A unit of work is one training sample pass; an attack gradient step and a forward
count as the fractions of one that the probe measured (:data:`DEFAULT_UNITS` without
a probe).  Checked on two finished attacked ESC-10 cells (ResNet-18 width 0.5, PGD 40
steps + DeepFool, checks; ``benchmarks/check_plan_estimate.py``): estimated from the
training-only cells of the same recipe, ×0.95 and ×1.02 of their measured times (README,
"Attack cost"); no cw/ead or decision-based cell has been checked yet.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from advaudio.study.cells import Cell, StorePlan
from advaudio.study.spec import StudySpec

__all__ = ["ATTACK_COSTS", "DEFAULT_UNITS", "AttackCost", "CellCost", "Units", "Work", "attack_work", "estimate",
           "format_seconds", "probe_units", "work"]


@dataclass(frozen=True)
class AttackCost:
    """Measured cost of one attack per attacked clip at its default parameters.

    ``gradient``/``forward``: gradient steps and plain forwards per clip, early exits
    included (fixed-budget attacks: the per-clip ε search at ``precision="clip"``, the
    study's; ``gradient_quantile``: at ``"quantile"``, the attack stage's default);
    ``per_constant``: cw/ead, the mean steps a clip took per constant (the early abort's
    point: a ``steps`` cap below it shortens every constant).
    """

    gradient: float
    forward: float = 0.0
    gradient_quantile: float | None = None
    per_constant: float | None = None
    polish: float = 0.0  # cw/ead: of ``gradient``, the steps of the polish after the search


#: Per attack at its defaults, measured by ``benchmarks/bench_attack_cost.py`` (and, for fgsm/bim/pgd,
#: ``benchmarks/bench_budget_search.py``) on 40 ESC-10 test clips of ResNet-18 models
#: (``benchmarks/results/``).
ATTACK_COSTS: dict[str, AttackCost] = {
    "fgsm": AttackCost(gradient=4.1, forward=4.8, gradient_quantile=3.2),
    "bim": AttackCost(gradient=64.3, forward=11.4, gradient_quantile=16.2),
    "pgd": AttackCost(gradient=236.6, forward=11.0, gradient_quantile=25.4),
    "deepfool": AttackCost(gradient=37.0, forward=2.0),
    # cw: benchmarks/results/cw-polish-r18s-2026-12-05.json, arm "default" (528.6 steps per clip: the search
    # 268.9 — pilot clips 8 constants, the others 3, 72.1 steps per constant — and the polish 259.7)
    "cw": AttackCost(gradient=528.6, per_constant=72.1, polish=259.7),
    # ead: ESC-10 r18s, 36 clips at the defaults (9 constants, no pilot, loss_patience 100): the search 1503.6
    # steps per clip, 167.1 per constant, and the polish's two whole runs 2000 (ead-r18s-2026-12-05-2.json;
    # the same from the clean start, -3); FISTA adds one plain forward per step (README, "Attack cost")
    "ead": AttackCost(gradient=3503.6, forward=3503.6, per_constant=167.1, polish=2000.0),
    "fmn": AttackCost(gradient=100.0, forward=1.0),
    # boundary, hopskipjump: at the 1000-query default every clip used its budget (1008.2 queries per clip with
    # the starting points' checks; benchmarks/results/attack-cw-boundary-hsj-esc10-r18s-2026-12-05.json)
    "boundary": AttackCost(gradient=0.0, forward=1008.2),
    "hopskipjump": AttackCost(gradient=0.0, forward=1008.2),
}

#: A waveform-domain attack step / a feature-domain one, per view: the front end's forward and backward
#: beside the model's (benchmarks/results/bench_waveform_attack-2026-12-05.json: 5 s clips, ResNet-18
#: width 0.25 at 64x64, one thread; a larger model makes the ratio smaller, so for it this overestimates).
WAVEFORM_STEP_COST = {"stft": 4.8, "dwt": 5.4, "stft+chroma": 12.0, "dwt+chroma": 16.8}


def waveform_step_cost(view: str) -> float:
    """:data:`WAVEFORM_STEP_COST` of ``view``; a view not measured takes the dearest measured view with a
    chroma-type representation when it has one (their CQT dominates), else the dearest without."""
    if view in WAVEFORM_STEP_COST:
        return WAVEFORM_STEP_COST[view]
    cqt = any(r in ("chroma", "tonnetz") for r in view.split("+"))
    return max(v for k, v in WAVEFORM_STEP_COST.items() if ("chroma" in k) == cqt)


#: Check (c) reruns at most this many clips per attack run (advaudio.attacks.checks' ``subset``;
#: cw/ead: the clips above the budget, at most ``EFFORT_CLIPS``).
CHECK_CLIPS = 16
EFFORT_CLIPS = 8


@dataclass(frozen=True)
class Units:
    """Seconds of one training sample pass, and an attack gradient step / forward as fractions of it."""

    train: float  # seconds per training sample pass (nan: not measured)
    gradient: float  # an attack gradient step / a training sample pass
    forward: float  # an attack forward / a training sample pass


#: Without a probe: the fractions measured here (ResNet-18, 2-core CPU, bench_attack_cost's probe).
DEFAULT_UNITS = Units(train=math.nan, gradient=0.6, forward=0.2)


@dataclass(frozen=True)
class Work:
    """Work of one cell: training sample passes, attacked clips, attack gradient steps and forwards."""

    train_samples: int
    attack_clips: int
    gradient_steps: float
    forwards: float

    def units(self, u: Units) -> float:
        """The work in training sample passes."""
        return self.train_samples + self.gradient_steps * u.gradient + self.forwards * u.forward

    def attack_units(self, u: Units) -> float:
        return self.gradient_steps * u.gradient + self.forwards * u.forward


@dataclass(frozen=True)
class CellCost:
    """Work of one cell and the time it is estimated (or was measured) to take."""

    train_samples: int  # sample passes of training, all rounds
    attack_clips: int  # clips × attacks, test and train splits, all rounds
    gradient_steps: float  # attack gradient steps (clips × measured steps per clip, checks included)
    seconds: float  # estimate (or the measured time of a done cell)
    source: str  # "measured" (done), "from done cells", "probe"
    forwards: float = 0.0  # attack forwards that are not gradient steps (decision-based queries, …)
    attack_share: float = math.nan  # attack work / training work (in training sample passes)


def _train_clips(store: StorePlan, cell: Cell) -> int:
    """Clips of the training folds (every fold but the test fold), from the store's plan."""
    per_fold = store.clips / max(1, len(store.folds))
    return int(round(per_fold * (len(store.folds) - 1)))


def attack_work(name: str, params, *, precision: str = "clip") -> tuple[float, float]:
    """(gradient steps, forwards) per attacked clip of attack ``name`` at ``params`` (its parameter
    dataclass): the measured cost at the defaults (:data:`ATTACK_COSTS`) scaled by what the
    parameters change — steps for fixed-budget attacks, DeepFool and FMN; constants and the
    per-constant cap for cw/ead (no early abort: every step); the query budget (or the steps,
    when they end sooner) for decision-based attacks."""
    cost = ATTACK_COSTS.get(name)
    if cost is None:  # a plugin: its nominal steps, one pass each
        steps = float(getattr(params, "steps", 1)) * float(getattr(params, "binary_search_steps", 1))
        return steps, 0.0
    default = type(params)()
    if name in ("fgsm", "bim", "pgd"):
        base = cost.gradient if precision == "clip" else (cost.gradient_quantile or cost.gradient)
        return base * params.steps / default.steps if hasattr(params, "steps") else base, 0.0
    if name == "deepfool":  # stops once the batch is fooled: more steps cost nothing, fewer cap it;
        # Foolbox differentiates every candidate class but the label at each step
        scale = min(1.0, params.steps / default.steps) * max(1, params.candidates - 1) / (default.candidates - 1)
        return cost.gradient * scale, cost.forward * scale
    if name == "fmn":  # every step, no early exit
        return cost.gradient * params.steps / default.steps, cost.forward * params.steps / default.steps
    if name in ("cw", "ead"):
        # the polish: its measured steps while it runs at the default patience, as many more with more
        # patience, never more than its two runs' caps
        polish = 0.0
        if params.polish_steps:
            measured = cost.polish if default.polish_steps else 2.0 * params.polish_steps
            polish = min(2.0 * params.polish_steps, measured * params.polish_patience / default.polish_patience)
        constants = params.binary_search_steps / default.binary_search_steps
        if not params.abort_early:
            per = float(params.steps) * params.binary_search_steps + polish
            return per, per if name == "ead" else 0.0
        per_constant = min(float(params.steps), (cost.per_constant or params.steps) * params.patience
                           / default.patience)
        scale = constants * per_constant / (cost.per_constant or per_constant)
        search = cost.gradient - (cost.polish if default.polish_steps else 0.0)
        forward_per_step = cost.forward / cost.gradient if cost.gradient else 0.0
        return search * scale + polish, (search * scale + polish) * forward_per_step
    if name in ("boundary", "hopskipjump"):
        return 0.0, min(float(params.max_queries), cost.forward * params.max_queries / default.max_queries)
    return cost.gradient, cost.forward


def defense_passes(spec: StudySpec, cell: Cell) -> float:
    """Forward + backward passes per training sample of ``cell``'s defense: 1 for clean training,
    steps + 1 for PGD-AT, steps + 2 for TRADES (its clean forward too), 2 for fast-AT."""
    if cell.defense in ("", "none"):
        return 1.0
    from advaudio.training.defenses import resolved_options

    options = resolved_options(cell.defense, dict(spec.defense_params.get(cell.defense, {})))
    steps = int(options.get("steps", 1))
    return {"pgd-at": steps + 1, "trades": steps + 2, "fast-at": 2}.get(cell.defense, 1.0)


def _check_work(name: str, params, clips: int, precision: str, threshold: float = 0.9) -> tuple[float, float]:
    """(gradient steps, forwards) of the evaluation checks after one run of ``name`` on ``clips`` tuned to
    ``threshold``."""
    if name in ("bim", "pgd"):  # (b) one FGSM step per clip; (c) steps and twice the steps on a subset
        return clips + min(CHECK_CLIPS, clips) * 3.0 * params.steps, 0.0
    if name in ("cw", "ead"):  # (c) twice the steps, constants and patience on the clips above the budget
        g, f = attack_work(name, params, precision=precision)
        rerun = min(EFFORT_CLIPS, clips - math.ceil(threshold * clips - 1e-9))
        return rerun * 2.0 * 2.0 * g, rerun * 2.0 * 2.0 * f
    return 0.0, 0.0


def work(spec: StudySpec, store: StorePlan, cell: Cell) -> Work:
    """The work of ``cell``: training (and retraining) sample passes; attacked clips with their gradient
    steps and forwards, test and training splits, every round, the evaluation checks included."""
    from advaudio.training import TrainConfig

    epochs = TrainConfig(store="-", **spec.train).epochs  # given, or the recipe's
    n_train = _train_clips(store, cell)
    samples = int(round(n_train * epochs * defense_passes(spec, cell)))
    if not cell.attacked:
        return Work(samples, 0, 0.0, 0.0)
    test = min(store.clips // max(1, len(store.folds)), spec.attack.limit or 10**9)
    train_attacked = min(n_train, spec.train_limit or 10**9)
    retrain_epochs = spec.retrain.epochs or epochs
    samples += cell.rounds * n_train * retrain_epochs
    runs = [test] * (cell.rounds + 1) + [train_attacked] * cell.rounds  # attack runs and their clips
    precision = spec.attack.search_precision()
    clips = grad = fwd = 0.0
    for name in spec.attack.attacks:
        params = spec.attack.attack_config(name).resolved().params
        g, f = attack_work(name, params, precision=precision)
        for n in runs:
            cg, cf = (_check_work(name, params, n, precision, spec.attack.threshold) if spec.attack.checks
                      else (0.0, 0.0))
            clips += n
            grad += n * g + cg
            fwd += n * f + cf
    if (cell.domain or spec.attack.domain) == "waveform":  # every query also runs the front end
        scale = waveform_step_cost(cell.view)
        grad, fwd = grad * scale, fwd * scale
    return Work(samples, int(clips), grad, fwd)


def _probe_model(cell: Cell, device: str):
    import torch

    from advaudio.models import create_model

    h, w = cell.input_size or (128, 128)
    model = create_model(cell.model, in_channels=1, num_classes=10, width=cell.width).to(device)
    return model, torch.rand(1, 1, h, w, device=device)


def probe_units(cell: Cell, *, batch: int = 16, repeats: int = 3, device: str = "cpu") -> Units:
    """Time, for ``cell``'s model here, a training step (forward, backward, optimiser step) per sample, and
    an attack gradient step (eval mode, frozen weights, gradient w.r.t. the input) and a forward as
    fractions of it; the best of ``repeats`` after a warm-up each."""
    import torch

    model, one = _probe_model(cell, device)
    x = one.expand(batch, *one.shape[1:]).clone()
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def best_of(step) -> float:
        best = math.inf
        for i in range(repeats + 1):  # the first pass warms caches up
            t = time.perf_counter()
            step()
            if i:
                best = min(best, time.perf_counter() - t)
        return best / batch

    def train_step() -> None:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.main_logits(model(x)), y)
        loss.backward()
        opt.step()

    train = best_of(train_step)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    def gradient_step() -> None:
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(model.main_logits(model(xa)).logsumexp(1).sum(), xa)

    def forward() -> None:
        with torch.no_grad():
            model(x)

    return Units(train=train, gradient=best_of(gradient_step) / train, forward=best_of(forward) / train)


def probe_seconds_per_sample(cell: Cell, *, batch: int = 16, repeats: int = 3, device: str = "cpu") -> float:
    """Seconds of one training forward + backward pass per sample of ``cell``'s model here."""
    return probe_units(cell, batch=batch, repeats=repeats, device=device).train


def estimate(spec: StudySpec, stores: dict[str, StorePlan], cells: list[Cell], done: dict[str, float], *,
             probe: bool = True) -> dict[str, CellCost]:
    """Cost of every cell; ``done`` maps the ids of finished cells to their measured seconds."""
    by_id = {c.cell_id: c for c in cells}
    units: dict[tuple, Units] = {}

    def units_of(cell: Cell) -> Units:
        key = (cell.model, cell.width, cell.input_size)
        if key not in units:
            units[key] = probe_units(cell) if probe else DEFAULT_UNITS
        return units[key]

    rates: dict[tuple, list[float]] = {}
    for cid, seconds in done.items():
        cell = by_id.get(cid)
        if cell is None:
            continue
        w = work(spec, stores[cell.dataset], cell)
        rates.setdefault((cell.model, cell.width, cell.input_size), []).append(
            seconds / max(1.0, w.units(units_of(cell))))
    out = {}
    for cell in cells:
        w = work(spec, stores[cell.dataset], cell)
        key = (cell.model, cell.width, cell.input_size)
        u = units_of(cell)
        share = w.attack_units(u) / w.train_samples if w.train_samples and w.attack_clips else math.nan
        if cell.cell_id in done:
            seconds, source = done[cell.cell_id], "measured"
        elif key in rates:
            seconds, source = w.units(u) * sum(rates[key]) / len(rates[key]), "from done cells"
        elif probe:
            seconds, source = w.units(u) * u.train, "probe"
        else:
            seconds, source = math.nan, "-"
        out[cell.cell_id] = CellCost(w.train_samples, w.attack_clips, w.gradient_steps, seconds, source,
                                     forwards=w.forwards, attack_share=share)
    return out


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
