"""Figures of the report: pure functions from numbers/arrays to a PNG file.

Every function takes plain numbers or arrays and an output path, draws with
matplotlib's Agg canvas (object-oriented API, never ``pyplot`` and never a
display, so it is safe on cluster nodes and inside other programs), writes the
PNG and returns its path. Missing values (``None``/NaN) are drawn as gaps or
marked, never silently as zeros.

* :func:`accuracy_by_round` — clean test accuracy per retraining round, one line per model/view;
* :func:`budget_by_round` — per attack, the budget at the fooling-rate threshold per round;
* :func:`fooling_rate_curves` — per attack, fooling rate against ε, one line per round;
* :func:`adversarial_grid` — the paper's Fig. 1: clean and adversarial spectrograms side by
  side, with the perturbation below each adversarial one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["accuracy_by_round", "budget_by_round", "fooling_rate_curves", "adversarial_grid", "LOG_RANGE"]

#: A panel gets a logarithmic y (or x) axis when its positive values span more than this factor.
LOG_RANGE = 20.0
DPI = 110


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _wide(values: Sequence[float]) -> bool:
    pos = [float(v) for v in values if _finite(v) and float(v) > 0]
    return len(pos) >= 2 and max(pos) / min(pos) > LOG_RANGE


def _panel_grid(n: int):
    """A figure with ``n`` panels (one "no data" panel when ``n`` is 0) and its flat axes."""
    n_rows, n_cols = _grid_shape(max(1, n))
    fig = Figure(figsize=(4.2 * n_cols, 3.4 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    if not n:
        axes[0].set_visible(True)
        _no_data(axes[0])
    return fig, axes


def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(n, max_cols))
    return int(math.ceil(n / cols)), cols


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


# --------------------------------------------------------------------------- #
# Accuracy and budget per round
# --------------------------------------------------------------------------- #
def accuracy_by_round(
    series: Mapping[str, Sequence[tuple[int, float | None]]],
    path: str | os.PathLike,
    *,
    title: str = "Clean test accuracy per round",
) -> Path:
    """Clean test accuracy (fraction in [0, 1], drawn in %) against the round.

    Parameters
    ----------
    series : label (e.g. ``"resnet18 · stft"``) → ``[(round, accuracy or None), …]``
    path : the PNG to write
    """
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    rounds: set[int] = set()
    drawn = 0
    for label, points in series.items():
        pts = sorted((int(r), float(a)) for r, a in points if _finite(a))
        rounds.update(int(r) for r, _ in points)
        if not pts:
            continue
        x, y = zip(*pts)
        ax.plot(x, [100.0 * v for v in y], marker="o", label=label)
        drawn += 1
    if drawn == 0:
        _no_data(ax)
    else:
        ax.set_xticks(sorted(rounds))
        ax.set_xlabel("round (0: trained on clean data)")
        ax.set_ylabel("clean test accuracy (%)")
        ax.set_ylim(0, 102)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    ax.set_title(title)
    return _save(fig, path)


def budget_by_round(
    budgets: Mapping[str, Mapping[str, Sequence[tuple[int, float | None]]]],
    path: str | os.PathLike,
    *,
    norms: Mapping[str, str] | None = None,
    threshold: float | None = None,
    title: str | None = None,
) -> Path:
    """Per attack (one panel each), the budget at the fooling-rate threshold against the round.

    Parameters
    ----------
    budgets : attack → series label (model/view) → ``[(round, budget or None), …]``;
        None marks a round where the threshold was not reached (drawn as an ✕ at the
        top of the panel, labelled "not reached")
    norms : attack → norm name, for the y label
    threshold : the fooling-rate threshold, for the title
    """
    attacks = list(budgets)
    fig, axes = _panel_grid(len(attacks))
    for ax, attack in zip(axes, attacks):
        per_series = budgets[attack]
        values = [b for pts in per_series.values() for _, b in pts if _finite(b)]
        log = _wide(values)
        rounds = sorted({int(r) for pts in per_series.values() for r, _ in pts})
        if not values:
            _no_data(ax, "threshold not reached")
        top = max(values) * (3.0 if log else 1.15) if values else 1.0
        for k, (label, pts) in enumerate(per_series.items()):
            pts = sorted((int(r), b) for r, b in pts)
            ok = [(r, float(b)) for r, b in pts if _finite(b)]
            missing = [r for r, b in pts if not _finite(b)]
            color = f"C{k % 10}"
            if ok:
                x, y = zip(*ok)
                ax.plot(x, y, marker="o", color=color, label=label)
            if missing and values:
                ax.plot(missing, [top] * len(missing), linestyle="none", marker="x", color=color,
                        markersize=9, label=f"{label}: not reached")
        if values:
            if log:
                ax.set_yscale("log")
            else:
                ax.set_ylim(0, top * 1.08)
            ax.set_xticks(rounds)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize="x-small")
        ax.set_xlabel("round")
        norm = (norms or {}).get(attack)
        ax.set_ylabel(f"budget ε ({norm})" if norm else "budget ε")
        ax.set_title(attack)
    head = title or "Budget at the fooling-rate threshold per round"
    if threshold is not None:
        head += f" (threshold {threshold:g})"
    fig.suptitle(head)
    return _save(fig, path)


# --------------------------------------------------------------------------- #
# Fooling-rate curves
# --------------------------------------------------------------------------- #
def fooling_rate_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    path: str | os.PathLike,
    *,
    norms: Mapping[str, str] | None = None,
    steps: Mapping[str, bool] | None = None,
    thresholds: Mapping[str, float] | None = None,
    budgets: Mapping[str, Mapping[str, float | None]] | None = None,
    dashed: Sequence[str] = (),
    title: str = "Fooling rate against the perturbation budget",
) -> Path:
    """Per attack (one panel each), fooling rate against ε, one line per round.

    Parameters
    ----------
    curves : attack → line label (e.g. ``"round 0 (before)"``) → ``[(ε, rate), …]`` (any order;
        sorted by ε here — the bisection probes of a fixed-budget attack come in probe order)
    norms : attack → norm name, for the x label
    steps : attack → True for minimisation attacks, whose points are an empirical CDF
        (drawn as a step function)
    thresholds : attack → fooling-rate threshold (dashed horizontal line)
    budgets : attack → line label → budget (dotted vertical line in the line's colour)
    dashed : line labels drawn dashed (e.g. the rounds after retraining); the others solid
    """
    attacks = list(curves)
    fig, axes = _panel_grid(len(attacks))
    for ax, attack in zip(axes, attacks):
        lines = curves[attack]
        eps_all = [e for pts in lines.values() for e, _ in pts if _finite(e)]
        step = bool((steps or {}).get(attack, False))
        drawn = 0
        for k, (label, pts) in enumerate(lines.items()):
            pts = sorted((float(e), float(r)) for e, r in pts if _finite(e) and _finite(r))
            color, style = f"C{k % 10}", "--" if label in dashed else "-"
            if pts:
                x, y = zip(*pts)
                if step:
                    x, y = (x[0],) + x, (0.0,) + y  # the CDF is 0 left of the smallest norm
                    ax.step(x, y, where="post", color=color, linestyle=style, label=label)
                else:
                    ax.plot(x, y, marker=".", color=color, linestyle=style, label=label)
                drawn += 1
            b = ((budgets or {}).get(attack) or {}).get(label)
            if _finite(b):
                ax.axvline(float(b), color=color, linestyle=":", linewidth=1)
        if drawn == 0:
            _no_data(ax)
        else:
            if _wide(eps_all):
                ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize="x-small", loc="lower right")
        thr = (thresholds or {}).get(attack)
        if _finite(thr):
            ax.axhline(float(thr), color="0.3", linestyle="--", linewidth=1)
        norm = (norms or {}).get(attack)
        ax.set_xlabel(f"ε ({norm})" if norm else "ε")
        ax.set_ylabel("fooling rate")
        ax.set_title(attack)
    fig.suptitle(title)
    return _save(fig, path)


# --------------------------------------------------------------------------- #
# The paper's Fig. 1
# --------------------------------------------------------------------------- #
def _as_images(a: Any, what: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float32)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{what}: expected one channel (N, 1, H, W), got {x.shape}")
        x = x[:, 0]
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"{what}: expected (N, H, W) or (N, 1, H, W), got {x.shape}")
    return x


def adversarial_grid(
    clean: Any,
    adversarials: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    titles: Mapping[str, str] | None = None,
    row_labels: Sequence[str] | None = None,
    difference: bool = True,
    diff_scale: str = "shared",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "magma",
    diff_cmap: str = "RdBu_r",
    title: str | None = None,
    ylabel: str = "band",
) -> Path:
    """Clean and adversarial spectrograms, the paper's Fig. 1.

    Rows are clips, columns the clean input and each adversarial version (one per
    attack, or per ε — any label). Spectrograms share one colour scale
    ``[vmin, vmax]`` (the model's input range [0, 1] by default) and one colour
    bar; with ``difference`` each clip gets a second row with the perturbation
    ``adversarial − clean`` on a symmetric diverging scale shared by the whole
    grid (its own colour bar), so the perturbations of different attacks compare
    at a glance. Images are drawn with ``origin="lower"`` (low frequencies at
    the bottom).

    Parameters
    ----------
    clean : ``(N, H, W)`` or ``(N, 1, H, W)`` model-space inputs
    adversarials : column label → array of the same shape as ``clean``
    path : the PNG to write
    titles : column label → title shown above the column (default the label)
    row_labels : one label per clip (e.g. clip id and class)
    diff_scale : ``"shared"``: one symmetric scale for every perturbation panel (one colour
        bar); ``"column"``: each column scaled to its own largest ``|δ|`` (written in the
        panel), for grids where one attack's perturbation is orders of magnitude smaller
        than another's and would otherwise show as blank
    """
    if diff_scale not in ("shared", "column"):
        raise ValueError(f"diff_scale must be 'shared' or 'column', got {diff_scale!r}")
    x = _as_images(clean, "clean")
    advs = {k: _as_images(v, k) for k, v in adversarials.items()}
    for k, v in advs.items():
        if v.shape != x.shape:
            raise ValueError(f"adversarial {k!r} has shape {v.shape}, clean has {x.shape}")
    n, h, w = x.shape
    labels = list(advs)
    n_cols = 1 + len(labels)
    per_clip = 2 if (difference and labels) else 1
    n_rows = max(1, n * per_clip)
    cell = 2.3 if w >= h else 1.8
    fig = Figure(figsize=(cell * n_cols + 1.4, 2.0 * n_rows + 0.8), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    deltas = {k: v - x for k, v in advs.items()}
    col_max = {k: max(float(np.abs(d).max()) if d.size else 0.0, 1e-12) for k, d in deltas.items()}
    dmax = max(list(col_max.values()) + [1e-12])
    image = diff_image = None
    aspect = "auto"
    for i in range(n):
        r = i * per_clip
        for j, key in enumerate([None] + labels):
            ax = axes[r, j]
            data = x[i] if key is None else advs[key][i]
            image = ax.imshow(data, origin="lower", aspect=aspect, cmap=cmap, vmin=vmin, vmax=vmax,
                              interpolation="nearest")
            if i == 0:
                ax.set_title("clean" if key is None else (titles or {}).get(key, key), fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                label = row_labels[i] if row_labels is not None and i < len(row_labels) else f"clip {i}"
                ax.set_ylabel(f"{label}\n{ylabel}", fontsize="x-small")
        if per_clip == 2:
            ax = axes[r + 1, 0]
            ax.axis("off")
            ax.text(0.5, 0.5, "perturbation\n(adversarial − clean)", ha="center", va="center",
                    fontsize="x-small", transform=ax.transAxes)
            for j, key in enumerate(labels, start=1):
                ax = axes[r + 1, j]
                m = dmax if diff_scale == "shared" else col_max[key]
                diff_image = ax.imshow(deltas[key][i], origin="lower", aspect=aspect, cmap=diff_cmap,
                                       vmin=-m, vmax=m, interpolation="nearest")
                if diff_scale == "column":
                    ax.text(0.02, 0.97, f"±{m:.3g}", transform=ax.transAxes, va="top", ha="left",
                            fontsize="xx-small", color="0.1",
                            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})
                ax.set_xticks([])
                ax.set_yticks([])
    if n == 0:
        _no_data(axes[0, 0], "no clips")
    if image is not None:
        fig.colorbar(image, ax=axes[:, -1].tolist(), shrink=0.6, label="model input (0–1)", location="right")
    if diff_image is not None:
        label = "perturbation" if diff_scale == "shared" else "perturbation (÷ column's max |δ|)"
        if diff_scale == "column":
            from matplotlib.cm import ScalarMappable
            from matplotlib.colors import Normalize

            diff_image = ScalarMappable(norm=Normalize(-1.0, 1.0), cmap=diff_cmap)
        fig.colorbar(diff_image, ax=axes[:, -1].tolist(), shrink=0.6, label=label, location="right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
