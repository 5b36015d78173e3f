"""The augmentations' parameters, light (no torch): :class:`Augmentation` and :data:`MIXING`,
which :class:`advaudio.training.TrainConfig` validates with when it is built (``advaudio train
--help`` imports no torch). What each one does is :mod:`advaudio.augment`, which re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from advaudio.errors import ParameterError

#: Pair mixing of training samples: none, mixup (Zhang et al. 2018), bc (between-class, Tokozume et al. 2018).
MIXING = ("none", "mixup", "bc")


@dataclass(frozen=True)
class Augmentation:
    """The per-sample augmentations of training batches (besides the time shift).

    Parameters
    ----------
    freq_masks, time_masks : masks per sample along the rows (frequency) and columns (time)
    freq_mask_width, time_mask_width : the widest mask, as a fraction of the height or width
    gain_db : random gain, uniform in ``[-gain_db, gain_db]`` dB (0: off)
    mixing : ``"none"``, ``"mixup"`` or ``"bc"`` (between-class)
    mixup_alpha : mixup's ``Beta(α, α)``
    extra : masks and gain also on extra-source (adversarial) samples; they are never mixed
    """

    freq_masks: int = 0
    freq_mask_width: float = 0.0
    time_masks: int = 0
    time_mask_width: float = 0.0
    gain_db: float = 0.0
    mixing: str = "none"
    mixup_alpha: float = 1.0
    extra: bool = False

    def __post_init__(self):
        for name in ("freq_masks", "time_masks"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ParameterError(f"{name} must be an integer >= 0, got {v!r}")
        for name in ("freq_mask_width", "time_mask_width"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ParameterError(f"{name} must be a fraction in [0, 1], got {v!r}")
        if not (isinstance(self.gain_db, (int, float)) and 0 <= self.gain_db < math.inf):
            raise ParameterError(f"gain_db must be a finite number of dB >= 0, got {self.gain_db!r}")
        if self.mixing not in MIXING:
            raise ParameterError(f"mixing must be one of {', '.join(MIXING)}, got {self.mixing!r}")
        if not (isinstance(self.mixup_alpha, (int, float)) and 0 < self.mixup_alpha < math.inf):
            raise ParameterError(f"mixup_alpha must be a positive number, got {self.mixup_alpha!r}")

    @property
    def masks(self) -> bool:
        return (self.freq_masks > 0 and self.freq_mask_width > 0) or (self.time_masks > 0 and self.time_mask_width > 0)

    @property
    def mixes(self) -> bool:
        return self.mixing != "none"

    @property
    def active(self) -> bool:
        return self.masks or self.gain_db > 0 or self.mixes
