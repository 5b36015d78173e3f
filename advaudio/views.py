"""Views: what a model sees of a feature store ("model space").

A *view* names stored representations joined by ``+`` (``"stft"``,
``"dwt+chroma"``, ``"stft+chroma"`` …). Reading a view for a batch of clips:

1. reads each representation ``(B, bands, frames)`` from the store (rows
   sorted and unique, whole chunks in file order),
2. maps each representation into [0, 1] with its own ``(low, high)`` — values
   below ``low`` become 0, above ``high`` become 1,
3. appends the representations along the band axis in the order named
   (``dwt+chroma``: the chroma rows go under the DWT rows, the paper's "appended
   chromagram"),
4. resizes the ``(bands, frames)`` image to ``input_size`` ``(H, W)`` when one is
   given (bilinear with anti-aliasing, so downsampling 513 STFT bins to 128 rows
   averages neighbouring bins instead of skipping them),
5. returns a float32 tensor ``(B, 1, H, W)`` in [0, 1]: one input channel.

Reading is fused: every clip's chunk of every representation is copied straight
into its place in one ``(B, bands, frames)`` buffer (for the store's
uncompressed per-clip chunks, from a memory map of the shard at the offset in
HDF5's chunk index: as fast as copying from memory, several times faster than
a hyperslab read of the same chunk through HDF5),
clipped in place, then normalised and resized by two matrix products with the
very weights of ``torch.nn.functional.interpolate(mode="bilinear",
antialias=True)`` (sparse along the band axis, with the normalisation folded
into it), about 4x faster than ``interpolate`` on CPU. See
:class:`advaudio.store.FeatureReader` and :class:`_Resizer`.

The output of :meth:`View.transform` / :meth:`View.read` *is* model space: the
attack stage perturbs it within the bounds (0, 1), and adversarial shards store
inputs in it, so perturbation sizes compare across representations.

Normalisation (why percentiles, per representation, from training folds only)
------------------------------------------------------------------------------
* **Per representation**, not per view and not per band: STFT is in dB
  (roughly -100 … +40), chroma in [0, 1], tonnetz in [-1, 1]; one global scale
  would squash chroma into a single grey level next to the STFT rows. Per-band
  scaling, on the other hand, would erase the spectral envelope (relative
  energy across frequencies) that the classes differ in.
* **Robust percentiles** (default 0.5th and 99.5th) rather than min/max: a log
  spectrogram's minimum is a numerical floor (``-100 dB`` for digital silence
  in zero-padded clips) and its maximum one loud transient; min/max would let
  these few values set the contrast of every input. Values outside are clipped,
  which is what keeps every input inside the attack bounds [0, 1].
* **Training folds only**: statistics seen on the test fold would leak into the
  model. :func:`fit_view` takes the rows explicitly; the trainer passes the
  training rows (validation rows excluded).
* Computed **streaming**, never loading the store: one pass for min/max and one
  pass filling a 65 536-bin histogram per representation, in chunks of clips;
  percentiles are interpolated inside their bin (error below one bin width,
  ``(max - min) / 65536``, e.g. 0.002 dB on a 140 dB range, plus the gap between
  the two values numpy's percentile interpolates between: negligible among a
  store's millions of values, several bins where a few values span the range).
  Percentiles closer than one bin (a near-constant representation) give way to
  the full range ``(min, max)``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from advaudio.errors import ParameterError, StoreError
from advaudio.store.reader import FeatureReader, sorted_unique
from advaudio.view_spec import DEFAULT_PERCENTILES, SEPARATOR, parse_input_size, parse_view  # noqa: F401

HISTOGRAM_BINS = 1 << 16
FIT_CHUNK_CLIPS = 64


# --------------------------------------------------------------------------- #
# Names and sizes: advaudio.view_spec (TrainConfig parses them without torch)
# --------------------------------------------------------------------------- #
def check_store_has(store, names: Sequence[str]) -> list[tuple[int, int]]:
    """Shapes ``(bands, frames)`` of ``names`` in ``store``; StoreError naming what it has otherwise."""
    have = store.representations
    missing = [n for n in names if n not in have]
    if missing:
        raise StoreError(
            f"store {store.directory} has no representation {', '.join(map(repr, missing))}; "
            f"it has: {', '.join(have) or 'none'}"
        )
    shapes = [tuple(int(s) for s in have[n].shape) for n in names]
    frames = {s[1] for s in shapes}
    if len(frames) > 1:
        detail = ", ".join(f"{n}: {s[1]}" for n, s in zip(names, shapes))
        raise StoreError(f"representations of view {'+'.join(names)} differ in frames ({detail}); cannot append them")
    return shapes


@functools.lru_cache(maxsize=32)
def _resize_weights(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1-D bilinear anti-aliased resizing, exactly torch's.

    Obtained by resizing an identity image with ``F.interpolate`` along one axis
    (the other axis keeps its size, where torch's weights are the identity).
    """
    eye = torch.eye(n_in, dtype=torch.float32)[None, None]
    return F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False, antialias=True)[0, 0]


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear anti-aliased resize of ``(B, H0, W0)`` to ``(B, H, W)``.

    Equal (to float rounding) to ``F.interpolate(x[:, None], size, mode="bilinear",
    antialias=True, align_corners=False)[:, 0]``, computed as ``Wh @ x @ Ww``.
    """
    b, h0, w0 = x.shape
    return _Resizer((h0, w0), tuple(size), np.ones(h0), np.zeros(h0))(x)


class _Resizer:
    """Per-row affine map, then resize: ``out_b = Wh diag(scale) x_b Ww + Wh shift``.

    The view's normalisation (per band: ``(x - low) * scale``) is folded into the
    band-axis weights, so after clipping the raw values to ``[low, high]`` one
    sparse product does normalisation and band resizing at once. The band
    product runs on the whole batch as one sparse matrix, block-diagonal
    ``kron(I_B, Wh diag(scale))`` (about 9 non-zeros per row), on ``x`` viewed as
    ``(B·H0, W0)`` — no transposition; the frame product is a dense matmul.
    """

    def __init__(self, src: tuple[int, int], dst: tuple[int, int], scale: np.ndarray, shift: np.ndarray):
        (self.h0, self.w0), (self.h, self.w) = src, dst
        rows = _resize_weights(self.h0, self.h) if self.h != self.h0 else torch.eye(self.h0)
        self.rows = rows * torch.as_tensor(scale, dtype=torch.float32)[None, :]
        self.bias = (rows @ torch.as_tensor(shift, dtype=torch.float32)).view(1, self.h, 1)
        self.cols = _resize_weights(self.w0, self.w).t().contiguous() if self.w != self.w0 else None
        self._block: dict[int, torch.Tensor] = {}

    def _block_diagonal(self, batch: int) -> torch.Tensor:
        m = self._block.get(batch)
        if m is None:
            coo = self.rows.to_sparse().coalesce()
            (i, j), v = coo.indices(), coo.values()
            offset = torch.arange(batch).repeat_interleave(v.numel())
            index = torch.stack([i.repeat(batch) + offset * self.h, j.repeat(batch) + offset * self.h0])
            m = torch.sparse_coo_tensor(index, v.repeat(batch), (batch * self.h, batch * self.h0),
                                        check_invariants=True).coalesce()
            if len(self._block) > 8:
                self._block.clear()
            self._block[batch] = m
        return m

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        y = torch.sparse.mm(self._block_diagonal(b), x.reshape(b * self.h0, self.w0)).view(b, self.h, self.w0)
        y += self.bias
        if self.cols is not None:
            y = torch.matmul(y, self.cols)
        return y


# --------------------------------------------------------------------------- #
# The view
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class View:
    """A fitted view: which representations, their normalisation, the model input size.

    Attributes
    ----------
    representations : names, in band order (first name on top: rows 0…)
    shapes : ``(bands, frames)`` of each representation in the store it was fitted on
    input_size : ``(H, W)`` of the model input, or None for ``(sum of bands, frames)``
    low, high : per representation, the values mapped to 0 and 1 (clipped outside)
    percentiles : the training-data percentiles ``low`` and ``high`` are
    fitted_on : what the statistics were computed from (row count, folds, store fingerprint)
    """

    representations: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]
    input_size: tuple[int, int] | None
    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    fitted_on: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        n = len(self.representations)
        if not (len(self.shapes) == len(self.low) == len(self.high) == n) or n == 0:
            raise ParameterError("a View needs one shape, low and high per representation")
        for name, lo, hi in zip(self.representations, self.low, self.high):
            if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
                raise ParameterError(f"view normalisation of {name!r} needs finite low < high, got {lo}, {hi}")

    # ---- description --------------------------------------------------- #
    @property
    def name(self) -> str:
        return SEPARATOR.join(self.representations)

    @property
    def bands(self) -> int:
        return sum(s[0] for s in self.shapes)

    @property
    def frames(self) -> int:
        return self.shapes[0][1]

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """``(channels, H, W)`` of one model input."""
        h, w = self.input_size or (self.bands, self.frames)
        return (1, h, w)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; :meth:`from_dict` rebuilds the view exactly."""
        return {
            "name": self.name,
            "representations": list(self.representations),
            "shapes": [list(s) for s in self.shapes],
            "input_size": list(self.input_size) if self.input_size else None,
            "output_shape": list(self.output_shape),
            "normalisation": {
                "method": "percentile-clip",
                "percentiles": list(self.percentiles),
                "stats": {n: {"low": lo, "high": hi} for n, lo, hi in zip(self.representations, self.low, self.high)},
            },
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> View:
        try:
            names = tuple(d["representations"])
            stats = d["normalisation"]["stats"]
            return cls(
                representations=names,
                shapes=tuple((int(s[0]), int(s[1])) for s in d["shapes"]),
                input_size=parse_input_size(d.get("input_size")),
                low=tuple(float(stats[n]["low"]) for n in names),
                high=tuple(float(stats[n]["high"]) for n in names),
                percentiles=tuple(float(p) for p in d["normalisation"].get("percentiles", DEFAULT_PERCENTILES)),
                fitted_on=dict(d.get("fitted_on", {})),
            )
        except (KeyError, TypeError, IndexError) as exc:
            raise ParameterError(f"not a view description: missing {exc}") from None

    def check_store(self, store) -> None:
        """StoreError unless ``store`` has every representation with the shapes fitted on."""
        shapes = check_store_has(store, self.representations)
        for name, want, have in zip(self.representations, self.shapes, shapes):
            if tuple(want) != tuple(have):
                raise StoreError(
                    f"representation {name!r} is {have[0]}×{have[1]} in {store.directory} "
                    f"but the view was fitted on {want[0]}×{want[1]}"
                )

    # ---- the transform ---------------------------------------------------- #
    def _offsets(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for bands, _ in self.shapes:
            out.append((start, start + bands))
            start += bands
        return out

    def _finish(self, buffer: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalise a raw ``(B, bands, frames)`` buffer (in place), resize, add the channel axis."""
        x = torch.from_numpy(buffer) if isinstance(buffer, np.ndarray) else buffer
        if x.shape[0] == 0:
            return x.new_zeros((0,) + self.output_shape)
        for (a, b), lo, hi in zip(self._offsets(), self.low, self.high):
            x[:, a:b].clamp_(lo, hi)  # NaN stays NaN
        if self.input_size is None or tuple(x.shape[-2:]) == tuple(self.input_size):
            for (a, b), lo, hi in zip(self._offsets(), self.low, self.high):
                x[:, a:b].sub_(lo).mul_(1.0 / (hi - lo))
        else:
            x = self._resizer()(x)
        x = x.clamp_(0.0, 1.0)  # convex weights: this clamp only removes float rounding
        if not math.isfinite(float(x.sum())):  # NaN survives clamping; one reduction finds it
            raise StoreError(f"view {self.name}: the store holds NaN values in these rows "
                             "(a missing or damaged shard? advaudio store info --verify)")
        return x.unsqueeze(1)

    def _resizer(self) -> _Resizer:
        r = self.__dict__.get("_resizer_cache")
        if r is None:
            scale = np.concatenate([np.full(b, 1.0 / (hi - lo)) for (b, _), lo, hi
                                    in zip(self.shapes, self.low, self.high)])
            shift = np.concatenate([np.full(b, -lo / (hi - lo)) for (b, _), lo, hi
                                    in zip(self.shapes, self.low, self.high)])
            r = _Resizer((self.bands, self.frames), tuple(self.input_size), scale, shift)
            object.__setattr__(self, "_resizer_cache", r)
        return r

    def transform(self, arrays: Mapping[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Map raw representations to model inputs.

        Parameters
        ----------
        arrays : name → ``(B, bands, frames)`` array for every representation of the view

        Returns
        -------
        float32 tensor ``(B, 1, H, W)`` with values in [0, 1]
        """
        batch = None
        for name, (bands, frames) in zip(self.representations, self.shapes):
            if name not in arrays:
                raise ParameterError(f"view {self.name} needs array {name!r}; got {sorted(arrays)}")
            shape = tuple(arrays[name].shape)
            if len(shape) != 3 or shape[1:] != (bands, frames):
                raise StoreError(f"{name} arrays must be (B, {bands}, {frames}), got {shape}")
            if batch is None:
                batch = shape[0]
            elif shape[0] != batch:
                raise ParameterError(f"arrays of view {self.name} differ in batch size")
        buffer = torch.empty((batch, self.bands, self.frames), dtype=torch.float32)
        for name, (a, b) in zip(self.representations, self._offsets()):
            value = arrays[name]
            value = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
            buffer[:, a:b] = value
        return self._finish(buffer)

    def read(self, reader: FeatureReader, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """Clean model inputs for store ``rows``: ``(len(rows), 1, H, W)`` in [0, 1].

        ``reader`` is a :class:`~advaudio.store.FeatureReader`, e.g.
        ``store.reader()``; keep one per process for repeated calls. Rows are
        read sorted and unique (each clip's chunk straight into the batch
        buffer) and returned in the order asked, duplicates included. This is
        the public entry point for stages that need clean inputs in model
        space (the attack stage).
        """
        if not isinstance(reader, FeatureReader):
            raise ParameterError(f"View.read reads through a FeatureReader (store.reader()), "
                                 f"got {type(reader).__name__}")
        uniq, inverse = sorted_unique(rows)
        buffer = np.empty((uniq.size, self.bands, self.frames), dtype=np.float32)
        for name, (bands, frames), (a, b) in zip(self.representations, self.shapes, self._offsets()):
            if name not in reader:
                raise StoreError(f"{reader.group.file.filename} has no representation {name!r}; "
                                 f"it has: {', '.join(reader.names) or 'none'}")
            if reader.shape(name)[1:] != (bands, frames):
                raise StoreError(f"representation {name!r} is {reader.shape(name)[1:]} in "
                                 f"{reader.group.file.filename}, the view expects {(bands, frames)}")
            reader.read_into(name, uniq, buffer[:, a:b])
        x = self._finish(buffer)
        return x if inverse is None else x[torch.from_numpy(inverse)]


def _fit_one(reader: FeatureReader, rows: np.ndarray, percentiles: tuple[float, float], *,
             chunk: int, bins: int, name: str) -> tuple[float, float]:
    """Streaming percentiles of every value of ``name[rows]`` (two chunked passes)."""
    shape = reader.shape(name)[1:]

    def read_rows(_, part):
        return reader.read_into(name, part, np.empty((part.size,) + shape, dtype=np.float32))

    dataset = None
    lo, hi = math.inf, -math.inf
    count = 0
    for start in range(0, rows.size, chunk):
        block = read_rows(dataset, rows[start : start + chunk])
        if not np.isfinite(block).all():
            raise StoreError(f"{name} holds NaN or infinite values in rows {int(rows[start])}…; "
                             "is a shard missing or damaged? (advaudio store info --verify)")
        lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
        count += block.size
    qs = [float(q) for q in percentiles]
    if hi <= lo:  # constant representation: any scale maps it to 0
        return lo, lo + 1.0
    counts = np.zeros(bins, dtype=np.int64)
    for start in range(0, rows.size, chunk):
        block = read_rows(dataset, rows[start : start + chunk])
        counts += np.histogram(block, bins=bins, range=(lo, hi))[0]
    low, high = (_histogram_quantile(counts, lo, hi, q / 100.0, count) for q in qs)
    if high - low < (hi - lo) / bins:
        # A near-constant representation: both percentiles fall in one bin (all but a few values
        # are one value), where the histogram cannot tell them apart and would spread that one
        # value over the bin. Fall back to the full range rather than a range the data lack.
        low, high = lo, hi
    return float(low), float(high)


def _histogram_quantile(counts: np.ndarray, lo: float, hi: float, q: float, n: int) -> float:
    """numpy's ``linear`` percentile (rank ``q (n-1)``), located in a histogram."""
    if q <= 0:
        return lo
    if q >= 1:
        return hi
    rank = q * (n - 1)  # 0-based rank of the wanted order statistic
    cum = np.cumsum(counts)
    b = int(np.searchsorted(cum, rank, side="right"))  # first bin whose cumulative count > rank
    b = min(b, counts.size - 1)
    before = cum[b] - counts[b]
    width = (hi - lo) / counts.size
    inside = (rank - before + 0.5) / max(int(counts[b]), 1)  # values spread evenly inside the bin
    return lo + width * (b + min(max(inside, 0.0), 1.0))


def fit_view(
    store,
    spec: str | Sequence[str],
    *,
    rows: Sequence[int] | np.ndarray,
    input_size: Any = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    chunk_clips: int = FIT_CHUNK_CLIPS,
    bins: int = HISTOGRAM_BINS,
) -> View:
    """Fit a view's normalisation on ``rows`` of ``store`` (the training rows).

    Streams over the rows in chunks of ``chunk_clips`` clips (two passes per
    representation); memory stays at one chunk plus the histogram.

    Parameters
    ----------
    store : an open :class:`~advaudio.store.Store`
    spec : ``"stft"``, ``"dwt+chroma"``, … or a sequence of names
    rows : store rows to take statistics from (any order; duplicates ignored)
    input_size : ``(H, W)``, ``"128x128"``, ``128`` or None (keep bands × frames)
    percentiles : the percentiles mapped to 0 and 1

    Raises
    ------
    StoreError : the store lacks a representation (the message lists those it has)
    ParameterError : empty rows, bad percentiles or input size
    """
    names = parse_view(spec)
    shapes = check_store_has(store, names)
    size = parse_input_size(input_size)
    p_lo, p_hi = (float(p) for p in percentiles)
    if not 0 <= p_lo < p_hi <= 100:
        raise ParameterError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}")
    rows = np.unique(np.asarray(rows, dtype=np.int64).ravel())
    if rows.size == 0:
        raise ParameterError("fit_view needs at least one training row")
    if rows[0] < 0 or rows[-1] >= len(store):
        raise ParameterError(f"rows out of range 0..{len(store) - 1}")
    low, high = [], []
    with store.reader() as reader:
        for name in names:
            lo, hi = _fit_one(reader, rows, (p_lo, p_hi), chunk=max(1, int(chunk_clips)),
                              bins=int(bins), name=name)
            low.append(lo)
            high.append(hi)
    folds = sorted(int(k) for k in np.unique(store.folds[rows]))
    return View(
        representations=names,
        shapes=tuple(shapes),
        input_size=size,
        low=tuple(low),
        high=tuple(high),
        percentiles=(p_lo, p_hi),
        fitted_on={"rows": int(rows.size), "folds": folds, "store_fingerprint": store.fingerprint},
    )
