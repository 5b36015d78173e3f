"""What a study's cells cost: the work each does, and an estimate of its time here.

Work is counted, not guessed: training sample-passes (training clips × epochs, per
round) and attacked clips (per attack, test and training splits, per round). Time
is estimated from it in one of two ways, said beside every number:

* ``measured``: the mean seconds per unit of work of this study's finished cells of the
  same model, width and input size (their ``cell.json`` wall times);
* ``probe``: otherwise, a timed forward + backward pass of the model on this machine
  (a few batches at the cell's input size); an attack clip is counted as its
  nominal gradient steps of such passes — a rough figure (the per-clip search's probes
  vary), meant to tell a CPU day from a GPU hour before starting.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from advaudio.study.cells import Cell, StorePlan
from advaudio.study.spec import StudySpec

#: Gradient steps per attacked clip of one attack, as multiples of its ``steps``
#: (fixed-budget attacks: the per-clip ε search's probes; minimisation: one run).
_SEARCH_PROBES = 5.0


@dataclass(frozen=True)
class CellCost:
    """Work of one cell and the time it is estimated (or was measured) to take."""

    train_samples: int  # sample passes of training, all rounds
    attack_clips: int  # clips × attacks, test and train splits, all rounds
    gradient_steps: float  # nominal attack gradient steps (clips × steps per clip)
    seconds: float  # estimate (or the measured time of a done cell)
    source: str  # "measured" (done), "from done cells", "probe"


def _train_clips(store: StorePlan, cell: Cell) -> int:
    """Clips of the training folds (every fold but the test fold), from the store's plan."""
    per_fold = store.clips / max(1, len(store.folds))
    return int(round(per_fold * (len(store.folds) - 1)))


def _steps_per_clip(spec: StudySpec) -> float:
    from advaudio.attacks.params import FIXED_BUDGET

    total = 0.0
    for name in spec.attack.attacks:
        p = spec.attack.attack_config(name).params
        steps = float(getattr(p, "steps", 1)) * float(getattr(p, "binary_search_steps", 1))
        total += steps * (_SEARCH_PROBES if name in FIXED_BUDGET else 1.0)
    return total


def defense_passes(spec: StudySpec, cell: Cell) -> float:
    """Forward + backward passes per training sample of ``cell``'s defense: 1 for clean training,
    steps + 1 for PGD-AT, steps + 2 for TRADES (its clean forward too), 2 for fast-AT."""
    if cell.defense in ("", "none"):
        return 1.0
    from advaudio.training.defenses import resolved_options

    options = resolved_options(cell.defense, dict(spec.defense_params.get(cell.defense, {})))
    steps = int(options.get("steps", 1))
    return {"pgd-at": steps + 1, "trades": steps + 2, "fast-at": 2}.get(cell.defense, 1.0)


def work(spec: StudySpec, store: StorePlan, cell: Cell) -> tuple[int, int, float]:
    """(training sample passes, attacked clips, nominal gradient steps) of ``cell``."""
    epochs = int(spec.train.get("epochs", 30))
    n_train = _train_clips(store, cell)
    samples = int(round(n_train * epochs * defense_passes(spec, cell)))
    if not cell.attacked:
        return samples, 0, 0.0
    test = min(store.clips // max(1, len(store.folds)), spec.attack.limit or 10**9)
    train_attacked = min(n_train, spec.train_limit or 10**9)
    retrain_epochs = spec.retrain.epochs or epochs
    samples += cell.rounds * n_train * retrain_epochs
    clips = len(spec.attack.attacks) * ((cell.rounds + 1) * test + cell.rounds * train_attacked)
    per_clip = _steps_per_clip(spec) / max(1, len(spec.attack.attacks))
    return samples, clips, clips * per_clip


def probe_seconds_per_sample(cell: Cell, *, batch: int = 16, repeats: int = 3, device: str = "cpu") -> float:
    """Seconds of one training forward + backward pass per sample of ``cell``'s model here."""
    import torch

    from advaudio.models import create_model

    h, w = cell.input_size or (128, 128)
    model = create_model(cell.model, in_channels=1, num_classes=10, width=cell.width).to(device)
    x = torch.rand(batch, 1, h, w, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    best = math.inf
    for i in range(repeats + 1):  # the first pass warms caches up
        t = time.perf_counter()
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.main_logits(model(x)), y)
        loss.backward()
        opt.step()
        if i:
            best = min(best, time.perf_counter() - t)
    return best / batch


def estimate(spec: StudySpec, stores: dict[str, StorePlan], cells: list[Cell], done: dict[str, float], *,
             probe: bool = True) -> dict[str, CellCost]:
    """Cost of every cell; ``done`` maps the ids of finished cells to their measured seconds."""
    by_id = {c.cell_id: c for c in cells}
    rates: dict[tuple, list[float]] = {}
    for cid, seconds in done.items():
        cell = by_id.get(cid)
        if cell is None:
            continue
        samples, _, steps = work(spec, stores[cell.dataset], cell)
        rates.setdefault((cell.model, cell.width, cell.input_size), []).append(seconds / max(1.0, samples + steps))
    probes: dict[tuple, float] = {}
    out = {}
    for cell in cells:
        samples, clips, steps = work(spec, stores[cell.dataset], cell)
        key = (cell.model, cell.width, cell.input_size)
        if cell.cell_id in done:
            seconds, source = done[cell.cell_id], "measured"
        elif key in rates:
            seconds, source = (samples + steps) * sum(rates[key]) / len(rates[key]), "from done cells"
        elif probe:
            if key not in probes:
                probes[key] = probe_seconds_per_sample(cell)
            seconds, source = (samples + steps) * probes[key], "probe"
        else:
            seconds, source = math.nan, "-"
        out[cell.cell_id] = CellCost(samples, clips, steps, seconds, source)
    return out


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
