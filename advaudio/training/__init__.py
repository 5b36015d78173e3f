"""The train stage: CNNs on a view of a feature store, with checkpoints that resume exactly.

>>> cfg = TrainConfig(store="cache/esc10-…", view="stft", model="resnet18", test_fold=5)
>>> metrics = train(cfg, out_dir="cache/runs/resnet18-stft")
>>> evaluate("cache/runs/resnet18-stft/checkpoint.pt")["accuracy"]

Modules, in the order a run uses them:

* :mod:`.config` — :class:`TrainConfig`, every parameter of a run, validated when built
  (imports no torch);
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

from advaudio.lazy import exports, names

# Imported on first use (advaudio.lazy): the configuration (:mod:`.config`) without torch.
_EXPORTS = {
    "advaudio.layout": ["CHECKPOINT_NAME", "METRICS_NAME"],
    ".checkpoint": ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Checkpoint", "load_checkpoint", "read_checkpoint",
                    "rng_states", "save_checkpoint", "set_rng_states"],
    ".config": ["DTYPES", "OPTIMIZERS", "RECIPES", "RESUME_MAY_CHANGE", "SCHEDULES", "TrainConfig"],
    ".defenses": ["DEFENSES", "Defense", "StepContext", "create_defense", "defense_options"],
    ".distributed": ["CpuSyncBatchNorm", "Distributed", "convert_sync_batchnorm", "resolve_device",
                     "setup_distributed"],
    ".evaluation": ["evaluate", "recalibrate_bn", "run_evaluation", "summarize_confusion"],
    ".loop": ["train"],
    ".splits": ["FoldSplit", "split_by_fold"],
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)
__all__ = names(_EXPORTS)
