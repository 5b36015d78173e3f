"""Which adversarial shards may enter training, and what they are: the provenance checks.

:func:`find_shards` lists the registered shards a checkpoint made in a round on a split;
:func:`inspect_shards` refuses a damaged or foreign shard (checksum, range, store, view,
checkpoint) and any shard holding a clip of a held-out fold, and returns each shard's
provenance as retraining records it. The trainer (``train --extra``), ``retrain`` and
``rounds`` all go through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from advaudio.errors import StoreError
from advaudio.store.adversarial import AdversarialShard
from advaudio.store.feature_store import Store, check_same_store
from advaudio.store.files import sha256_file


def find_shards(store: Store, *, checkpoint_sha: str, round: int, split: str = "train",
                domain: str | None = None) -> list[Path]:
    """Registered adversarial shards made from ``checkpoint_sha`` in ``round`` on ``split`` (and in
    threat model ``domain``; None: any)."""
    found = []
    for path in store.adversarial_shards():
        a = AdversarialShard.open(path).attrs
        # A job array's slices enter training through their merged shard only.
        if (a.checkpoint_sha256 == checkpoint_sha and a.round == round and a.split == split and not a.sliced
                and domain in (None, a.threat_model)):
            found.append(path)
    return found


# What must agree between the view a shard was made in and the view it is trained in.
_VIEW_KEYS = ("name", "representations", "output_shape", "normalisation")


def inspect_shards(shards: list[Path], *, store: Store, held_out_folds: set[int],
                   view: Mapping[str, Any] | None = None, checkpoint_sha: str | None = None,
                   require_provenance: bool = True) -> list[dict[str, Any]]:
    """Provenance of each shard, after every check that keeps damaged or foreign inputs out of training.

    A shard is refused (StoreError naming it) when

    * its checksum does not match the one written beside it, or its inputs lie outside [0, 1];
    * it was made from another store, in another ``view`` (model space), or — when
      ``checkpoint_sha`` is given — by another checkpoint;
    * it holds a clip of a held-out fold: only clips of the training folds may enter
      training, a shard with any test (or validation) clip would leak it;
    * the shards are of more than one threat model (``domain``): a waveform-domain shard's
      inputs are its waveforms through the view's front end, valid model inputs in the same
      view, but its budget is in waveform units, which no feature-domain budget compares to.

    ``require_provenance=False`` (``train --extra``) also accepts a plain HDF5 file of
    model-space inputs without advaudio's provenance (no ``fold`` dataset, no store
    fingerprint); it is still checked for its range, and for whatever provenance it has.
    """
    records = []
    domains: dict[str, list[str]] = {}
    for path in shards:
        shard = AdversarialShard.open(path)
        a = shard.attrs
        if "adversarial" not in shard:
            raise StoreError(f"{path} is not an advaudio adversarial shard (no 'adversarial' dataset)")
        has_provenance = "fold" in shard or a.store_fingerprint is not None
        if require_provenance and ("fold" not in shard or a.store_fingerprint is None):
            raise StoreError(f"{path} is not an advaudio adversarial shard (no fold or store fingerprint)")
        if has_provenance or AdversarialShard.recorded_sha256(path) is not None:
            digest = shard.verify()  # an attack shard without its checksum file is not a complete one
        else:
            digest = sha256_file(path)
        if a.store_fingerprint is not None:
            check_same_store(store, a.store_fingerprint, what=f"adversarial shard {path}")
        made_in = a.view
        if view is not None and made_in is not None:
            differ = [k for k in _VIEW_KEYS if k in made_in and made_in.get(k) != view.get(k)]
            if differ:
                raise StoreError(f"{path} was made in view {made_in.get('name')!r} "
                                 f"{made_in.get('output_shape')}, not in the model's view {view.get('name')!r} "
                                 f"{view.get('output_shape')} (differs in {', '.join(differ)})")
        if checkpoint_sha is not None and a.checkpoint_sha256 not in (None, checkpoint_sha):
            raise StoreError(f"{path} was made by checkpoint {str(a.checkpoint_sha256)[:10]}…, not by "
                             f"the one being retrained ({checkpoint_sha[:10]}…)")
        arrays = shard.read([k for k in ("fold", "success") if k in shard])
        if "fold" in arrays:
            folds = set(int(k) for k in np.unique(arrays["fold"]))
            leaked = sorted(folds & held_out_folds)
            if leaked:
                raise StoreError(
                    f"{path} holds clips of held-out fold(s) {leaked} (split {a.split!r}): "
                    "refusing to train on them, test data must not leak into training"
                )
        low, high = _value_range(shard)
        if not (0.0 <= low and high <= 1.0):
            raise StoreError(f"{path} holds inputs in [{low:.4g}, {high:.4g}]; model inputs lie in [0, 1] "
                             "(a damaged or foreign file)")
        domains.setdefault(a.threat_model, []).append(Path(path).name)
        records.append({
            "path": str(Path(path).resolve()),
            "sha256": digest,
            "attack": str(a.attack),
            "norm": str(a.norm),
            "budget": float(a.budget if a.budget is not None else np.nan),
            "fooling_rate": float(a.fooling_rate if a.fooling_rate is not None else np.nan),
            "round": a.round if a.round is not None else -1,
            "samples": shard.size,
            "successful": int(np.asarray(arrays["success"]).sum()) if "success" in arrays else None,
            **({"domain": a.threat_model} if a.threat_model != "feature" else {}),
        })
    if len(domains) > 1:  # budgets of two threat models are in different units: no one comparison holds both
        listing = "; ".join(f"{d}: {', '.join(names)}" for d, names in sorted(domains.items()))
        raise StoreError(f"the shards mix threat models ({listing}): their budgets are in different units "
                         "(model input vs waveform), so one retraining cannot compare them; pass the shards of "
                         "one domain (--shards)")
    return records


def _value_range(shard: AdversarialShard) -> tuple[float, float]:
    """(min, max) of a shard's inputs, read a block of samples at a time; NaN counts as out of range."""
    low, high = np.inf, -np.inf
    with shard.open_file() as f:
        ds = f["adversarial"]
        for start in range(0, ds.shape[0], 256):
            block = np.asarray(ds[start:start + 256])
            if block.size:
                if not np.isfinite(block).all():
                    return float("nan"), float("nan")
                low, high = min(low, float(block.min())), max(high, float(block.max()))
    return (0.0, 0.0) if low > high else (low, high)
