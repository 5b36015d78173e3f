"""The threat model's domain: where the attacker's perturbation lives, and the layer attacks run through.

Two domains (``AttackStageConfig.domain``; README, "Two threat models"):

``feature`` (the paper's)
    The attacker perturbs the model input, a view of the store in [0, 1]; budgets
    are norms in those units. The model the attacks see is the classifier.
``waveform``
    The attacker perturbs the clip's samples in [-B, B] (B = 1, full scale, or the
    largest decoded peak when a clip's decoding overshoots it); the model the attacks see
    is ``classifier ∘ front_end`` (:mod:`advaudio.frontend`: the store's transforms
    and the view in torch), so an adversarial example is a waveform that the
    store's own featurization turns into a fooling input. Budgets are waveform
    norms (L∞, L2, L1 in sample units) and, per clip, the signal-to-perturbation
    ratio ``10·log10(Σ clean² / Σ δ²)`` in dB.

*The attack space.* Every attack — fgsm, bim, pgd through the per-clip search, the
minimisation attacks, fmn, the decision-based ones, and any plugin — is written
for inputs in [0, 1] (their bounds, :data:`advaudio.attacks._model.BOUNDS`).  A
waveform-domain attack therefore runs, unchanged, on ``u = (w + B) / 2B`` of shape
``(N, 1, 1, samples)``: :class:`WaveformModel` maps it back (``w = 2B·u − B``,
:func:`to_waveform`) before the front end.  The map is affine, so the attacks'
geometry is the waveform's: the box [0, 1] is the box [-B, B], an ε-ball in u is
the 2Bε-ball in w in every norm, projections and clipping correspond.  B is 1
unless a clip as decoded peaks above full scale (resampling a clip normalised to
full scale overshoots it: 6 of ESC-10's 80 fold-5 clips reach 1.03–1.09); then it
is that peak, so no clean clip is clipped (a clipped clip would no longer be the
input the model was trained and evaluated on).  Every norm, budget and ε that
leaves this module is in waveform units (``2B`` times the attack space's,
:attr:`WaveformDomain.scale`): :meth:`WaveformDomain.convert` scales per-clip budgets and ε,
re-measures L1/L2/L∞/SNR on the waveforms themselves and re-verifies each
adversarial waveform through the front end.  Parameters that are not norms
(step sizes relative to ε, CW's constants, FMN's γ) apply in u; CW's distance term
is ‖δ_u‖² = ‖δ_w‖²/4, which its constant search absorbs.

*The clean clip* is the decoded clip as featurize decoded it
(:func:`load_clip_waveforms`, checked against its stored features), on the attack
space's float32 grid: ``2B·((w + B)/2B) − B`` (at most 6e-8 from the decoded
samples when B = 1, −144 dBFS; four float32 roundings at 2B, ≤ 5e-7·B, otherwise).  Stored adversarial waveforms are exactly what the model
saw, and an attack that does not move a sample leaves it exactly as it was.

*The CQT tuning* (``chroma``, ``tonnetz`` views of a store that estimates it per
clip) is not differentiable (a histogram's mode): it is frozen per clip at the
clean clip's estimate, as featurize made it.  An attack's queries are batches of
perturbed clips in an order only the attack knows, so :class:`WaveformModel` gives
each query the tuning of the clean clip nearest to it (L2) — its own clip for any
perturbation smaller than half the distance between two clips; decision-based
attacks that walk from another clip's starting point switch at the midpoint.  The
final adversarials are verified with their own clip's tuning, and the shard keeps it
(``tuning``), so ``front_end(waveform, tuning=tuning)`` gives the shard's features.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advaudio import layout
from advaudio.attacks.results import AttackResult, Note, TuningResult, perturbation_norms
from advaudio.attacks.tuning import minimisation_budget, quantile_budget
from advaudio.errors import AdvaudioError, ParameterError, StoreError
from advaudio.store.results import AttackRecord, AttackResults, Evaluation

__all__ = ["DOMAINS", "FEATURE", "SCALE", "WAVEFORM", "WAVEFORM_ROBUST_EPSILONS", "FeatureDomain", "WaveformDomain",
           "WaveformModel", "load_clip_waveforms", "make_domain", "threshold_snr_db", "to_attack_space",
           "to_waveform", "waveform_bound", "waveform_budgets"]

#: The threat models, the first the default.
DOMAINS = layout.DOMAINS
FEATURE, WAVEFORM = DOMAINS
#: The waveform's bounds (full scale).
WAVEFORM_BOUNDS = (-1.0, 1.0)
#: Waveform units per attack-space unit for clips within full scale: ``w = 2u − 1``.
SCALE = 2.0
#: ε per norm at which the waveform domain's robust accuracy is reported (sample units): L∞ from
#: −80 to −50 dBFS; L2 and L1 for 5-s clips at 22.05 kHz (110 250 samples) are an RMS of
#: 3·10⁻⁵ … 3·10⁻³ and a mean |δ| of 10⁻⁵ … 10⁻³.
WAVEFORM_ROBUST_EPSILONS: dict[str, tuple[float, ...]] = {
    "linf": (1e-4, 3e-4, 1e-3, 3e-3),
    "l2": (0.01, 0.03, 0.1, 0.3),
    "l1": (1.0, 3.0, 10.0, 30.0),
}


def waveform_bound(waveforms: np.ndarray) -> float:
    """B of the attack space: 1 (full scale), or the clips' largest |sample| when a decoding overshoots it."""
    peak = float(np.abs(np.asarray(waveforms, np.float32)).max()) if np.size(waveforms) else 0.0
    return max(1.0, peak)


def to_attack_space(waveforms: torch.Tensor | np.ndarray, bound: float = 1.0) -> torch.Tensor:
    """``(N, samples)`` waveforms in [-B, B] → ``(N, 1, 1, samples)`` attack-space inputs ``(w + B) / 2B``."""
    w = torch.as_tensor(waveforms, dtype=torch.float32)
    return ((w + bound) / (2.0 * bound)).clamp(0.0, 1.0).reshape(len(w), 1, 1, -1)


def to_waveform(u: torch.Tensor, bound: float = 1.0) -> torch.Tensor:
    """``(N, 1, 1, samples)`` attack-space inputs → ``(N, samples)`` waveforms ``2B·u − B``: the one map
    :class:`WaveformModel` applies, so a stored waveform is exactly what the model saw."""
    return u.flatten(1) * (2.0 * bound) - bound


class WaveformModel(nn.Module):
    """``classifier ∘ front_end ∘ (u ↦ 2u − 1)``: the model a waveform-domain attack sees.

    Inputs ``(B, 1, 1, samples)`` in [0, 1] (the attack space); logits out.  ``clean``
    (``(N, samples)``, on the classifier's device) and ``tuning`` (one CQT tuning per
    clean clip, or None) give each query its frozen tuning: that of the nearest clean
    clip (module docstring), looked up only when the clips' tunings differ.
    """

    def __init__(self, classifier: nn.Module, front_end: nn.Module, clean: torch.Tensor,
                 tuning: Sequence[float] | None, bound: float = 1.0):
        super().__init__()
        self.bound = float(bound)
        self.classifier = classifier
        self.front_end = front_end
        self.tuning = None if tuning is None else [float(t) for t in tuning]
        self._single = None
        self._clean = self._energy = None
        if self.tuning is not None:
            if len(self.tuning) != len(clean):
                raise ParameterError(f"{len(self.tuning)} tunings for {len(clean)} clips")
            if len(set(self.tuning)) <= 1:
                self._single = self.tuning[0] if self.tuning else 0.0
            else:
                self._clean = clean.detach().float()
                self._energy = self._clean.square().sum(1)

    def nearest(self, w: torch.Tensor) -> torch.Tensor:
        """Index of the clean clip nearest (L2) to each row of ``(B, samples)`` waveforms."""
        with torch.no_grad():
            w = w.detach().float()
            d = w.square().sum(1, keepdim=True) - 2.0 * (w @ self._clean.T) + self._energy[None, :]
            return d.argmin(1)

    def row_tuning(self, w: torch.Tensor) -> list[float] | float | None:
        """The frozen tuning of each row of ``w`` (None: the view has no CQT, or the store fixed it)."""
        if self.tuning is None:
            return None
        if self._single is not None:
            return self._single
        return [self.tuning[i] for i in self.nearest(w).tolist()]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        w = to_waveform(u, self.bound)
        return self.classifier(self.front_end(w, tuning=self.row_tuning(w)))


# --------------------------------------------------------------------------- #
# The clips' audio
# --------------------------------------------------------------------------- #
def load_clip_waveforms(store, rows: Sequence[int] | np.ndarray, *, root=None) -> np.ndarray:
    """``(len(rows), n_samples)`` float32 waveforms of store ``rows``, decoded as featurize decoded them
    (the dataset the store records, its options, rate, length and crop/pad policy; synthetic clips are
    regenerated from their seed).

    ``root`` overrides the recorded dataset root (the audio moved).  Every clip is tried; when any
    cannot be decoded — its file is gone or unreadable, or the dataset no longer lists it — one
    :class:`~advaudio.errors.StoreError` names each such clip, its recorded path and the reason.
    """
    from advaudio.datasets import load_clip, read_dataset
    from advaudio.features import FeatureConfig

    featurize = store.config.get("featurize") or {}
    if "dataset" not in featurize or "features" not in featurize:
        raise StoreError(f"store {store.directory} does not record its dataset and features: its clips' "
                         "waveforms cannot be found")
    where = root if root is not None else featurize.get("root")
    try:
        table = read_dataset(featurize["dataset"], root=where, **(featurize.get("dataset_options") or {}))
    except AdvaudioError as exc:
        raise StoreError(f"the audio of store {store.directory} cannot be read: dataset {featurize['dataset']!r} "
                         f"at {where}: {exc} (moved? pass its new root as audio_root / --audio-root)") from None
    by_id = {c.clip_id: c for c in table.clips}
    sr = int(FeatureConfig.from_dict(featurize["features"]).sr)
    n = int(store.config.get("n_samples", 0))
    out = np.zeros((len(rows), n), np.float32)
    problems = []
    for i, row in enumerate(np.asarray(rows, np.int64).ravel()):
        clip_id, path = str(store.clip_ids[int(row)]), str(store.paths[int(row)])
        clip = by_id.get(clip_id)
        if clip is None:
            problems.append(f"clip {clip_id} ({path}): not in dataset {featurize['dataset']!r} at {where} any more "
                            "(its audio is gone)")
            continue
        try:
            y = np.asarray(load_clip(table, clip, sr=sr), np.float32)
        except AdvaudioError as exc:
            problems.append(f"clip {clip_id} ({path}): {exc}")
            continue
        if y.shape != (n,):
            problems.append(f"clip {clip_id} ({path}): decodes to {y.size} samples, the store's clips have {n}")
            continue
        out[i] = y
    if problems:
        raise StoreError(_clips_error(store, len(problems), len(rows), problems,
                                      "whose audio cannot be decoded as featurize decoded it"))
    return out


def _clips_error(store, count: int, of: int, problems: list[str], what: str) -> str:
    shown = "; ".join(problems[:10]) + (f"; … ({len(problems) - 10} more)" if len(problems) > 10 else "")
    return (f"waveform domain: {count} of {of} clip(s) of store {store.directory} {what}, so no waveform of them "
            f"can be attacked: {shown}")


# --------------------------------------------------------------------------- #
# Budgets at the threshold
# --------------------------------------------------------------------------- #
def threshold_snr_db(snr_db: Any, fooled: Any, threshold: float) -> tuple[float, bool]:
    """The SNR at the fooling-rate threshold, and whether the threshold was reached.

    A larger SNR is a smaller perturbation, so the figure is taken the other way
    round from a norm's budget: the largest ``s`` such that at least
    ``⌈threshold·n⌉`` of the ``n`` attacked clips were fooled by a perturbation at
    least ``s`` dB below the clip (per-clip SNR ≥ s); a clip never fooled counts
    at −inf dB.  It is ``−quantile_budget(−snr)`` (the inverted-CDF quantile of the
    negated SNRs).  When fewer clips were fooled it is the smallest finite SNR and
    ``reached`` is False.  ``snr_db`` and ``fooled`` hold the attacked clips only.
    """
    snr = np.asarray(snr_db, np.float64).reshape(-1)
    ok = np.asarray(fooled, bool).reshape(-1)
    if snr.shape != ok.shape:
        raise ParameterError(f"snr_db has {snr.size} values for {ok.size} flags")
    value, reached = quantile_budget(np.where(ok, -snr, np.inf), threshold)
    return -value, reached


def waveform_budgets(result: AttackResult, threshold: float) -> dict[str, Any]:
    """Budgets at ``threshold`` over ``result``'s attacked clips in every waveform unit.

    ``linf``/``l2``: the inverted-CDF quantile of the clips' norms (the attack's own
    norm: its per-clip minimal budgets, :meth:`AttackResult.budget_norms`, the budget;
    the other: the norm of the same adversarial waveforms); ``snr_db``:
    :func:`threshold_snr_db` of those waveforms.  A clip not fooled counts as +inf
    (−inf dB).  ``reached``: whether ⌈threshold·n⌉ clips were fooled.
    """
    att = np.asarray(result.attacked, bool)
    fooled = np.asarray(result.success, bool)[att]
    out: dict[str, Any] = {"clips": int(att.sum())}
    if not att.any():
        return {**out, "linf": None, "l2": None, "snr_db": None, "reached": False}
    for norm in ("linf", "l2"):
        values = (result.budget_norms() if norm == result.norm else
                  np.where(result.success, result.norm_values(norm), np.inf))[att]
        budget, reached = quantile_budget(np.where(fooled, values, np.inf), threshold)
        out[norm] = None if math.isnan(budget) else float(budget)
    snr, reached = threshold_snr_db(np.asarray(result.snr_db, np.float64)[att], fooled, threshold)
    out["snr_db"] = float(snr) if math.isfinite(snr) else None
    out["reached"] = bool(reached)
    return out


# --------------------------------------------------------------------------- #
# The two domains, as the attack stage uses them
# --------------------------------------------------------------------------- #
class FeatureDomain:
    """The paper's threat model: the classifier on the view's inputs; nothing converted."""

    name = FEATURE

    def __init__(self, classifier: nn.Module, inputs: torch.Tensor):
        self.model = classifier
        self.inputs = inputs

    @property
    def robust_epsilons(self) -> dict[str, tuple[float, ...]]:
        from advaudio.attacks.checks import ROBUST_EPSILONS

        return ROBUST_EPSILONS

    def convert(self, tuning: TuningResult) -> tuple[TuningResult, np.ndarray | None]:
        return tuning, None

    def convert_evaluation(self, evaluation: Evaluation | None) -> Evaluation | None:
        return evaluation

    def record(self, tuning: TuningResult, record: AttackRecord) -> AttackRecord:
        return record  # the feature domain's records are as they always were

    def shard_arrays(self, waveforms: np.ndarray | None) -> dict[str, np.ndarray]:
        return {}

    def shard_attrs(self) -> dict[str, Any]:
        return {}

    def results(self, results: AttackResults) -> AttackResults:
        return results


_EPSILON_TEXT = re.compile(r"(ε=)([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")
#: Keys of a note's counts, and of a check record, that hold norms or ε.
_NOTE_NORMS = ("eps_low", "bracket", "budget_low", "epsilon", "budget")
_CHECK_NORMS = ("epsilon", "budget", "white_box_budget")


def _scaled(value: Any, scale: float) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value) * scale
    if isinstance(value, (list, tuple)):
        return [_scaled(v, scale) for v in value]
    return value


def _scaled_text(text: str | None, scale: float, values: Sequence[float] = ()) -> str | None:
    """``text`` with every ``ε=<number>`` and every number formatted as one of ``values`` (``.4g``)
    multiplied by ``scale`` (the attack space's sentences, in waveform units)."""
    if not text:
        return text
    text = _EPSILON_TEXT.sub(lambda m: f"{m[1]}{float(m[2]) * scale:g}", text)
    for v in values:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v:
            text = re.sub(rf"(?<![\w.=]){re.escape(format(v, '.4g'))}(?![\w.])", format(v * scale, ".4g"), text)
    return text


class WaveformDomain:
    """The waveform threat model of one set of clips: its model, attack-space inputs and conversions.

    Parameters
    ----------
    classifier : the trained model (eval mode is the attacks'), on its device
    front_end : the :class:`~advaudio.frontend.FrontEnd` of the classifier's view
    waveforms : ``(N, samples)`` decoded clean clips (:func:`load_clip_waveforms`)
    batch_size : clips per front-end pass when converting results
    """

    name = WAVEFORM

    def __init__(self, classifier: nn.Module, front_end: nn.Module, waveforms: np.ndarray, *,
                 batch_size: int = 64):
        from advaudio.attacks._model import model_device

        self.classifier, self.front_end, self.batch_size = classifier, front_end, int(batch_size)
        self.device = model_device(classifier)
        # per clip, as featurize estimated it from the decoded clip (None: no CQT, or the store fixed it)
        self.tuning = front_end.estimate_tuning(np.asarray(waveforms, np.float32))
        self.bound = waveform_bound(waveforms)
        self.scale = 2.0 * self.bound  # waveform units per attack-space unit
        self.inputs = to_attack_space(waveforms, self.bound)
        self.clean = to_waveform(self.inputs, self.bound).numpy()  # the clean clip on the attack space's grid
        self.model = WaveformModel(classifier, front_end, torch.from_numpy(self.clean).to(self.device), self.tuning,
                                   bound=self.bound)
        self.contract_max_abs: float | None = None  # set by :meth:`check_contract`

    # ---- the front end on waveforms, each clip with its own frozen tuning
    @torch.no_grad()
    def features(self, waveforms: np.ndarray, clips: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(model-space inputs ``(N, 1, H, W)`` float32, predicted classes) of ``(N, samples)`` waveforms of
        the domain's ``clips`` (indices; default: all, in order), each with its clip's frozen tuning."""
        clips = np.arange(len(waveforms)) if clips is None else np.asarray(clips, np.int64)
        feats, preds = [], []
        was_training = self.classifier.training
        self.classifier.eval()
        try:
            for a in range(0, len(waveforms), self.batch_size):
                w = torch.as_tensor(waveforms[a:a + self.batch_size], dtype=torch.float32, device=self.device)
                tuning = None if self.tuning is None else [self.tuning[i] for i in clips[a:a + len(w)]]
                x = self.front_end(w, tuning=tuning)
                feats.append(x.float().cpu())
                preds.append(self.classifier(x).argmax(1).cpu())
        finally:
            self.classifier.train(was_training)
        if not feats:
            return np.zeros((0,), np.float32), np.zeros(0, np.int64)
        return torch.cat(feats).numpy(), torch.cat(preds).numpy()

    def check_contract(self, stored: torch.Tensor, store, rows: np.ndarray, representations: Sequence[str]) -> float:
        """Max |front_end(clean) − stored view| over the clips; a StoreError naming every clip further off
        than the contract (:data:`advaudio.frontend.CONTRACT`): its audio no longer matches its features."""
        from advaudio.frontend import CONTRACT

        feats, _ = self.features(self.clean)
        error = np.abs(feats - stored.cpu().numpy()).reshape(len(feats), -1).max(axis=1) if len(feats) else \
            np.zeros(0)
        tolerance = max(CONTRACT.get(n, 1e-2) for n in representations)
        bad = np.flatnonzero(~(error <= tolerance))
        if len(bad):
            problems = [f"clip {store.clip_ids[int(rows[i])]} ({store.paths[int(rows[i])]}): its front end is "
                        f"{error[i]:.3g} off its stored features (contract {tolerance:g})" for i in bad]
            raise StoreError(_clips_error(store, len(bad), len(rows), problems,
                                          "no longer match their stored features (the audio changed since "
                                          "featurize, or the store is another's)"))
        return float(error.max()) if len(error) else 0.0

    @property
    def robust_epsilons(self) -> dict[str, tuple[float, ...]]:
        """:data:`WAVEFORM_ROBUST_EPSILONS` in attack-space units (the checks run there)."""
        return {k: tuple(e / self.scale for e in v) for k, v in WAVEFORM_ROBUST_EPSILONS.items()}

    def tuning_text(self) -> str:
        if self.front_end.chroma is None:
            return "no CQT in the view"
        if self.tuning is None:
            return f"fixed by the store ({self.front_end.tuning:g})"
        return "frozen per clip at the clean clip's estimate"

    # ---- attack space → waveform units
    def convert(self, tuning: TuningResult) -> tuple[TuningResult, np.ndarray | None]:
        """``tuning`` (found in the attack space) in waveform units, and the adversarial waveforms.

        Budgets, ε, brackets and the fooling-rate curve are scaled by :attr:`scale`;
        L1/L2/L∞/SNR are measured on the waveforms; every adversarial waveform is run
        through the front end with its clip's tuning and the classifier, and one that no
        longer fools (a rounding edge) counts as not fooled (the clean clip, noted).  The
        result's ``adversarial`` holds the model-space inputs of the waveforms.
        """
        res = tuning.result
        notes = [self._note()] + [self._scaled_note(n) for n in tuning.notes]
        if res is None:
            return dataclasses.replace(tuning, notes=notes, budget=tuning.budget * self.scale), None
        waves = to_waveform(torch.from_numpy(np.asarray(res.adversarial, np.float32)), self.bound).numpy()
        feats, pred = self.features(waves)
        attacked = np.asarray(res.attacked, bool)
        goal = pred == res.targets if res.targeted and res.targets is not None else pred != res.labels
        ok = np.asarray(res.success, bool) & goal & attacked
        lost = np.asarray(res.success, bool) & ~ok
        if lost.any():
            waves[lost] = self.clean[lost]
            feats[lost], _ = self.features(self.clean[lost], np.flatnonzero(lost))
            pred = np.where(lost, res.clean_predicted, pred)
            notes.append(Note("waveform-unverified", f"{int(lost.sum())} clip(s) whose adversarial waveform no "
                              "longer fooled the model through the front end with its own tuning: not fooled",
                              {"count": int(lost.sum())}))
        norms = perturbation_norms(self.clean, waves)
        scale = np.float64(self.scale)
        minimal = None if res.minimal_budget is None else np.where(lost, np.inf, res.minimal_budget * scale)
        low = None if res.minimal_budget_low is None else res.minimal_budget_low * scale
        config = dict(res.config)
        if isinstance(config.get("epsilon"), (int, float)) and not isinstance(config.get("epsilon"), bool):
            config["epsilon"] = float(config["epsilon"]) * self.scale
        result = dataclasses.replace(
            res, adversarial=feats, predicted=pred.astype(res.predicted.dtype), success=ok, **norms,
            epsilon=None if res.epsilon is None else res.epsilon * self.scale, minimal_budget=minimal,
            minimal_budget_low=low, config=config, notes=notes)
        tolerance = None if tuning.tolerance is None else {
            k: (_scaled(v, self.scale) if k in ("atol", "budget_low") else v) for k, v in tuning.tolerance.items()}
        common = dict(result=result, notes=notes, tolerance=tolerance, success_rate=result.success_rate)
        if tuning.search == "bisection":  # one ε for the batch: its success is the fooling rate
            within = ok if tuning.within_budget is None else np.asarray(tuning.within_budget, bool) & ok
            fooling = float(within[attacked].mean()) if attacked.any() else math.nan
            out = dataclasses.replace(
                tuning, **common, budget=tuning.budget * self.scale, within_budget=within, fooling_rate=fooling,
                evaluations=[(e * self.scale, r) for e, r in tuning.evaluations], stats=result.stats(within),
                reason=_scaled_text(tuning.reason, self.scale))
        else:  # per-clip minimal budgets or norms: the quantile, recomputed on the waveform units
            mb = minimisation_budget(result, tuning.threshold)
            reason = mb.reason
            probed = re.search(r" \(probed up to ε=[^)]*\)", tuning.reason or "")
            if reason and probed:
                reason += _scaled_text(probed.group(0), self.scale)
            out = dataclasses.replace(
                tuning, **common, budget=mb.budget, reached=mb.reached, within_budget=mb.within_budget,
                fooling_rate=mb.fooling_rate, evaluations=mb.evaluations, stats=mb.stats, reason=reason)
        return out, waves

    def _note(self) -> Note:
        return Note("waveform-domain",
                    f"waveform domain: the attack perturbed the clip's samples in [-{self.bound:.4g}, {self.bound:.4g}] "
                    f"through the front end of the view (it ran on u = (w + B)/2B in [0, 1]; budgets, ε and norms "
                    f"here are waveform units, {self.scale:.4g}× the attack space's); CQT tuning: "
                    f"{self.tuning_text()}",
                    {"scale": self.scale, "bound": self.bound, "tuning": self.tuning_text()})

    def _scaled_note(self, note: Note) -> Note:
        counts = {k: (_scaled(v, self.scale) if k in _NOTE_NORMS else v) for k, v in note.counts.items()}
        return Note(note.code, _scaled_text(note.text, self.scale), counts)

    def convert_evaluation(self, evaluation: Evaluation | None) -> Evaluation | None:
        """The evaluation checks and robust accuracy (run in the attack space) in waveform units."""
        if evaluation is None:
            return None
        checks = []
        for c in evaluation.checks or ():
            values = [v for k, v in c.values.items() if k in _CHECK_NORMS and isinstance(v, (int, float))]
            checks.append(dataclasses.replace(
                c, text=_scaled_text(c.text, self.scale, values),
                values={k: (_scaled(v, self.scale) if k in _CHECK_NORMS else v) for k, v in c.values.items()}))
        robust = None if evaluation.robust_accuracy is None else {
            norm: {**entry, "epsilons": [float(e) * self.scale for e in entry.get("epsilons") or []]}
            for norm, entry in evaluation.robust_accuracy.items()}
        return dataclasses.replace(evaluation, checks=None if evaluation.checks is None else tuple(checks),
                                   robust_accuracy=robust)

    # ---- what the stage writes
    def record(self, tuning: TuningResult, record: AttackRecord) -> AttackRecord:
        """``record`` with the domain and the waveform budgets of the converted ``tuning``
        (:func:`waveform_budgets`)."""
        budgets = waveform_budgets(tuning.result, tuning.threshold) if tuning.result is not None else None
        return record.with_values(domain=self.name, waveform_budgets=budgets)

    def shard_arrays(self, waveforms: np.ndarray | None) -> dict[str, np.ndarray]:
        if waveforms is None:
            return {}
        arrays = {"waveform": np.asarray(waveforms, np.float32)}
        if self.tuning is not None:
            arrays["tuning"] = np.asarray(self.tuning, np.float64)
        return arrays

    def shard_attrs(self) -> dict[str, Any]:
        """:class:`~advaudio.store.ShardAttrs` fields of the domain's shards."""
        return {"domain": self.name, "waveform_scale": self.scale, "tuning_rule": self.tuning_text()}

    def results(self, results: AttackResults) -> AttackResults:
        return results.with_values(domain=self.name, front_end={
            "tuning": self.tuning_text(), "scale": self.scale, "contract_max_abs": self.contract_max_abs})


def make_domain(name: str, *, classifier: nn.Module, view, store, rows: np.ndarray, batch_size: int = 64,
                audio_root=None) -> FeatureDomain | WaveformDomain:
    """The domain ``name`` for ``store`` ``rows`` attacked through ``classifier`` (on its device) in ``view``.

    ``waveform``: the clips decoded as featurize decoded them (:func:`load_clip_waveforms`), the
    view's front end (:func:`advaudio.frontend.from_store`), each clip checked against its stored
    features; a clip whose audio is gone or changed is a :class:`~advaudio.errors.StoreError`.
    """
    if name not in DOMAINS:
        raise ParameterError(f"domain must be one of {', '.join(DOMAINS)}, got {name!r}")
    with store.reader() as reader:
        stored = view.read(reader, rows)
    if name == FEATURE:
        return FeatureDomain(classifier, stored)
    from advaudio.frontend import from_store

    front_end = from_store(store, view)
    domain = WaveformDomain(classifier, front_end, load_clip_waveforms(store, rows, root=audio_root),
                            batch_size=batch_size)
    domain.contract_max_abs = domain.check_contract(stored, store, rows, view.representations)
    return domain
