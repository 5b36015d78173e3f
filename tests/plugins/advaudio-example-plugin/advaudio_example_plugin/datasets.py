"""``tones``: advaudio's synthetic set, three classes, as a reader from another distribution."""

from __future__ import annotations

import dataclasses

from advaudio.datasets import read_synthetic


def read_tones(root=None, *, clips_per_class: int = 6, duration: float = 0.5, seed: int = 0):
    table = read_synthetic(root, clips_per_class=clips_per_class, n_classes=3, duration=duration, seed=seed,
                           n_folds=3)
    return dataclasses.replace(table, dataset="tones")
