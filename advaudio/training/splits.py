"""Which store rows a run trains, validates and tests on: a split by fold.

The test fold is held out; the training folds are the others; a validation set
is either one more fold (``val_fold``) or a stratified fraction of the training
rows (``val_fraction``), drawn from ``seed`` alone so every rank and every
resume draws the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from advaudio.data import derive_seed
from advaudio.errors import StoreError
from advaudio.store import Store

from .config import TrainConfig


@dataclass(frozen=True, eq=False)
class FoldSplit:
    """Store rows (sorted) of the three sets, and the folds they came from."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    test_fold: int
    val_fold: int | None
    train_folds: list[int]

    def summary(self) -> dict[str, Any]:
        """Row counts instead of rows: what checkpoints and ``metrics.json`` record as ``split``."""
        return {
            "train_clips": int(self.train.size),
            "val_clips": int(self.val.size),
            "test_clips": int(self.test.size),
            "test_fold": self.test_fold,
            "val_fold": self.val_fold,
            "train_folds": list(self.train_folds),
        }


def split_by_fold(store: Store, config: TrainConfig) -> FoldSplit:
    """Train / validation / test rows of ``store`` as ``config`` asks (see the module docstring).

    Raises
    ------
    StoreError : the store has fewer than two folds, or no training rows are left
    """
    folds = store.fold_ids
    if len(folds) < 2:
        raise StoreError(f"store {store.directory} has only fold(s) {folds}; fold-based training needs two or more")
    test_fold = int(config.test_fold) if config.test_fold is not None else max(folds)
    test = store.select(folds=[test_fold])
    val = np.zeros(0, np.int64)
    if config.val_fold is not None:
        val = store.select(folds=[int(config.val_fold)])
        train_rows = store.select(exclude_folds=[test_fold, int(config.val_fold)])
    else:
        train_rows = store.select(exclude_folds=[test_fold])
        if config.val_fraction > 0:
            rng = np.random.default_rng(derive_seed(config.seed, 0x5A1))
            picked = []
            for label in np.unique(store.labels[train_rows]):
                members = train_rows[store.labels[train_rows] == label]
                k = int(round(config.val_fraction * members.size))
                k = min(max(k, 1), members.size - 1) if members.size > 1 else 0
                picked.append(rng.permutation(members)[:k])
            val = np.sort(np.concatenate(picked)) if picked else val
            train_rows = np.setdiff1d(train_rows, val)
    if train_rows.size == 0:
        raise StoreError(f"no training clips left in {store.directory} after holding out the test/validation folds")
    return FoldSplit(
        train=train_rows,
        val=val,
        test=test,
        test_fold=test_fold,
        val_fold=config.val_fold,
        train_folds=sorted(int(k) for k in np.unique(store.folds[train_rows])),
    )
