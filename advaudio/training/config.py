"""The parameters of a training run: :class:`TrainConfig`, validated when it is built."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from advaudio import validation
from advaudio.data import ModelSpaceSource
from advaudio.errors import ParameterError, check_known_fields
from advaudio.views import DEFAULT_PERCENTILES, parse_input_size, parse_view

from .distributed import resolve_device

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "constant")
DTYPES = ("float32", "float64")
# Fields that may change when a run is resumed (they do not change the result on CPU).
RESUME_MAY_CHANGE = ("store", "workers", "device", "channels_last")


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
    epochs, batch_size : length of the run and samples per step
    lr : peak learning rate (one-cycle) or the constant one
    weight_decay : AdamW's decoupled weight decay (SGD: L2)
    optimizer : ``"adamw"`` or ``"sgd"`` (Nesterov, momentum 0.9; one-cycle cycles it between
        0.95 and 0.85, against the learning rate)
    schedule : ``"onecycle"`` (warm-up then cosine annealing, per step) or ``"constant"``
    warmup_fraction : share of the steps spent warming up (one-cycle ``pct_start``)
    label_smoothing : cross-entropy label smoothing in training
    time_shift : random circular roll along time, as a max fraction of the width
        (0.5 reaches every offset; 0 turns it off); training only
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
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    warmup_fraction: float = 0.3
    label_smoothing: float = 0.0
    time_shift: float = 0.5
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
        resolve_device(self.device, check_available=False)
        from .defenses import check_options, create_defense, resolved_options

        check_options(self.defense, self.defense_options)  # an unknown defense or option fails before any work
        # Every option with its default, so that the run's hash names the defense's parameters in full.
        put("defense_options", resolved_options(self.defense, self.defense_options))
        if self.defense in ("pgd-at", "trades", "fast-at"):
            create_defense(self.defense, **self.defense_options)  # a value out of range fails here too

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

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        check_known_fields(cls, d, "training parameter(s)")
        return cls(**dict(d))
