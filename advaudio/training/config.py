"""The parameters of a training run: :class:`TrainConfig`, validated when it is built.

Recipes
-------
A *recipe* is a named bundle of the parameters that decide how well a model
generalises (:data:`RECIPES`): length, optimizer and schedule, regularisation and
augmentation. ``TrainConfig(recipe=...)`` takes every such parameter that is not
given (None) from its recipe; given ones override it. The configuration records
the resolved values, so a run is defined by them, not by the recipe's name.

* ``"default"``: chosen by 5-fold cross-validation on ESC-10 (README, "Training
  recipes"): SpecAugment masks, random gain, between-class mixing, EMA weights.
* ``"paper"``: the recipe of every run before recipes existed (AdamW, one-cycle,
  30 epochs, random time shifts, nothing else), kept for comparison with earlier
  results. A recorded configuration without a recipe (a checkpoint written before
  them) is read as ``"paper"`` (:meth:`TrainConfig.from_dict`), which is what it was.

Light on purpose (no torch): ``advaudio train --help`` and the Python API read its defaults
and build one before any model exists; the checks that need a registry of torch objects
(a defense's options) import it when a config is built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from advaudio import plugins, validation
from advaudio.augment_spec import MIXING, Augmentation
from advaudio.errors import ParameterError, check_known_fields
from advaudio.store.sources import ModelSpaceSource
from advaudio.view_spec import DEFAULT_PERCENTILES, parse_input_size, parse_view

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "constant")
DTYPES = ("float32", "float64")
# Fields that may change when a run is resumed (they do not change the result on CPU; a
# recipe's name only supplies values, which are compared themselves).
RESUME_MAY_CHANGE = ("store", "workers", "device", "channels_last", "recipe")

#: The recipes' parameters (see the module docstring). "paper" holds today's exact values of
#: the runs made before recipes; every field added with the recipes is off in it.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(epochs=30, batch_size=32, lr=2e-3, weight_decay=0.05, optimizer="adamw", schedule="onecycle",
                  warmup_fraction=0.3, label_smoothing=0.0, time_shift=0.5, freq_masks=0, freq_mask_width=0.0,
                  time_masks=0, time_mask_width=0.0, gain_db=0.0, mixing="none", mixup_alpha=1.0,
                  ema_decay=0.0),
    "default": dict(epochs=60, batch_size=32, lr=2e-3, weight_decay=0.05, optimizer="adamw", schedule="onecycle",
                    warmup_fraction=0.3, label_smoothing=0.0, time_shift=0.5, freq_masks=2, freq_mask_width=0.15,
                    time_masks=2, time_mask_width=0.15, gain_db=6.0, mixing="bc", mixup_alpha=1.0,
                    ema_decay=0.0),
}
RECIPE_NAMES = tuple(RECIPES)
#: Fields added with the recipes: a run whose values of these are the paper's trains exactly as
#: before them (so it keeps its study fingerprint, see :meth:`TrainConfig.result_dict`).
ADDED_WITH_RECIPES = ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width", "gain_db", "mixing",
                      "mixup_alpha", "ema_decay", "augment_extra")
#: The built-in defenses (:data:`advaudio.training.defenses.DEFENSES` holds them).
BUILTIN_DEFENSES = ("none", "pgd-at", "trades", "fast-at")


def defense_names() -> list[str]:
    """Built-in and installed plugin defenses (as ``list(DEFENSES)``), from metadata only."""
    return plugins.names("advaudio.defenses", BUILTIN_DEFENSES)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; recorded in the checkpoint and metrics.

    Parameters
    ----------
    store : feature store directory
    view : representations joined by ``+``, e.g. ``"stft"`` or ``"dwt+chroma"``
    model : architecture name (``advaudio.models.list_models()``)
    width : channel-width multiplier of the model (1.0: the published widths)
    model_options : extra architecture options (e.g. ``{"dropout": 0.3}``)
    defense : what each training step minimises (:mod:`advaudio.training.defenses`):
        ``"none"`` (clean training) or an installed defense plugin
    defense_options : the defense's options (e.g. ``{"epsilon": 0.03}``)
    input_size : model input ``(H, W)``; None keeps the store's bands × frames
    test_fold : fold held out for testing; None: the highest fold of the store
    val_fold : a fold held out for validation (exclusive with ``val_fraction``)
    val_fraction : stratified fraction of the training rows held out for validation
    epochs, batch_size : length of the run and samples per step (*recipe*)
    lr : peak learning rate (one-cycle) or the constant one (*recipe*)
    weight_decay : AdamW's decoupled weight decay (SGD: L2) (*recipe*)
    optimizer : ``"adamw"`` or ``"sgd"`` (Nesterov, momentum 0.9; one-cycle cycles it between
        0.95 and 0.85, against the learning rate) (*recipe*)
    schedule : ``"onecycle"`` (warm-up then cosine annealing, per step) or ``"constant"`` (*recipe*)
    warmup_fraction : share of the steps spent warming up (one-cycle ``pct_start``) (*recipe*)
    recipe : ``"default"`` or ``"paper"``: the values of the fields below marked *recipe*
        that are not given (see the module docstring)
    label_smoothing : cross-entropy label smoothing in training (*recipe*)
    time_shift : random circular roll along time, as a max fraction of the width
        (0.5 reaches every offset; 0 turns it off); training only (*recipe*)
    freq_masks, time_masks : SpecAugment masks per training sample along the rows
        (frequency) and the columns (time) of the model input (*recipe*)
    freq_mask_width, time_mask_width : the widest mask, as a fraction of the height or
        width; each mask's width is uniform up to it (*recipe*)
    gain_db : random gain of each training sample, uniform in ``[-gain_db, gain_db]`` dB,
        applied to the dB rows of the view (*recipe*)
    mixing : ``"none"``, ``"mixup"`` (Zhang et al. 2018) or ``"bc"`` (between-class mixing
        of sounds, Tokozume et al. 2018): training samples mixed in pairs, with mixed
        labels; never the extra (adversarial) samples (*recipe*; ``"none"`` under a
        defense other than ``"none"``, which it cannot be combined with)
    mixup_alpha : mixup's ``Beta(α, α)`` (*recipe*)
    ema_decay : exponential moving average of the weights (0: off); the average is what is
        evaluated and saved at the end, with recalibrated batch norm (*recipe*)
    augment_extra : masks and gain also on the extra (adversarial) samples (default: only
        the time shift, which rolls a perturbation with its clip)
    See :mod:`advaudio.augment` for what each augmentation does.
    percentiles : view normalisation percentiles (see :mod:`advaudio.views`)
    seed : seed of every random choice
    workers : DataLoader worker processes (0: read in the training process; None: sized to
        the CPUs, see :func:`advaudio.data.default_workers`)
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``/``"cuda:N"``
    amp : mixed precision when on CUDA: bfloat16 autocast where the GPU supports it,
        else float16 autocast with a GradScaler
    dtype : the precision of the weights, inputs and optimizer: ``"float32"`` (training
        as usual), or ``"float64"``, a reference run for reproducibility checks. Training
        small CNNs is chaotic: measured here, changing only the order of float32
        reductions (threads, SIMD width, DDP ranks) moves a 3-epoch run's logits by up to
        ~1; in float64 the same reorderings move them by ~1e-11 (``tests/test_ddp.py``).
        Slower; ``amp`` does not apply; other stages load the checkpoint in float32.
    channels_last : on CUDA, keep the model and its input batches in the NHWC memory
        format (cuDNN's fast convolutions under mixed precision); ignored on CPU
    extra_sources : model-space inputs (adversarial shards) mixed into training batches
    mix : fraction of each training batch taken from ``extra_sources``
    init_checkpoint : start from this checkpoint's weights and view (fine-tuning)
    provenance : where the training data came from, recorded as given (retraining:
        the round, the parent checkpoint, each adversarial shard's attack and budget)
    recalibrate_bn : after the last epoch, recompute batch-norm running statistics
        with one pass over the training batches at the final weights
        (see :func:`~advaudio.training.evaluation.recalibrate_bn`)
    """

    store: str
    view: str = "stft"
    model: str = "resnet18"
    width: float = 1.0
    model_options: dict = field(default_factory=dict)
    defense: str = "none"
    defense_options: dict = field(default_factory=dict)
    input_size: tuple[int, int] | None = (128, 128)
    test_fold: int | None = None
    val_fold: int | None = None
    val_fraction: float = 0.0
    recipe: str = "default"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    optimizer: str | None = None
    schedule: str | None = None
    warmup_fraction: float | None = None
    label_smoothing: float | None = None
    time_shift: float | None = None
    freq_masks: int | None = None
    freq_mask_width: float | None = None
    time_masks: int | None = None
    time_mask_width: float | None = None
    gain_db: float | None = None
    mixing: str | None = None
    mixup_alpha: float | None = None
    ema_decay: float | None = None
    augment_extra: bool = False
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    amp: bool = True
    dtype: str = "float32"
    channels_last: bool = True
    extra_sources: tuple[ModelSpaceSource, ...] = ()
    mix: float = 0.0
    init_checkpoint: str | None = None
    recalibrate_bn: bool = True
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731  (frozen)
        validation.choice("recipe", self.recipe, RECIPE_NAMES)
        defended = str(self.defense).strip().lower() != "none"
        if defended and self.mixing is None:
            put("mixing", "none")  # an on-the-fly defense attacks each sample's own class: no pair mixing
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                put(name, value)
        put("store", str(self.store))
        put("view", "+".join(parse_view(self.view)))
        put("model", str(self.model).strip().lower())
        put("input_size", parse_input_size(self.input_size))
        put("model_options", dict(self.model_options or {}))
        put("defense", str(self.defense).strip().lower())
        put("defense_options", dict(self.defense_options or {}))
        put("percentiles", tuple(float(p) for p in self.percentiles))
        put("extra_sources", tuple(ModelSpaceSource.from_dict(s) for s in self.extra_sources))
        if self.init_checkpoint is not None:
            put("init_checkpoint", str(self.init_checkpoint))
        validation.integer("epochs", self.epochs)
        validation.integer("batch_size", self.batch_size)
        if self.workers is not None:
            validation.integer("workers", self.workers, minimum=0)
        validation.finite_float("lr", self.lr, positive=True)
        validation.finite_float("weight_decay", self.weight_decay, minimum=0)
        validation.finite_float("width", self.width, positive=True)
        validation.choice("optimizer", self.optimizer, OPTIMIZERS)
        validation.choice("schedule", self.schedule, SCHEDULES)
        validation.choice("dtype", self.dtype, DTYPES)
        checks = (("val_fraction", 0, 1, True), ("warmup_fraction", 0, 1, False),
                  ("label_smoothing", 0, 1, True), ("time_shift", 0, 1, False), ("mix", 0, 1, True))
        for name, lo, hi, open_hi in checks:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and lo <= value and (value < hi if open_hi else value <= hi)):
                raise ParameterError(f"{name} must be in [{lo}, {hi}{')' if open_hi else ']'}, got {value!r}")
        if self.val_fold is not None and self.val_fraction > 0:
            raise ParameterError("give val_fold or val_fraction, not both")
        if self.val_fold is not None and self.val_fold == self.test_fold:
            raise ParameterError(f"val_fold and test_fold are both {self.val_fold}")
        if self.mix > 0 and not self.extra_sources:
            raise ParameterError("mix > 0 needs extra_sources")
        if self.extra_sources and self.mix == 0:
            raise ParameterError("extra_sources need mix > 0 (the fraction of each batch they fill)")
        validation.choice("mixing", self.mixing, MIXING)
        if defended and self.mixing != "none":
            raise ParameterError(f"mixing {self.mixing!r} with defense {self.defense!r}: a defense's loss takes each "
                                 "sample's class (an attack in the step needs it), not a mixed pair's soft label; "
                                 "use mixing='none' (the default under a defense)")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ParameterError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        if self.ema_decay > 0 and not self.recalibrate_bn:
            raise ParameterError("ema_decay needs recalibrate_bn (the averaged weights need batch-norm "
                                 "statistics of their own)")
        self.augmentation()  # checks masks, gain and mixing
        validation.device("device", self.device)  # whether a GPU is there: asked when the run starts
        if self.defense != "none" or self.defense_options:  # clean training takes no option: no torch to ask
            from .defenses import check_options, create_defense, resolved_options

            check_options(self.defense, self.defense_options)  # an unknown defense or option fails before any work
            # Every option with its default, so that the run's hash names the defense's parameters in full.
            put("defense_options", resolved_options(self.defense, self.defense_options))
            if self.defense in ("pgd-at", "trades", "fast-at"):
                create_defense(self.defense, **self.defense_options)  # a value out of range fails here too

    def augmentation(self) -> Augmentation:
        """The masks, gain and mixing of training batches (:mod:`advaudio.augment`)."""
        return Augmentation(freq_masks=self.freq_masks, freq_mask_width=self.freq_mask_width,
                            time_masks=self.time_masks, time_mask_width=self.time_mask_width, gain_db=self.gain_db,
                            mixing=self.mixing, mixup_alpha=self.mixup_alpha, extra=bool(self.augment_extra))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size else None
        d["percentiles"] = list(self.percentiles)
        d["extra_sources"] = [s.to_dict() for s in self.extra_sources]
        if self.defense == "none" and not self.defense_options:
            # Clean training is what every run was before defenses existed: leaving the keys out
            # keeps the hash of every earlier run and study cell (from_dict fills them back in).
            del d["defense"], d["defense_options"]
        return d

    def result_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` less what names rather than changes a result: the recipe's name (its
        values are there), and the fields added with the recipes while they hold the paper's
        values (a run that trains exactly as before them hashes as before them: a study keeps
        its finished cells)."""
        d = self.to_dict()
        d.pop("recipe")
        paper = {**RECIPES["paper"], "augment_extra": False}
        for k in ADDED_WITH_RECIPES:
            if d[k] == paper[k]:
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """A recorded configuration (:meth:`to_dict`, a checkpoint's ``train_config``). One
        without a ``recipe`` was recorded before recipes existed: it is read as ``"paper"``,
        whose values the fields added since then take."""
        check_known_fields(cls, d, "training parameter(s)")
        d = dict(d)
        d.setdefault("recipe", "paper")
        return cls(**d)
