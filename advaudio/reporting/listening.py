"""Listening to an attack: adversarial STFT inputs back to audio.

An adversarial example of this tool lives in *model space*: a ``(1, H, W)``
image in [0, 1] made from the store's log-magnitude STFT by the model's view
(:mod:`advaudio.views`). To hear it, :func:`listen` undoes each step:

1. **resize back** — when the view resized ``(bands, frames)`` to ``input_size``,
   the image is resized back to ``(bands, frames)`` with bilinear interpolation
   (``align_corners=False``, as the forward resize). Downsampling 513 bins to a
   few dozen rows averaged neighbouring bins; upsampling cannot restore them, so
   the result is a smoothed spectrogram;
2. **undo the normalisation** — ``dB = low + x · (high − low)`` with the view's
   ``low``/``high`` of the ``stft`` representation;
3. **dB → magnitude** — the store's ``stft`` is ``10·log10(|S|²) = 20·log10(|S|)``
   in absolute dB (``ref=1.0``, :func:`advaudio.features.stft`), so ``|S| = 10^(dB/20)``;
4. **phase** — ``method="phase"`` (default) combines the magnitude with the phase
   of the *clean* clip's STFT (recomputed from its audio with the store's
   parameters) and inverts with ``librosa.istft``; ``method="griffinlim"``
   estimates a phase with ``librosa.griffinlim`` instead (seeded, so reruns agree).

What is lost, and why the clean clip is resynthesised too
---------------------------------------------------------
The forward path is not invertible: the view **clips** values outside
``[low, high]`` to the [0, 1] bounds — everything quieter than ``low`` (the
0.5th training percentile by default: the ``top_db`` floor, digital silence,
quiet high bands) becomes exactly ``low`` dB after inversion, so the dB floor
information below ``low`` is gone, and peaks above ``high`` are flattened;
``top_db`` had already floored each clip at ``max − top_db``; a resize blurs
across bins. So the WAV of the adversarial input differs from the clean clip by
the perturbation *and* by these losses. :func:`listen` therefore writes three
files: the clean clip as it was featurized, the clean clip **re-synthesised
through the same path** (its clean model input → audio, same phase), and the
adversarial one. Compare the last two: they differ only by the perturbation.
Its size is reported twice, as a signal-to-noise ratio
``10·log10(Σ clean² / Σ (adversarial − clean)²)``:

* ``snr_db_waveform`` — clean resynthesis vs adversarial resynthesis, in the
  waveform domain (exactly the samples written to the two WAV files);
* ``snr_db_spectrogram`` — clean vs adversarial model input (the [0, 1] image the
  attack perturbed; equals the shard's per-sample ``snr_db``).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from advaudio.errors import ParameterError, StoreError
from advaudio.store import AdversarialShard, Store, check_same_store
from advaudio.views import View

__all__ = [
    "METHODS",
    "ListenResult",
    "spectrogram_snr_db",
    "waveform_snr_db",
    "model_input_to_db",
    "db_to_magnitude",
    "resynthesize",
    "clean_audio",
    "listen",
]

METHODS = ("phase", "griffinlim")
#: WAV peak level: when a resynthesis exceeds it, all three files of a clip get the same gain.
PEAK = 0.99


# --------------------------------------------------------------------------- #
# Pure functions
# --------------------------------------------------------------------------- #
def spectrogram_snr_db(clean: Any, adversarial: Any) -> float:
    """``10·log10(Σ clean² / Σ (adversarial − clean)²)`` in dB over all elements.

    +inf when the two are equal, -inf when ``clean`` is all zeros (and they differ).
    Computed in float64.
    """
    x = np.asarray(clean, dtype=np.float64)
    a = np.asarray(adversarial, dtype=np.float64)
    if x.shape != a.shape:
        raise ParameterError(f"clean {x.shape} and adversarial {a.shape} differ in shape")
    signal = float(np.square(x).sum())
    noise = float(np.square(a - x).sum())
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


#: The same ratio on waveforms (reference first).
waveform_snr_db = spectrogram_snr_db


def _stft_view(view) -> tuple[int, int]:
    if tuple(view.representations) != ("stft",):
        raise ParameterError(
            f"only the 'stft' view can be turned back into audio; this input is view {view.name!r} "
            "(DWT, chroma and tonnetz have no phase to invert with)"
        )
    return view.shapes[0]


def model_input_to_db(x: Any, view) -> np.ndarray:
    """A model-space input of an ``stft`` view → dB spectrogram ``(bands, frames)`` (float64).

    ``x`` is ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` in [0, 1]. Resized inputs are
    resized back to ``(bands, frames)`` bilinearly; then ``dB = low + x·(high − low)``.
    Values that the view clipped stay at ``low``/``high`` (see the module docstring).
    """
    import torch
    import torch.nn.functional as F

    bands, frames = _stft_view(view)
    a = np.asarray(x, dtype=np.float32)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ParameterError(f"expected one model input (H, W) / (1, H, W) / (1, 1, H, W), got {np.shape(x)}")
    if a.shape != (bands, frames):
        t = torch.from_numpy(np.ascontiguousarray(a))[None, None]
        a = F.interpolate(t, size=(bands, frames), mode="bilinear", align_corners=False)[0, 0].numpy()
    a = np.clip(a.astype(np.float64), 0.0, 1.0)
    low, high = float(view.low[0]), float(view.high[0])
    return low + a * (high - low)


def db_to_magnitude(db: Any) -> np.ndarray:
    """``|S| = 10^(dB/20)``: the store's stft is ``20·log10(|S|)`` dB re 1.0."""
    return np.power(10.0, np.asarray(db, dtype=np.float64) / 20.0)


def _features(config) -> Any:
    from advaudio.features import FeatureConfig

    return config if isinstance(config, FeatureConfig) else FeatureConfig.from_dict(config)


def resynthesize(
    x: Any,
    view,
    features,
    *,
    clean_audio: np.ndarray | None = None,
    n_samples: int | None = None,
    method: str = "phase",
    n_iter: int = 64,
    seed: int = 0,
) -> np.ndarray:
    """A model-space ``stft`` input → waveform (float32).

    Parameters
    ----------
    x : one model input in [0, 1] (see :func:`model_input_to_db`)
    view : the :class:`~advaudio.views.View` that made it
    features : the store's :class:`~advaudio.features.FeatureConfig` (or its dict)
    clean_audio : the clean clip at ``features.sr``; ``method="phase"`` takes its STFT phase
    n_samples : output length (default ``len(clean_audio)``)
    method : ``"phase"`` (clean phase + ``librosa.istft``) or ``"griffinlim"``
    n_iter, seed : Griffin-Lim iterations and the seed of its random initial phase
    """
    import librosa

    from advaudio.features.numba_cache import import_librosa_module

    import_librosa_module("librosa.core.spectrum")  # stft/istft/griffinlim's kernels
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    cfg = _features(features)
    magnitude = db_to_magnitude(model_input_to_db(x, view))
    if n_samples is None and clean_audio is not None:
        n_samples = len(clean_audio)
    if method == "phase":
        if clean_audio is None:
            raise ParameterError("method='phase' needs the clean clip's audio (its STFT phase)")
        spec = librosa.stft(np.asarray(clean_audio, np.float32), n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                            window=cfg.window, center=True)
        if spec.shape != magnitude.shape:
            raise StoreError(f"the clean clip's STFT is {spec.shape}, the view's spectrogram {magnitude.shape}: "
                             "the audio does not match the store's parameters")
        y = librosa.istft(magnitude * np.exp(1j * np.angle(spec)), hop_length=cfg.hop_length,
                          n_fft=cfg.n_fft, window=cfg.window, center=True, length=n_samples)
    else:
        y = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=cfg.hop_length, n_fft=cfg.n_fft,
                               window=cfg.window, center=True, length=n_samples,
                               random_state=np.random.default_rng(seed))
    return np.asarray(y, dtype=np.float32)


# --------------------------------------------------------------------------- #
# The store's audio
# --------------------------------------------------------------------------- #
def clean_audio(store, row: int, *, root: str | os.PathLike | None = None) -> tuple[np.ndarray, int]:
    """The clean waveform of store ``row`` as the featurizer saw it, and its sample rate.

    Re-reads the dataset recorded in the store (``config["featurize"]``: name, root,
    options) and loads the clip with :func:`advaudio.datasets.load_clip`. ``root``
    overrides the recorded dataset root (the dataset moved).
    """
    from advaudio.datasets import load_clip, read_dataset  # soundfile, soxr: only when audio is read

    s = store if isinstance(store, Store) else Store(store)
    fz = s.config.get("featurize") or {}
    cfg = _features(fz.get("features") or {})
    if "dataset" not in fz:
        raise StoreError(f"store {s.directory} does not record its dataset; cannot find the audio")
    table = read_dataset(fz["dataset"], root=root if root is not None else fz.get("root"),
                         **(fz.get("dataset_options") or {}))
    clip_id = str(s.clip_ids[int(row)])
    clip = next((c for c in table.clips if c.clip_id == clip_id), None)
    if clip is None:
        raise StoreError(f"clip {clip_id!r} of store {s.directory} is not in dataset {fz['dataset']!r} any more")
    return np.asarray(load_clip(table, clip, sr=cfg.sr), np.float32), cfg.sr


# --------------------------------------------------------------------------- #
# One adversarial example → three WAV files
# --------------------------------------------------------------------------- #
@dataclass
class ListenResult:
    """What :func:`listen` wrote and measured (paths are absolute)."""

    shard: str
    sample: int
    store_row: int
    clip_id: str
    attack: str
    round: int
    split: str
    norm: str
    budget: float | None
    label: int
    target: int
    predicted: int
    success: bool
    method: str
    sr: int
    duration_s: float
    gain: float
    clean_wav: str
    clean_resynth_wav: str
    adversarial_wav: str
    snr_db_waveform: float
    snr_db_spectrogram: float
    clean_resynth_snr_db: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "clip"


def pick_sample(shard) -> int:
    """The first sample fooled within the budget, else the first fooled, else the first attacked, else 0.

    ``shard`` is an :class:`~advaudio.store.AdversarialShard`.
    """
    if shard.size == 0:
        raise StoreError(f"{shard.path} holds no adversarial examples")
    flags = shard.read([k for k in ("within_budget", "success", "attacked") if k in shard])
    attacked = np.asarray(flags["attacked"], bool) if "attacked" in flags else None
    for key in ("within_budget", "success", "attacked"):
        if key in flags:
            hits = np.flatnonzero(np.asarray(flags[key], bool))
            if attacked is not None and key != "attacked":
                hits = [h for h in hits if attacked[h]]
            if len(hits):
                return int(hits[0])
    return 0


def listen(
    shard: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sample: int | None = None,
    store: Any = None,
    method: str = "phase",
    n_iter: int = 64,
    prefix: str | None = None,
    audio_root: str | os.PathLike | None = None,
) -> ListenResult:
    """Write WAVs of one adversarial example of an ``stft``-view (or waveform-domain) shard, and measure its SNR.

    Parameters
    ----------
    shard : an adversarial shard (``<store>/adversarial/<name>.h5``)
    out_dir : where the three WAV files go (created)
    sample : row of the shard (default :func:`pick_sample`: the first clip fooled within the budget)
    store : the feature store (path or :class:`~advaudio.store.Store`; default: the shard's store,
        two directories up); its fingerprint must match the shard's
    method : ``"phase"`` (clean phase, default) or ``"griffinlim"``; a waveform-domain shard (any view)
        holds its adversarial clips, which are written exactly (``method`` then reads ``"exact"``:
        ``-clean-resynth.wav`` is the decoded clip, no gain is applied)
    prefix : file name prefix (default ``<attack>-<clip id>``); files are
        ``<prefix>-clean.wav``, ``<prefix>-clean-resynth.wav``, ``<prefix>-adversarial.wav``
    audio_root : dataset root, when it moved since featurization

    Returns
    -------
    :class:`ListenResult` (paths, SNRs in the waveform and spectrogram domain).
    WAVs are 32-bit float at the store's sample rate; if a resynthesis peaks above
    0.99, the three files share one gain (recorded; it does not change the SNRs).
    """
    import soundfile as sf

    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    shard = Path(shard)
    adversarial = AdversarialShard.open(shard)
    attrs = adversarial.attrs
    s = store if isinstance(store, Store) else Store(store if store is not None else shard.parent.parent)
    if attrs.store_fingerprint is not None:
        check_same_store(s, attrs.store_fingerprint, what=f"adversarial shard {shard}")
    if attrs.view is None:
        raise StoreError(f"{shard} does not record the view it was made in (no 'view' attribute): "
                         "not an advaudio adversarial shard")
    view = View.from_dict(dict(attrs.view))
    exact = "waveform" in adversarial  # a waveform-domain shard holds the adversarial clips themselves
    if not exact:
        _stft_view(view)
    i = pick_sample(adversarial) if sample is None else int(sample)
    n = adversarial.size
    if not 0 <= i < n:
        raise ParameterError(f"sample {i} out of range 0..{n - 1} of {shard}")
    keys = [k for k in ("adversarial", "clean_index", "label", "target", "predicted", "success", "waveform")
            if k in adversarial]
    one = adversarial.read(keys, rows=[i])
    adv = np.asarray(one["adversarial"][0], np.float32)
    row = int(one["clean_index"][0])
    info = {k: (int(one[k][0]) if k in one else -1) for k in ("label", "target", "predicted")}
    success = bool(one["success"][0]) if "success" in one else False
    with s.reader() as reader:
        clean_x = view.read(reader, [row]).numpy()[0]
    cfg = _features((s.config.get("featurize") or {}).get("features") or {})
    y, sr = clean_audio(s, row, root=audio_root)

    if exact:  # the exact adversarial samples and the clip as decoded: nothing resynthesised, no gain
        method = "exact"
        y_clean, y_adv = np.asarray(y, np.float32), np.asarray(one["waveform"][0], np.float32)
        if y_adv.shape != y_clean.shape:
            raise StoreError(f"{shard} sample {i} holds {y_adv.size} samples, its clip decodes to {y_clean.size}")
        gain = 1.0
    else:
        y_clean = resynthesize(clean_x, view, cfg, clean_audio=y, method=method, n_iter=n_iter)
        y_adv = resynthesize(adv, view, cfg, clean_audio=y, method=method, n_iter=n_iter)
        peak = max(float(np.abs(v).max()) for v in (y, y_clean, y_adv))
        gain = PEAK / peak if peak > PEAK else 1.0
    y, y_clean, y_adv = (np.asarray(v * gain, np.float32) for v in (y, y_clean, y_adv))

    clip_id = str(s.clip_ids[row])
    attack = attrs.attack or "attack"
    stem = prefix or f"{_safe(attack)}-{_safe(clip_id)}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{stem}-{k}.wav" for k in ("clean", "clean-resynth", "adversarial")}
    for key, wave in zip(paths, (y, y_clean, y_adv)):
        sf.write(paths[key], wave, sr, subtype="FLOAT")
    budget = attrs.budget
    return ListenResult(
        shard=str(shard.resolve()),
        sample=i,
        store_row=row,
        clip_id=clip_id,
        attack=attack,
        round=attrs.round or 0,
        split=attrs.split or "",
        norm=attrs.norm or "",
        budget=float(budget) if budget is not None and math.isfinite(budget) else None,
        label=info["label"],
        target=info["target"],
        predicted=info["predicted"],
        success=success,
        method=method,
        sr=int(sr),
        duration_s=len(y) / float(sr),
        gain=float(gain),
        clean_wav=str(paths["clean"].resolve()),
        clean_resynth_wav=str(paths["clean-resynth"].resolve()),
        adversarial_wav=str(paths["adversarial"].resolve()),
        snr_db_waveform=waveform_snr_db(y_clean, y_adv),
        snr_db_spectrogram=spectrogram_snr_db(clean_x, adv),
        clean_resynth_snr_db=waveform_snr_db(y, y_clean),
    )
