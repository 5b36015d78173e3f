"""The arithmetic of merging a job array's slices: the union's per-clip values → the set's numbers.

``advaudio attack --slice I/N`` tunes a budget on the I-th of N contiguous parts of the
clips; :mod:`advaudio.stages.merge` finds, checks, reads and writes the slices' files and
asks this module for the numbers of the merged set. Everything here takes arrays (or the
slices' recorded numbers) and returns numbers; no file is touched.

Budgets. A slice tunes its budget on its own clips.

* Minimisation attacks (deepfool, cw, ead, boundary, hopskipjump): a sample's minimal
  perturbation does not depend on the other samples, so the merged budget is the quantile
  of the union's minimal norms (:func:`union_budget`, the same
  :func:`~advaudio.attacks.tuning.minimisation_budget` one run uses), with
  ``within_budget``, the fooling rate, the CDF (``evaluations``) and the statistics
  exactly as one run over all clips. With ``--batch-size 1`` (one clip per attack call)
  the merged set of a deterministic attack equals an unsliced run bit for bit: deepfool
  (tested on CPU), and by the same reasoning cw and ead. With larger batches results may
  differ slightly: kernels round differently per batch size (deepfool: last float32 bits),
  and cw/ead's early abort watches the batch's summed loss. boundary and hopskipjump take
  starting points from the attacked batch and random draws seeded per batch, so a slice
  is a valid run on its clips but not the same draws as one unsliced run.
* Fixed-budget attacks (fgsm, bim, pgd) tuned by the per-clip search (their shards hold
  ``minimal_budget`` and ``minimal_budget_low``, each clip's bracket): they merge like
  minimisation attacks, the quantile of the union. With ``precision="clip"`` (the stage's
  default for slices) a clip's bracket depends on that clip only, so the merge equals one
  unsliced run exactly. With ``precision="quantile"`` a slice refined only the clips near
  its own quantile: the merged budget is still an upper bound of the union's quantile, the
  union's lower bounds give its bracket (:func:`union_precision`), and when that is wider
  than the tolerance the record says so.
* Fixed-budget attacks tuned by ``--search bisection``: each slice bisected its own ε. The
  union's fooling rate is known exactly only at an ε every slice probed
  (:func:`common_curve`, a weighted mean of the slices' rates); the merge takes the
  slices' largest budget, an upper bound of one run's (assuming the rate grows with ε).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from advaudio.attacks.results import AttackResult, Note, excluded_note
from advaudio.attacks.tuning import MinimisationBudget, budget_low, minimisation_budget

__all__ = ["common_curve", "merged_note", "mixed_budgets_note", "slice_sizes", "union_budget", "union_notes", "union_precision",
           "union_result"]

#: The per-sample norms of a shard, in the order :func:`union_result` reads them.
NORMS = ("l1", "l2", "linf", "snr_db")


def slice_sizes(total: int, count: int) -> list[int]:
    """Clips in each of ``count`` contiguous slices of ``total`` clips, as ``attack --slice`` cuts them
    (:func:`numpy.array_split`: the first ``total % count`` slices hold one clip more)."""
    return [len(a) for a in np.array_split(np.arange(total), count)]


def union_result(arrays: Mapping[str, np.ndarray], *, attack: str, kind: str, norm: str, targeted: bool,
                 config: Mapping[str, Any] | None) -> AttackResult:
    """The slices' concatenated shard arrays (``attacked``, ``success``, the norms, ``label``,
    ``predicted``[, ``target``, ``minimal_budget``, ``minimal_budget_low``]) as the
    :class:`AttackResult` of one run over all their clips (no queries or time: those are the
    slices' own, summed by the merge)."""
    def floats(key: str) -> np.ndarray | None:
        return np.asarray(arrays[key], np.float64) if key in arrays else None

    return AttackResult(
        attack=attack, kind=kind, norm=norm, epsilon=None, targeted=targeted, target_rule=None,
        config=dict(config or {}), adversarial=arrays["adversarial"], labels=arrays["label"],
        clean_predicted=arrays["predicted"], predicted=arrays["predicted"], targets=arrays.get("target"),
        attacked=np.asarray(arrays["attacked"], bool), success=np.asarray(arrays["success"], bool),
        **{k: floats(k) for k in NORMS}, queries=0, gradient_queries=0, wall_time_s=0.0,
        minimal_budget=floats("minimal_budget"), minimal_budget_low=floats("minimal_budget_low"),
    )


def union_budget(result: AttackResult, threshold: float) -> MinimisationBudget:
    """Budget, ``within_budget``, fooling rate, CDF and statistics of the union at ``threshold``:
    the inverted-CDF quantile of its per-clip minimal budgets, exactly as one run over all clips
    (:func:`~advaudio.attacks.tuning.minimisation_budget`). ``result`` needs an attacked clip."""
    return minimisation_budget(result, threshold)


def union_precision(result: AttackResult, threshold: float, budget: float, *, rtol: float, atol: float,
                    precision: str) -> tuple[float | None, Note | None]:
    """The merged budget's bracket ``(budget_low, budget]`` from the union's per-clip lower bounds,
    and a ``merged-precision`` note when it is wider than the tolerance ``max(atol, rtol·budget)``.

    ``budget_low`` is the quantile of the lower bounds (order statistics are monotone in every
    clip, so the union's true quantile lies in the bracket); None without lower bounds.
    ``precision`` names the slices' search precision(s) for the note.
    """
    low = budget_low(result, threshold)
    if low is None or not math.isfinite(budget) or budget - low <= max(atol, rtol * budget) + 1e-12:
        return low, None
    width = (budget - low) / budget
    return low, Note("merged-precision",
                     f"the union's budget is known to {100 * width:.1f} % (in ({low:.6g}, {budget:.6g}]), "
                     f"wider than the tolerance {100 * rtol:g} %: slices searched with precision "
                     f"{precision} refined only the clips near their own quantile",
                     {"budget_low": low, "width": width})


def common_curve(curves: Sequence[Sequence[Sequence[float | None]]], weights: Sequence[int]) -> list[list[float]]:
    """The union's fooling rate at each ε that every slice probed, in the first slice's order.

    ``curves`` are the slices' ``evaluations`` ([ε, rate] pairs, rates of their attacked
    clips; a null rate is no probe), ``weights`` their attacked clips: the union's rate at ε
    is the weighted mean of the slices' rates there, which is exact.
    """
    probed = [{float(e): rate for e, rate in curve if rate is not None} for curve in curves]
    out = []
    for eps, _ in curves[0] if curves else ():
        if all(float(eps) in c for c in probed):
            rate = sum(w * c[float(eps)] for w, c in zip(weights, probed)) / sum(weights)
            out.append([float(eps), float(rate)])
    return out


def merged_note(count: int) -> Note:
    """The note every merged record ends with."""
    return Note("merged", f"merged from {count} slice{'' if count == 1 else 's'} (advaudio store merge)",
                {"count": count})


def mixed_budgets_note(labels: Sequence[str], budgets: Sequence[float]) -> Note:
    """The note of a set merged from bisection slices that tuned different budgets (``labels``: "I/N")."""
    return Note("mixed-budgets",
                "merged with mixed budgets: each slice's examples were made at its own tuned ε ("
                + ", ".join(f"{label}: {b:.6g}" for label, b in zip(labels, budgets))
                + "); the budget is their maximum, an upper bound on what one run over all clips would find; "
                "evaluations are the union's fooling rates at the ε every slice probed",
                {"budgets": list(budgets)})


def union_notes(per_slice: Sequence[Sequence[Note]], slices: Sequence[tuple[int, int]], *, n_excluded: int,
                n: int) -> list[Note]:
    """The notes of the merged set: its own exclusion count (of ``n`` clips), then the slices' other
    notes, once if every slice has it, else once per slice that has it, marked with the slice."""
    notes = [excluded_note(n_excluded, n)] if n_excluded else []
    own = [[x for x in lst if x.code != "excluded-misclassified"] for lst in per_slice]
    order: list[Note] = []
    for lst in own:
        order += [x for x in lst if x not in order]
    for note in order:
        where = [sl for sl, lst in zip(slices, own) if note in lst]
        if len(where) == len(slices):
            notes.append(note)
        else:
            notes += [Note(note.code, f"slice {i}/{k}: {note.text}", {**note.counts, "slice": [i, k]})
                      for i, k in where]
    return notes
