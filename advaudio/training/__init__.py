"""The train stage: CNNs on a view of a feature store, with checkpoints that resume exactly.

>>> cfg = TrainConfig(store="cache/esc10-…", view="stft", model="resnet18", test_fold=5)
>>> metrics = train(cfg, out_dir="cache/runs/resnet18-stft")
>>> evaluate("cache/runs/resnet18-stft/checkpoint.pt")["accuracy"]

Modules, in the order a run uses them:

* :mod:`.config` — :class:`TrainConfig`, every parameter of a run, validated when built;
* :mod:`.distributed` — the device, the torchrun job (:class:`Distributed`) and batch
  norm over the global batch (:class:`CpuSyncBatchNorm`); how a DDP run equals a
  single-process one;
* :mod:`.splits` — :class:`FoldSplit`: the train / validation / test rows by fold;
* :mod:`.defenses` — :class:`Defense`: the loss each step minimises, which sees the
  inputs (``none``: clean training; plugins: on-the-fly adversarial training);
* :mod:`.loop` — :func:`train`: build, resume, epochs, final test, ``metrics.json``;
  why a resumed run equals an unbroken one;
* :mod:`.evaluation` — :func:`evaluate` a checkpoint on a fold, :func:`run_evaluation`,
  :func:`recalibrate_bn` (precise batch norm);
* :mod:`.checkpoint` — the checkpoint file format: :func:`save_checkpoint`,
  :func:`read_checkpoint`, :func:`load_checkpoint` → :class:`Checkpoint`.

The loss is the defense's (:mod:`.defenses`); with ``none`` the model's own
(:meth:`advaudio.models.Classifier.training_loss`).
"""

from advaudio.layout import CHECKPOINT_NAME, METRICS_NAME

from .checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    load_checkpoint,
    read_checkpoint,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from .config import DTYPES, OPTIMIZERS, RECIPES, RESUME_MAY_CHANGE, SCHEDULES, TrainConfig
from .defenses import DEFENSES, Defense, StepContext, create_defense, defense_options
from .distributed import CpuSyncBatchNorm, Distributed, convert_sync_batchnorm, resolve_device, setup_distributed
from .evaluation import evaluate, recalibrate_bn, run_evaluation, summarize_confusion
from .loop import train
from .splits import FoldSplit, split_by_fold

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "METRICS_NAME",
    "DTYPES",
    "OPTIMIZERS",
    "RECIPES",
    "RESUME_MAY_CHANGE",
    "SCHEDULES",
    "Checkpoint",
    "CpuSyncBatchNorm",
    "DEFENSES",
    "Defense",
    "StepContext",
    "Distributed",
    "FoldSplit",
    "TrainConfig",
    "convert_sync_batchnorm",
    "create_defense",
    "defense_options",
    "evaluate",
    "load_checkpoint",
    "read_checkpoint",
    "recalibrate_bn",
    "resolve_device",
    "rng_states",
    "run_evaluation",
    "save_checkpoint",
    "set_rng_states",
    "setup_distributed",
    "split_by_fold",
    "summarize_confusion",
    "train",
]
