"""Extra sources of model-space inputs: :class:`ModelSpaceSource`, an HDF5 file of inputs already in
model space (an adversarial shard), as a training configuration names it.

Light on purpose: :class:`~advaudio.training.TrainConfig` holds these, and building one (the
Python API, ``advaudio train --help``) imports neither h5py nor torch; the file is opened when
it is read (:mod:`advaudio.data` serves its rows).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from advaudio.errors import StoreError

if TYPE_CHECKING:
    import numpy as np

    from advaudio.store.adversarial import AdversarialShard

__all__ = ["ModelSpaceSource"]


@dataclass(frozen=True)
class ModelSpaceSource:
    """An HDF5 file of inputs already in model space, e.g. an adversarial shard.

    Parameters
    ----------
    path : the HDF5 file
    inputs : dataset ``(N, 1, H, W)`` float in [0, 1]
    labels : dataset ``(N,)`` of integer class labels (the *true* labels for
        adversarial training)
    mask : optional boolean dataset ``(N,)``; only rows where it is true are
        used. A file without that dataset uses every row; None ignores it.
    """

    path: str
    inputs: str = "adversarial"
    labels: str = "label"
    mask: str | None = "success"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | ModelSpaceSource) -> ModelSpaceSource:
        if isinstance(d, ModelSpaceSource):
            return d
        if isinstance(d, (str, os.PathLike)):
            return cls(str(d))
        return cls(**{k: d[k] for k in ("path", "inputs", "labels", "mask") if k in d})

    def shard(self) -> AdversarialShard:
        """The file, opened as an adversarial shard (its datasets checked)."""
        from advaudio.store.adversarial import AdversarialShard

        try:
            shard = AdversarialShard.open(self.path)
        except StoreError as exc:
            raise StoreError(f"cannot open extra source {self.path}: {exc}") from None
        for key in (self.inputs, self.labels):
            if key not in shard:
                raise StoreError(f"extra source {self.path} has no dataset {key!r} (has {list(shard.datasets)})")
        return shard

    def index(self, *, output_shape: tuple[int, ...] | None = None,
              num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Usable rows (sorted) and the labels of all rows; checks shapes and labels."""
        import numpy as np

        shard = self.shard()
        shape = shard.shape(self.inputs)
        use_mask = self.mask is not None and self.mask in shard
        arrays = shard.read([self.labels] + ([self.mask] if use_mask else []))
        labels = np.asarray(arrays[self.labels], dtype=np.int64).ravel()
        if len(shape) != 4 or shape[0] != labels.size:
            raise StoreError(f"{self.path}:{self.inputs} must be (N, C, H, W) with N = len({self.labels}); "
                             f"got {shape} and {labels.size} labels")
        if output_shape is not None and tuple(shape[1:]) != tuple(output_shape):
            raise StoreError(f"{self.path}:{self.inputs} holds inputs of shape {tuple(shape[1:])}, "
                             f"the view's model space is {tuple(output_shape)}")
        keep = np.ones(labels.size, bool)
        if use_mask:
            m = np.asarray(arrays[self.mask]).ravel()
            if m.size != labels.size:
                raise StoreError(f"{self.path}:{self.mask} has {m.size} rows, expected {labels.size}")
            keep &= m.astype(bool)
        used = labels[keep]
        if num_classes is not None and used.size and (used.min() < 0 or used.max() >= num_classes):
            raise StoreError(f"{self.path}: labels outside 0..{num_classes - 1}")
        return np.flatnonzero(keep), labels
