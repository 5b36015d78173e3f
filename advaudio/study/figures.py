"""Figures of the study report: pure functions from numbers/arrays to a PNG file.

Drawn like :mod:`advaudio.reporting.figures` (matplotlib's Agg canvas, never
``pyplot``; missing values are marked, never drawn as zeros):

* :func:`heat_map` — a model × view matrix of one number, each cell annotated;
* :func:`fooling_rate_ecdfs` — per attack, the empirical CDF of the attacked clips'
  minimal norms (the fooling rate against ε), before solid and after dashed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from advaudio.reporting.figures import _no_data, _save, fooling_rate_curves

__all__ = ["ecdf_points", "fooling_rate_ecdfs", "heat_map"]


def heat_map(
    values: Any,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    path: str | os.PathLike,
    *,
    annotations: Sequence[Sequence[str]] | None = None,
    title: str = "",
    colorbar_label: str = "",
    cmap: str = "viridis",
    center: float | None = None,
    log: bool = False,
    vmin: float | None = None,
    vmax: float | None = None,
) -> Path:
    """A matrix of numbers as coloured cells, each annotated with its text.

    Parameters
    ----------
    values : ``(rows, cols)``; NaN: no value (a grey cell, annotated "—" unless told
        otherwise); ±inf is drawn at the end of the colour scale
    row_labels, col_labels : e.g. models and views
    annotations : the text in each cell (default the value with 3 significant digits)
    center : a diverging scale symmetric about this value (e.g. 0 for a change, 1 for a ratio)
    log : colour by log(value) (ratios: ×2 and ×½ equally far from 1); values ≤ 0 are no value
    vmin, vmax : the colour scale's ends (default: the finite values' range)
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values of shape {v.shape} do not fit {len(row_labels)} rows × {len(col_labels)} columns")
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(v > 0, np.log(v), np.nan) if log else v.copy()
    ctr = (math.log(center) if log else center) if center is not None else None
    lo = None if vmin is None else (math.log(vmin) if log else vmin)
    hi = None if vmax is None else (math.log(vmax) if log else vmax)
    finite = c[np.isfinite(c)]
    if finite.size:
        lo = float(finite.min()) if lo is None else lo
        hi = float(finite.max()) if hi is None else hi
    else:
        lo, hi = (lo if lo is not None else 0.0), (hi if hi is not None else 1.0)
    if ctr is not None:
        span = max(abs(hi - ctr), abs(lo - ctr), 1e-12)
        lo, hi = ctr - span, ctr + span
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    shown = np.clip(c, lo, hi)  # ±inf at the scale's ends
    shown[np.isnan(c)] = np.nan
    n_rows, n_cols = v.shape
    fig = Figure(figsize=(1.9 * max(1, n_cols) + 2.6, 0.62 * max(1, n_rows) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    if v.size == 0:
        _no_data(ax)
    else:
        import matplotlib

        cm = matplotlib.colormaps[cmap].with_extremes(bad="0.85")
        image = ax.imshow(np.ma.masked_invalid(shown), cmap=cm, vmin=lo, vmax=hi, aspect="auto",
                          interpolation="nearest")
        for i in range(n_rows):
            for j in range(n_cols):
                text = annotations[i][j] if annotations is not None else ("—" if math.isnan(v[i, j])
                                                                           else f"{v[i, j]:.3g}")
                if np.isnan(shown[i, j]):
                    color = "0.25"
                else:
                    r, g, b, _ = cm((shown[i, j] - lo) / (hi - lo))
                    color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize="small", color=color)
        ax.set_xticks(range(n_cols), list(col_labels))
        ax.set_yticks(range(n_rows), list(row_labels))
        ax.tick_params(length=0)
        bar = fig.colorbar(image, ax=ax, shrink=0.9)
        if log:  # ticks at round ratios (×½, ×1, ×2 …), not at round logarithms
            nice = [f * 10.0**e for e in range(-3, 4) for f in (1.0, 2.0, 5.0)]
            ticks = [t for t in nice if lo <= math.log(t) <= hi]
            bar.set_ticks([math.log(t) for t in ticks], labels=[f"{t:g}" for t in ticks])
        bar.set_label(colorbar_label)
    ax.set_title(title)
    return _save(fig, path)


def ecdf_points(norms: Any) -> list[tuple[float, float]]:
    """The fooling rate at each finite minimal norm: ``(ε, fraction of clips with norm ≤ ε)``.

    Never-fooled clips (+inf) count in the denominator only, so the curve ends below 1.
    """
    v = np.sort(np.asarray(norms, np.float64).reshape(-1))
    if v.size == 0:
        return []
    finite = v[np.isfinite(v)]
    eps = np.unique(finite)
    counts = np.searchsorted(finite, eps, side="right")
    return [(float(e), float(k) / v.size) for e, k in zip(eps, counts)]


def fooling_rate_ecdfs(
    curves: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    dashed: Sequence[str] = (),
    norms: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    budgets: Mapping[str, Mapping[str, float | None]] | None = None,
    title: str = "Fooling rate against ε",
) -> Path:
    """Per attack (one panel each), the fooling rate against ε from the per-clip minimal norms.

    Parameters
    ----------
    curves : attack → line label (e.g. ``"before (round 0)"``) → minimal norms (+inf: never fooled)
    dashed : labels drawn dashed (the rounds after retraining); the others solid
    norms : attack → norm name, for the x label
    thresholds : attack → fooling-rate threshold (a grey dashed horizontal line)
    budgets : attack → label → budget (a dotted vertical line in the line's colour); None: not reached
    """
    points = {attack: {label: ecdf_points(n) for label, n in lines.items()} for attack, lines in curves.items()}
    return fooling_rate_curves(points, path, norms=norms, steps={a: True for a in points}, thresholds=thresholds,
                               budgets=budgets, dashed=dashed, title=title)
