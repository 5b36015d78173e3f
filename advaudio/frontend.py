"""The differentiable front end: waveform → model input, exactly as featurize + a view make it.

``FrontEnd(view, feature_config)`` is an ``nn.Module`` mapping a batch of
waveforms ``(B, samples)`` in [-1, 1] (decoded as featurize decoded them:
:func:`store_waveforms`) to the model input ``(B, 1, H, W)`` in [0, 1] that
:meth:`advaudio.views.View.read` returns for the same clips from the store. The
waveform-domain threat model attacks ``model ∘ front_end``: its gradients reach
the samples through the store's own transforms
(:mod:`advaudio.features.differentiable`), then the view's steps:

1. each representation clipped to its ``[low, high]`` (zero gradient outside,
   like every clip: a value the view saturates cannot be moved by a small
   perturbation),
2. appended along the bands in the view's order,
3. normalised and resized by the view's own matrices (the very weights of
   :class:`advaudio.views._Resizer`, with the normalisation folded in), or
   only normalised when no resize is needed,
4. clamped to [0, 1] (the resize weights are convex; this only removes float
   rounding, as in the view).

The tuning of the CQT (``chroma``, ``tonnetz``) is the one data-dependent step
that is not differentiable: see :mod:`advaudio.features.differentiable`. The
store's configuration fixes it or estimates it per clip; in the second case
pass the clean clips' estimate (:meth:`FrontEnd.estimate_tuning`) to
:meth:`FrontEnd.forward` while attacking, so that the attack differentiates the
transform the store applied to the clean clip.

The contract, measured (``benchmarks/frontend_contract.py``: all 400 ESC-10 clips,
float32 on a CPU, views of ResNet-18 checkpoints trained for 5 epochs at width
0.25 on 64×64 inputs; ``tests/test_frontend.py`` checks it on 20 clips):
``front_end(waveform)`` equals ``View.read`` to 1e-3 (``stft``, ``dwt``) and 1e-2
(``chroma``, ``tonnetz``) in model-input units, and the model's predictions agree
on at least 99 % of clips. Max |Δ| over the 400 clips:

=============  ============  ===============  =================
view           64×64         native size      predictions agree
=============  ============  ===============  =================
stft           4.2e-6        1.0e-4           100 %
dwt            1.8e-6        1.9e-5           100 %
chroma         1.9e-3        1.9e-3           100 %
tonnetz        2.1e-3        2.4e-3           100 %
dwt+chroma     1.4e-3        1.9e-3 (chroma)  100 %
stft+chroma    1.2e-3        1.9e-3 (chroma)  100 %
=============  ============  ===============  =================

That is with the store featurized with ``chroma_floor_db=80``. With librosa's
per-frame chroma normalisation (the default store), near-silent frames of 76
of the 400 clips are normalised rounding noise that no other arithmetic
reproduces: chroma is off by up to 0.97, tonnetz 0.42, and models trained on
that store agree on 97.0 % (chroma) and 93.5 % (tonnetz) of the clips. So
``chroma`` and ``tonnetz`` need the floor; ``stft`` and ``dwt`` need nothing.
:class:`FrontEnd` warns when a chroma view comes from an unfloored store.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from advaudio.errors import ParameterError, StoreError
from advaudio.features import IMPLEMENTATION, TRANSFORM_VERSION, FeatureConfig, feature_shapes, provenance
from advaudio.features.differentiable import STFT, ChromaCQT, WaveletPacketEnergy, _check_batch, _Constants
from advaudio.features.differentiable import tonnetz as _tonnetz
from advaudio.views import View

__all__ = ["CONTRACT", "FrontEnd", "from_store", "store_waveforms"]

#: The contract per representation: max |front_end(waveform) − View.read| in model-input units
#: (the measured maxima are in the module docstring). A clip further off than its view's largest
#: tolerance does not match its stored features (its audio changed, or another store's).
CONTRACT = {"stft": 1e-3, "dwt": 1e-3, "chroma": 1e-2, "tonnetz": 1e-2}


class FrontEnd(nn.Module):
    """``(B, samples)`` waveforms → ``(B, 1, H, W)`` model inputs of ``view``, differentiably.

    Built once per (view, store configuration): every filter, filter bank and
    resize matrix is made here or (CQT banks, per tuning value) on first use,
    and converted once per device and dtype. Follows its input's device
    (CPU, CUDA) and dtype (float32; float64 for ``gradcheck``).

    Parameters
    ----------
    view : View
        The fitted view (normalisation, input size), e.g. ``View.from_dict(checkpoint["view"])``.
    feature_config : FeatureConfig
        The store's transform parameters (``FeatureConfig.from_dict(store.config["featurize"]["features"])``).
    tuning : float or None
        CQT tuning for every clip, overriding the per-clip estimate; ignored
        when ``feature_config.tuning`` is set (the store used that one).
    n_samples : int or None
        Waveform length the view was fitted for (the store's ``n_samples``);
        checked against the view's frames now, else at the first call.
    """

    def __init__(self, view: View, feature_config: FeatureConfig, *, tuning: float | None = None,
                 n_samples: int | None = None):
        super().__init__()
        if not isinstance(view, View):
            raise ParameterError(f"view must be a fitted View, got {type(view).__name__}")
        if not isinstance(feature_config, FeatureConfig):
            raise ParameterError(f"feature_config must be a FeatureConfig, got {type(feature_config).__name__}")
        missing = [n for n in view.representations if n not in feature_config.representations]
        if missing:
            raise ParameterError(f"view {view.name} needs {', '.join(missing)}, which the store's "
                                 f"configuration does not compute")
        self.view, self.config = view, feature_config
        c = feature_config
        names = set(view.representations)
        self.stft = STFT(n_fft=c.n_fft, hop_length=c.hop_length, window=c.window, top_db=c.top_db,
                         amin=c.amin) if "stft" in names else None
        self.dwt = WaveletPacketEnergy(wavelet=c.wavelet, level=c.dwt_level, mode=c.dwt_mode,
                                       hop_length=c.hop_length, top_db=c.top_db,
                                       amin=c.amin) if "dwt" in names else None
        self.chroma = ChromaCQT(sr=c.sr, hop_length=c.hop_length, n_chroma=c.n_chroma,
                                bins_per_octave=c.bins_per_octave, n_octaves=c.n_octaves, fmin=c.fmin,
                                floor_db=c.chroma_floor_db) if names & {"chroma", "tonnetz"} else None
        if self.chroma is not None and c.chroma_floor_db is None:
            warnings.warn(
                f"view {view.name}: the store's chromagram is max-normalised per frame (chroma_floor_db=None); "
                "in frames of near digital silence that is rounding noise brought to full scale, which no other "
                "implementation reproduces and whose gradient is huge. The front end matches the store only "
                "elsewhere; featurize with chroma_floor_db=80 (advaudio featurize --chroma-floor-db 80) for "
                "waveform attacks on chroma or tonnetz views", UserWarning, stacklevel=2)
        self.tuning = c.tuning if c.tuning is not None else (None if tuning is None else float(tuning))
        self._constants = _Constants()
        self._checked_lengths: set[int] = set()
        if n_samples is not None:
            self._check_length(int(n_samples))
        # The view's own normalisation and resize matrices (float32, as View.read uses them).
        self._resize = None
        if view.input_size is not None and tuple(view.input_size) != (view.bands, view.frames):
            r = view._resizer()
            self._resize = (r.rows.numpy(), r.bias.view(-1, 1).numpy(),
                            None if r.cols is None else r.cols.numpy())

    def _check_length(self, n: int) -> None:
        if n in self._checked_lengths:
            return
        shapes = feature_shapes(self.config, n)
        for name, want in zip(self.view.representations, self.view.shapes):
            if tuple(shapes[name]) != tuple(want):
                raise ParameterError(
                    f"{n} samples give {name} of {shapes[name][0]}×{shapes[name][1]}, but view "
                    f"{self.view.name} was fitted on {want[0]}×{want[1]}: pass waveforms of the store's length"
                )
        self._checked_lengths.add(n)

    def estimate_tuning(self, waveforms: torch.Tensor | np.ndarray) -> list[float] | None:
        """Per-clip CQT tuning as featurize estimates it (None when the view has no chroma/tonnetz
        or the tuning is fixed). Take it on the clean clips and pass it to :meth:`forward`."""
        if self.chroma is None or self.tuning is not None:
            return None
        return self.chroma.estimate_tuning(waveforms)

    def features(self, waveforms: torch.Tensor, *, tuning: Sequence[float] | float | None = None
                 ) -> dict[str, torch.Tensor]:
        """The raw representations of the view, ``name → (B, bands, frames)``, as the store holds them.

        ``tuning``: per clip (or one value), used when the store estimated it
        per clip; None estimates it from ``waveforms`` (not differentiable).
        """
        y = _check_batch(waveforms)
        self._check_length(y.shape[-1])
        out: dict[str, torch.Tensor] = {}
        names = self.view.representations
        if "stft" in names:
            out["stft"] = self.stft(y)
        if "dwt" in names:
            out["dwt"] = self.dwt(y)
        if self.chroma is not None:
            t = self.tuning if self.tuning is not None else tuning
            if t is None:
                t = self.chroma.estimate_tuning(y)
            chroma = self.chroma(y, t)
            if "chroma" in names:
                out["chroma"] = chroma
            if "tonnetz" in names:
                out["tonnetz"] = _tonnetz(chroma, floored=self.chroma.floor_db is not None)
        return out

    def forward(self, waveforms: torch.Tensor, *, tuning: Sequence[float] | float | None = None) -> torch.Tensor:
        """``(B, 1, H, W)`` model inputs in [0, 1]; ``tuning`` as :meth:`features`."""
        return self.compose(self.features(waveforms, tuning=tuning))

    def compose(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The view of raw representations (``name → (B, bands, frames)``, e.g. :meth:`features`' output,
        which may hold more than the view needs): ``(B, 1, H, W)`` in [0, 1], differentiably."""
        view = self.view
        missing = [n for n in view.representations if n not in feats]
        if missing:
            raise ParameterError(f"view {view.name} needs {', '.join(missing)}; got {', '.join(feats)}")
        like = feats[view.representations[0]]
        if self._resize is None:
            parts = [(feats[n].clamp(lo, hi) - lo) * (1.0 / (hi - lo))
                     for n, lo, hi in zip(view.representations, view.low, view.high)]
            x = torch.cat(parts, dim=-2)
        else:
            x = torch.cat([feats[n].clamp(lo, hi) for n, lo, hi in zip(view.representations, view.low, view.high)],
                          dim=-2)
            rows, bias, cols = self._resize
            x = self._constants.get("rows", rows, like) @ x + self._constants.get("bias", bias, like)
            if cols is not None:
                x = x @ self._constants.get("cols", cols, like)
        return x.clamp(0.0, 1.0).unsqueeze(1)

    def extra_repr(self) -> str:
        return f"view={self.view.name!r}, output_shape={self.view.output_shape}, tuning={self.tuning}"


def _check_provenance(store) -> None:
    """StoreError when the store's transforms are not the ones this installation reproduces."""
    recorded = {k: store.config.get(k) for k in ("transform_version", "librosa_version", "chroma_implementation")}
    here = provenance()
    differing = [k for k, v in recorded.items() if v != here[k]]
    if differing:
        detail = ", ".join(f"{k}: store {recorded[k]!r}, here {here[k]!r}" for k in differing)
        raise StoreError(
            f"store {store.directory} was featurized by other transforms than the front end ports ({detail}); "
            f"refeaturize it with transform version {TRANSFORM_VERSION} and {IMPLEMENTATION}"
        )


def from_store(store, view: View | dict[str, Any], *, tuning: float | None = None) -> FrontEnd:
    """The :class:`FrontEnd` of ``view`` for ``store``: its recorded parameters and clip length.

    Parameters
    ----------
    store : an open :class:`~advaudio.store.Store` (or its directory)
    view : the fitted :class:`~advaudio.views.View`, or its ``to_dict()`` (a checkpoint's ``view``)
    tuning : see :class:`FrontEnd`

    Raises
    ------
    StoreError : the view does not fit the store, or the store was made by other transforms
    """
    from advaudio.store import Store

    store = store if isinstance(store, Store) else Store(store)
    view = view if isinstance(view, View) else View.from_dict(view)
    view.check_store(store)
    _check_provenance(store)
    featurize = store.config.get("featurize") or {}
    if "features" not in featurize or "n_samples" not in store.config:
        raise StoreError(f"store {store.directory} does not record its feature parameters and clip length")
    config = FeatureConfig.from_dict(featurize["features"])
    return FrontEnd(view, config, tuning=tuning, n_samples=int(store.config["n_samples"]))


def store_waveforms(store, rows: Sequence[int] | np.ndarray, *, root=None) -> np.ndarray:
    """``(len(rows), n_samples)`` float32 waveforms of store ``rows``, decoded as featurize decoded them.

    Re-reads the dataset the store records (name, root, options) and loads each
    clip with :func:`advaudio.datasets.load_clip` at the store's rate and
    length (its recorded crop/pad policy). ``root`` overrides the recorded root.
    """
    from advaudio.datasets import load_clip, read_dataset
    from advaudio.store import Store

    store = store if isinstance(store, Store) else Store(store)
    featurize = store.config.get("featurize") or {}
    if "dataset" not in featurize:
        raise StoreError(f"store {store.directory} does not record its dataset; cannot find the audio")
    table = read_dataset(featurize["dataset"], root=root if root is not None else featurize.get("root"),
                         **(featurize.get("dataset_options") or {}))
    by_id = {c.clip_id: c for c in table.clips}
    sr = int(FeatureConfig.from_dict(featurize["features"]).sr)
    out = []
    for row in np.asarray(rows, dtype=np.int64).ravel():
        clip = by_id.get(str(store.clip_ids[int(row)]))
        if clip is None:
            raise StoreError(f"clip {store.clip_ids[int(row)]!r} of store {store.directory} is not in "
                             f"dataset {featurize['dataset']!r} any more")
        out.append(np.asarray(load_clip(table, clip, sr=sr), np.float32))
    n = int(store.config.get("n_samples", out[0].size if out else 0))
    return np.stack(out) if out else np.zeros((0, n), np.float32)
