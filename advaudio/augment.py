"""Augmentation in model space: SpecAugment masks, random gain, mixup and between-class mixing.

Every augmentation here acts on model inputs, a batch ``(B, 1, H, W)`` in [0, 1] as the
view returns it (:mod:`advaudio.views`), so it works alike for every view and for the
adversarial inputs that shards store in model space. They are written in plain torch
(a few lines each; torchaudio is in maintenance mode and is not a dependency).

* **Masks** (SpecAugment, Park et al. 2019): ``freq_masks`` bands of rows and
  ``time_masks`` bands of columns per sample, each of a width drawn uniformly from
  ``0 … round(width · H)`` (or ``W``) and placed uniformly inside the input, set to the
  sample's mean (Park et al. mask with the mean of their normalised spectrogram, 0).
* **Gain**: a random level change, uniform in ``[-gain_db, gain_db]`` dB. A gain of
  ``g`` dB adds ``g`` to every bin of a representation in dB of power (``stft``,
  ``dwt``: :data:`POWER_DB`), so in model space those rows move by ``g / (high - low)``
  of their normalisation (then clipped to [0, 1]); chroma (normalised per frame) and
  tonnetz do not change with the level and are left alone.
* **mixup** (Zhang et al. 2018): ``x = λ x_i + (1 − λ) x_j``, target
  ``λ e_{y_i} + (1 − λ) e_{y_j}``, ``λ ~ Beta(α, α)`` per sample, partner ``j`` from a
  random permutation of the batch.
* **Between-class mixing** (``bc``, Tokozume et al. 2018, "Learning from between-class
  examples for deep sound recognition"): the partner is drawn among the batch's samples of
  *another* class, the label ratio ``r ~ U(0, 1)``, and the inputs are mixed as sounds,
  not as images: BC mixes waveforms ``p s_1 + (1 − p) s_2`` with
  ``p = 1 / (1 + 10^((G_1 − G_2)/20) (1 − r)/r)`` (``G``: each sound's level in dB), so that
  the louder sound does not drown the ratio. In a power spectrogram a sum of sounds is
  (neglecting phase) the sum of their powers, so the dB rows are mixed as
  ``10 log10(p² 10^(d_1/10) + (1 − p)² 10^(d_2/10)) − 10 log10(p² + (1 − p)²)`` (BC's
  normalisation by ``sqrt(p² + (1 − p)²)``), computed with ``logaddexp``; ``G`` is the
  loudest frame's mean power in dB. Rows that are not in dB (chroma, an energy
  distribution per frame) take the power-weighted average of the two, frame by frame.

What a model-input row holds comes from the view (:func:`row_profile`): where the view's
resize blends two representations (a row or two at their border), the row counts as the
one that dominates it.

Randomness
----------
The draws for batch ``i`` of epoch ``e`` are made for the whole global batch, from
generators seeded by ``(seed, e, i, purpose)`` (:func:`advaudio.data.derive_seed`;
purposes: 2 time shift, 4 masks, 5 gain, 6 mixing), and every sample takes the draws of
its position in the batch. A sample's augmentation is therefore a function of
``(seed, epoch, global position)`` only: a DDP rank serving positions ``r, r + world, …``
applies exactly what one process applies to them, a resumed run continues identically,
and the DataLoader worker that serves a batch does not matter. Mixing pairs positions of
the global batch; the pairing depends on the plan alone (labels and sources of every
position, known to every rank), so under DDP each rank reads its partners' rows itself
and mixes them exactly as one process would (:class:`advaudio.data.StoreBatches`).

With adversarial inputs
-----------------------
Extra sources (the adversarial shards of retraining) are never mixed nor used as
partners: mixing an adversarial example scales its perturbation by ``λ`` and adds another
clip, so it is no longer an adversarial example of either, and its label no longer says
what it is. They get the time shift as before (the perturbation rolls with its clip) and,
only with ``extra = True``, masks and gain. For on-the-fly adversarial training the
attack should perturb the input the model is trained on: masks, gain and shifts come
first (the defense's loss receives the augmented batch, :mod:`advaudio.training.defenses`).
Pair mixing is off under a defense: ``TrainConfig`` resolves the recipe's ``mixing`` to
``"none"`` when ``defense`` is not ``"none"`` and refuses an explicit mixing there, since
an attack in the step needs each sample's own class, not a mixed pair's soft label.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from advaudio.augment_spec import MIXING, Augmentation  # light: the config validates with them
from advaudio.errors import ParameterError
from advaudio.views import View

#: Representations in dB of power (``10 log10`` of a power or energy): a level change is a shift.
POWER_DB = ("stft", "dwt")
#: Seed purposes of :func:`advaudio.data.derive_seed` (1: batch plan, 2: time shift, 3: dropout).
MASK_PURPOSE, GAIN_PURPOSE, MIX_PURPOSE = 4, 5, 6
_LN10_OVER_10 = math.log(10.0) / 10.0


# --------------------------------------------------------------------------- #
# What the rows of a view hold
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class RowProfile:
    """Per model-input row: whether it holds dB of power, and the dB mapped to 0 and 1 there."""

    db: torch.Tensor  # bool (H,)
    low: torch.Tensor  # float64 (H,): dB at 0
    span: torch.Tensor  # float64 (H,): dB per unit (high - low)

    @property
    def has_db(self) -> bool:
        return bool(self.db.any())


def row_profile(view: View) -> RowProfile:
    """What each row of ``view``'s model inputs holds, from the view's own transform.

    Each representation in turn is set to its ``high`` (1) and the others to their
    ``low`` (0): the transform's output row is then that representation's weight in
    the row (the resize is a convex combination of bands).
    """
    shapes = [(bands, view.frames) for bands, _ in view.shapes]
    weights = []
    for k in range(len(view.representations)):
        arrays = {name: np.full((1, *shape), hi if j == k else lo, np.float32)
                  for j, (name, shape, lo, hi) in enumerate(zip(view.representations, shapes, view.low, view.high))}
        weights.append(view.transform(arrays)[0, 0, :, 0].double())
    dominant = torch.stack(weights).argmax(0).tolist()
    low = torch.tensor([view.low[k] for k in dominant], dtype=torch.float64)
    high = torch.tensor([view.high[k] for k in dominant], dtype=torch.float64)
    db = torch.tensor([view.representations[k] in POWER_DB for k in dominant], dtype=torch.bool)
    return RowProfile(db=db, low=low, span=high - low)


# --------------------------------------------------------------------------- #
# Draws for a whole batch (every position), then applied to the samples at hand
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class MaskDraws:
    """Per position of the batch and per mask: first row/column and width."""

    freq_start: torch.Tensor
    freq_width: torch.Tensor
    time_start: torch.Tensor
    time_width: torch.Tensor

    def take(self, rows: torch.Tensor) -> MaskDraws:
        return MaskDraws(*(t[rows] for t in (self.freq_start, self.freq_width, self.time_start, self.time_width)))


def draw_masks(total: int, height: int, width: int, aug: Augmentation, generator: torch.Generator) -> MaskDraws:
    """Masks of every position of a batch of ``total``: widths uniform in ``0 … round(fraction · size)``,
    starts uniform over the places where the mask fits."""

    def axis(n_masks: int, fraction: float, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        most = min(size, int(round(fraction * size))) if n_masks else 0
        widths = torch.randint(0, most + 1, (total, n_masks), generator=generator)
        starts = (torch.rand((total, n_masks), generator=generator, dtype=torch.float64)
                  * (size - widths + 1)).floor().long()
        return starts, widths

    fs, fw = axis(aug.freq_masks, aug.freq_mask_width, height)
    ts, tw = axis(aug.time_masks, aug.time_mask_width, width)
    return MaskDraws(fs, fw, ts, tw)


def apply_masks_(x: torch.Tensor, draws: MaskDraws) -> torch.Tensor:
    """Set every sample's masked rows and columns to its mean (taken before masking), in place."""
    if x.shape[0] == 0:
        return x
    h, w = x.shape[-2:]
    fill = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    rows = torch.arange(h)
    cols = torch.arange(w)
    f_in = ((rows[None, None, :] >= draws.freq_start[..., None])
            & (rows[None, None, :] < (draws.freq_start + draws.freq_width)[..., None])).any(1)  # (N, H)
    t_in = ((cols[None, None, :] >= draws.time_start[..., None])
            & (cols[None, None, :] < (draws.time_start + draws.time_width)[..., None])).any(1)  # (N, W)
    mask = (f_in[:, :, None] | t_in[:, None, :]).view(x.shape[0], *([1] * (x.ndim - 3)), h, w).expand_as(x)
    x.copy_(torch.where(mask, fill.expand_as(x), x))
    return x


def draw_gains(total: int, max_db: float, generator: torch.Generator) -> torch.Tensor:
    """Gains in dB of every position, uniform in ``[-max_db, max_db]`` (float64)."""
    return (torch.rand(total, generator=generator, dtype=torch.float64) * 2.0 - 1.0) * float(max_db)


def apply_gain_(x: torch.Tensor, gains_db: torch.Tensor, profile: RowProfile) -> torch.Tensor:
    """Shift the dB rows of each sample by its gain (in model units), clip to [0, 1], in place."""
    if x.shape[0] == 0 or not profile.has_db:
        return x
    per_row = torch.where(profile.db, 1.0 / profile.span, torch.zeros_like(profile.span))  # units per dB
    offset = gains_db[:, None] * per_row[None, :]  # (N, H)
    offset = offset.view(x.shape[0], *([1] * (x.ndim - 3)), x.shape[-2], 1).to(x.dtype)
    x.add_(offset).clamp_(0.0, 1.0)
    return x


@dataclass(frozen=True)
class MixPlan:
    """Per position of a batch: its partner (itself when not mixed) and the weight of its own label."""

    partner: np.ndarray  # int64 (total,)
    weight: np.ndarray  # float64 (total,)

    @property
    def mixed(self) -> np.ndarray:
        return self.partner != np.arange(self.partner.size)


def plan_mixing(labels: np.ndarray, eligible: np.ndarray, method: str, alpha: float,
                rng: np.random.Generator) -> MixPlan:
    """Pairs and label weights for a batch with ``labels`` (every position).

    ``eligible``: the positions that may be mixed (and be partners); the others keep
    themselves with weight 1. ``mixup``: partners by a random permutation of the eligible
    positions, weights ``Beta(α, α)``; ``bc``: each partner drawn uniformly among the
    eligible positions of another class (none: not mixed), weights ``U(0, 1)``. Every draw
    is made for every position, whatever its eligibility, so a position's draws do not
    depend on the others'.
    """
    labels = np.asarray(labels, np.int64)
    total = labels.size
    eligible = np.asarray(eligible, bool)
    partner = np.arange(total, dtype=np.int64)
    weight = np.ones(total, np.float64)
    if method == "mixup":
        lam = rng.beta(alpha, alpha, size=total)
        where = np.flatnonzero(eligible)
        perm = rng.permutation(where.size)
        partner[where] = where[perm]
        weight[where] = lam[where]
    elif method == "bc":
        pick = rng.random(total)
        ratio = rng.random(total)
        for i in np.flatnonzero(eligible):
            others = np.flatnonzero(eligible & (labels != labels[i]))
            if others.size:
                partner[i] = others[min(int(pick[i] * others.size), others.size - 1)]
                weight[i] = ratio[i]
    elif method != "none":
        raise ParameterError(f"unknown mixing {method!r} (known: {', '.join(MIXING)})")
    weight[partner == np.arange(total)] = 1.0  # mixed with itself: the sample as it is
    return MixPlan(partner, weight)


def mix_targets(y: torch.Tensor, y_partner: torch.Tensor, weight: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``weight · e_y + (1 − weight) · e_y_partner`` (float32 ``(N, C)``)."""
    w = weight.to(torch.float64)[:, None]
    eye = torch.eye(num_classes, dtype=torch.float64)
    return (w * eye[y] + (1.0 - w) * eye[y_partner]).float()


def bc_coefficient(level_1: torch.Tensor, level_2: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """BC's waveform coefficient ``p`` of the first sound (Tokozume et al. 2018, eq. 2)."""
    r = ratio.to(torch.float64).clamp(1e-12, 1.0)
    return 1.0 / (1.0 + torch.pow(10.0, (level_1 - level_2) / 20.0) * (1.0 - r) / r)


def mix_inputs(x: torch.Tensor, x_partner: torch.Tensor, weight: torch.Tensor, method: str,
               profile: RowProfile | None = None) -> torch.Tensor:
    """The mixed inputs of :class:`MixPlan`'s pairs (a new tensor; ``weight`` 1 returns ``x``'s sample).

    ``mixup``: the convex combination. ``bc``: the sound mixture of the module docstring
    (``profile`` says which rows are dB of power).
    """
    if x.shape[0] == 0:
        return x.clone()
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    if method == "mixup":
        w = weight.to(x.dtype).view(shape)
        return w * x + (1.0 - w) * x_partner
    if method != "bc":
        raise ParameterError(f"mix_inputs: unknown mixing {method!r}")
    if profile is None or not profile.has_db:  # nothing to weigh the sounds by: BC with equal levels
        w = weight.to(x.dtype).view(shape)
        return w * x + (1.0 - w) * x_partner
    a, b = x.double(), x_partner.double()
    db_rows = profile.db.view(*([1] * (x.ndim - 2)), -1, 1)
    low = profile.low.view(*([1] * (x.ndim - 2)), -1, 1)
    span = profile.span.view(*([1] * (x.ndim - 2)), -1, 1)
    # natural log of each bin's power (dB · ln10/10), the dB rows only
    la = torch.where(db_rows, (low + a * span) * _LN10_OVER_10, torch.full_like(a, -math.inf))
    lb = torch.where(db_rows, (low + b * span) * _LN10_OVER_10, torch.full_like(b, -math.inf))
    n_db = float(profile.db.sum())
    frame_a = torch.logsumexp(la, dim=-2, keepdim=True) - math.log(n_db)  # mean power per frame (log)
    frame_b = torch.logsumexp(lb, dim=-2, keepdim=True) - math.log(n_db)
    level_a = frame_a.flatten(1).amax(1) / _LN10_OVER_10  # loudest frame, dB
    level_b = frame_b.flatten(1).amax(1) / _LN10_OVER_10
    p = bc_coefficient(level_a, level_b, weight).view(shape)
    log_p2, log_q2 = 2 * torch.log(p.clamp_min(1e-300)), 2 * torch.log((1 - p).clamp_min(1e-300))
    norm = torch.log(p * p + (1 - p) * (1 - p))
    mixed_db = (torch.logaddexp(la + log_p2, lb + log_q2) - norm) / _LN10_OVER_10
    db_part = ((mixed_db - low) / span).clamp(0.0, 1.0)
    share = torch.sigmoid((frame_a + log_p2) - (frame_b + log_q2))  # power share of the first sound per frame
    lin_part = share * a + (1.0 - share) * b
    out = torch.where(db_rows, db_part, lin_part)
    same = (weight >= 1.0).view(shape)  # not mixed: exactly the sample
    return torch.where(same, a, out).to(x.dtype)


__all__ = [
    "MIXING",
    "POWER_DB",
    "Augmentation",
    "MaskDraws",
    "MixPlan",
    "RowProfile",
    "apply_gain_",
    "apply_masks_",
    "bc_coefficient",
    "draw_gains",
    "draw_masks",
    "mix_inputs",
    "mix_targets",
    "plan_mixing",
    "row_profile",
]
