"""The train loop: a CNN on a view of a feature store, with checkpoints that resume exactly.

The view's normalisation is fitted on the training rows only (:mod:`.splits`
says which rows those are).

Reproducibility and exact resume
--------------------------------
Every random choice is a pure function of ``(seed, epoch[, batch])``:

* model initialisation: ``torch.manual_seed(seed)`` before the model is built;
* batch composition and extra-source draws: a numpy generator seeded from
  ``(seed, epoch)`` (:func:`advaudio.data.plan_epoch`);
* time shifts, masks, gain and mixing (:mod:`advaudio.augment`): generators seeded
  from ``(seed, epoch, batch)``, drawn for every position of the global batch, so it
  does not matter which DataLoader worker (or DDP rank) serves a sample;
* dropout and any other use of the global torch RNG: the global generator is
  reseeded from ``(seed, epoch)`` at the start of every epoch.

So a run resumed from the checkpoint of epoch ``e`` needs no RNG state to
continue exactly like an unbroken run: it restores weights, optimizer,
scheduler, GradScaler state and weight average (:mod:`.averaging`) and starts
epoch ``e + 1`` with the same seeds.
Exactness holds on CPU; CUDA kernels are not bitwise deterministic. Under
torchrun the same holds for any world size (:mod:`.distributed`).

Completion
----------
A run is complete only when, after the last epoch, BatchNorm has been
recalibrated, the test fold evaluated, the final checkpoint (marked complete,
carrying the test metrics) committed and then ``metrics.json`` (complete)
committed, in that order. A kill at any point before leaves a run that
``resume`` finishes to the same files; a kill between the two commits is
finished by rewriting the metrics from the final checkpoint, which stays
byte for byte (attack shards are keyed by its sha256).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from advaudio.data import StoreBatches, default_workers, derive_seed, make_loader, to_device
from advaudio.errors import DamagedFileError, ParameterError, StoreError
from advaudio.killpoints import kill_point
from advaudio.layout import CHECKPOINT_NAME, METRICS_NAME
from advaudio.models import Classifier, create_model, model_from_config
from advaudio.plugins import require
from advaudio.progress import progress_bar
from advaudio.store import Store, check_same_store, inspect_shards, remove_stale_tmp
from advaudio.store.documents import read_metrics, write_metrics
from advaudio.views import View, fit_view

from .averaging import WeightAverage
from .checkpoint import is_final, read_checkpoint, save_checkpoint, set_rng_states, training_plugins
from .config import RESUME_MAY_CHANGE, TrainConfig
from .defenses import Defense, NoDefense, StepContext, create_defense
from .distributed import (
    Distributed,
    autocast,
    convert_sync_batchnorm,
    needs_grad_scaler,
    resolve_device,
    setup_distributed,
)
from .evaluation import recalibrate_bn, run_evaluation
from .splits import FoldSplit, split_by_fold

# The run directory's files (a run-layout module is to own these names).


def train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a model on a view of a store; returns the metrics also written to ``metrics.json``.

    Under torchrun (``WORLD_SIZE`` > 1) every process calls this with the same
    arguments; see :mod:`advaudio.training.distributed`. Every rank returns the
    same (global) metrics; rank 0 alone writes files.

    Parameters
    ----------
    config : the run (see :class:`TrainConfig`)
    out_dir : directory of ``checkpoint.pt`` and ``metrics.json``
    resume : continue from ``out_dir/checkpoint.pt`` if there is one (the parameters
        must be the same; the world size may differ); without it an existing checkpoint is an error
    progress : progress bars on standard error (rank 0 only)
    stop_after : stop once this many epochs are complete (the schedule still spans
        ``config.epochs``; a later ``resume`` finishes the run)
    callback : called after every training step with a dict (epoch, batch, batches, loss);
        under DDP on every rank, with the loss of that rank's share

    Raises
    ------
    StoreError : store or checkpoint missing, incompatible or damaged
    ParameterError : invalid parameters, or a checkpoint exists and ``resume`` is False
    """
    device = resolve_device(config.device)
    ctx, device = setup_distributed(device)
    try:
        return _train(config, ctx, device, out_dir=Path(out_dir), resume=resume, progress=progress and ctx.is_main,
                      stop_after=stop_after, callback=callback)
    finally:
        if ctx.owned and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class _Run:
    """What the steps of one run share: built by :func:`_prepare`, advanced by the epochs."""

    config: TrainConfig
    ctx: Distributed
    device: torch.device
    out_dir: Path
    store: Store
    split: FoldSplit
    view: View
    model: Classifier  # the plain model: checkpoints, evaluation, the loss hook
    net: torch.nn.Module  # what the training step calls: the model or its DDP wrapper
    train_ds: StoreBatches
    train_loader: Any
    val_ds: StoreBatches | None
    val_loader: Any
    test_ds: StoreBatches | None
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    use_amp: bool
    memory_format: torch.memory_format = torch.contiguous_format
    ema: WeightAverage | None = None
    defense: Defense = field(default_factory=NoDefense)  # the loss each step minimises
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    recalibrated: bool = False

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.config.dtype)

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    def reseed(self, epoch: int) -> None:
        """Dropout & co: a function of (seed, epoch), and of the rank under DDP."""
        torch.manual_seed(derive_seed(self.config.seed, epoch, 3, *((self.ctx.rank,) if self.ctx.rank else ())))

    def save(self, *, epoch: int, **final: Any) -> None:
        """Rewrite the checkpoint (rank 0 only); ``final``: the test metrics and BN flag of the last save."""
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, model=self.model, view=self.view, classes=self.store.classes,
                            store=self.store, config=self.config, split=self.split, epoch=epoch,
                            history=self.history, optimizer=self.optimizer, scheduler=self.scheduler,
                            scaler=self.scaler, distributed=self.ctx.to_dict(),
                            ema=self.ema.state_dict() if self.ema is not None else None, **final)

    def write_metrics(self, test: Mapping[str, Any] | None, complete: bool) -> dict[str, Any]:
        metrics = _metrics(self, test, complete)
        if self.ctx.is_main:
            write_metrics(self.out_dir / METRICS_NAME, metrics)
        return metrics

    def close(self) -> None:
        self.train_loader = self.val_loader = None  # stops DataLoader workers before the files close
        for ds in (self.train_ds, self.val_ds, self.test_ds):
            if ds is not None:
                ds.close()


def _train(config: TrainConfig, ctx: Distributed, device: torch.device, *, out_dir: Path, resume: bool,
           progress: bool, stop_after: int | None, callback) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        remove_stale_tmp(out_dir)
    store = Store(config.store)
    split = split_by_fold(store, config)
    saved = _checkpoint_to_resume(out_dir, config, store, resume=resume)
    final = saved is not None and is_final(saved)
    if final:
        done = _complete_metrics(out_dir / METRICS_NAME)
        if done is not None:
            # A finished run is left byte for byte: attack shards are keyed by its sha256.
            ctx.barrier()
            return done
    ctx.barrier()  # every rank has decided on the same checkpoint before rank 0 may rewrite it

    run = _prepare(config, ctx, device, out_dir=out_dir, store=store, split=split, saved=saved)
    if final:
        # Killed between the final checkpoint and its metrics: the checkpoint (and so its
        # sha256) stays as it is, the metrics are rebuilt from it.
        metrics = run.write_metrics(saved["test"], True)
        ctx.barrier()
        run.close()
        return metrics
    last = config.epochs if stop_after is None else min(config.epochs, int(stop_after))
    for epoch in range(run.start_epoch, last):
        record = _train_epoch(run, epoch, progress=progress, callback=callback)
        run.history.append(record)
        run.save(epoch=epoch + 1)
        run.write_metrics(None, False)
        ctx.barrier()
        kill_point("epoch", epoch + 1)
        if progress:
            extra = f", val acc {record['val_accuracy']:.3f}" if "val_accuracy" in record else ""
            tqdm.write(f"epoch {epoch + 1}/{config.epochs}: loss {record['train_loss']:.4f}, "
                       f"acc {record['train_accuracy']:.3f}{extra}, {record['samples_per_second']:.0f} samples/s",
                       file=sys.stderr)

    # Completion is written last: the final checkpoint (BN recalibrated, test evaluated, marked
    # complete), then the metrics. A kill anywhere before leaves a run that --resume finishes.
    complete = len(run.history) >= config.epochs
    test = None
    if complete:
        test = _final_test(run)
        kill_point("evaluated", len(run.history))
        run.save(epoch=len(run.history), test=test, bn_recalibrated=run.recalibrated)
        ctx.barrier()
        kill_point("final-checkpoint", len(run.history))
    metrics = run.write_metrics(test, complete)
    ctx.barrier()  # the files exist (and are final) when train() returns on any rank
    run.close()
    return metrics


def _complete_metrics(path: Path) -> dict[str, Any] | None:
    """``metrics.json`` when it records a complete run, else None (absent, partial or damaged).

    A damaged file is said so on standard error: the caller rewrites it from the final checkpoint.
    """
    try:
        metrics = read_metrics(path)
    except DamagedFileError as exc:
        print(f"warning: {exc}; it is rewritten from the checkpoint", file=sys.stderr)
        return None
    except StoreError:
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("complete") and "test" in metrics else None


# --------------------------------------------------------------------------- #
# Building a run
# --------------------------------------------------------------------------- #
def _checkpoint_to_resume(out_dir: Path, config: TrainConfig, store: Store, *, resume: bool) -> dict | None:
    """The checkpoint in ``out_dir`` (checked to fit ``config`` and ``store``), or None if there is none."""
    path = out_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    if not resume:
        raise ParameterError(f"{path} already exists; pass --resume to continue that run "
                             "or choose another output directory")
    saved = read_checkpoint(path)
    check_same_store(store, saved["store"]["fingerprint"], what=f"checkpoint {path}")
    now = config.to_dict()
    before = saved["train_config"]
    try:  # fields added since the checkpoint was written take their defaults
        before = TrainConfig.from_dict(before).to_dict()
    except (ParameterError, TypeError):
        pass
    changed = sorted(k for k in set(now) | set(before)
                     if k not in RESUME_MAY_CHANGE and now.get(k) != before.get(k))
    if changed:
        detail = "; ".join(f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in changed)
        raise ParameterError(f"cannot resume {path} with different parameters ({detail}); "
                             "use another output directory for a new run")
    return saved


def _prepare(config: TrainConfig, ctx: Distributed, device: torch.device, *, out_dir: Path, store: Store,
             split: FoldSplit, saved: dict | None) -> _Run:
    """View, model, data, optimizer and schedule of a run; restored from ``saved`` when resuming."""
    init = None
    if config.init_checkpoint is not None and saved is None:
        init = read_checkpoint(config.init_checkpoint)
        check_same_store(store, init["store"]["fingerprint"], what=f"init checkpoint {config.init_checkpoint}")
        require(init.get("plugins") or [], where=f"init checkpoint {config.init_checkpoint}")
    if saved is not None:
        require(saved.get("plugins") or [], where=f"checkpoint {out_dir / CHECKPOINT_NAME}")
    view = _view(config, store, split, source=saved or init)
    _check_extra_sources(config, store, split, view)
    model, net = _build_model(config, store, view, device, ctx, init=init, saved=saved)

    # Each rank reads its share of every global batch and of the evaluation folds.
    train_ds = StoreBatches(store, view, split.train, batch_size=config.batch_size, shuffle=True,
                            seed=config.seed, time_shift=config.time_shift, augmentation=config.augmentation(),
                            extra_sources=config.extra_sources, mix=config.mix,
                            rank=ctx.rank, world_size=ctx.world_size)
    eval_bs = max(config.batch_size, 64)
    val_rows, test_rows = ctx.share(split.val), ctx.share(split.test)
    val_ds = StoreBatches(store, view, val_rows, batch_size=eval_bs) if val_rows.size else None
    test_ds = StoreBatches(store, view, test_rows, batch_size=eval_bs) if test_rows.size else None
    workers = loader_workers(config, device)
    train_loader = make_loader(train_ds, workers=workers, device=device)
    val_loader = make_loader(val_ds, workers=min(workers, 1), device=device) if val_ds else None

    optimizer = _build_optimizer(model, config)
    use_amp = bool(config.amp and device.type == "cuda" and config.dtype == "float32")
    run = _Run(config=config, ctx=ctx, device=device, out_dir=out_dir, store=store, split=split, view=view,
               model=model, net=net, train_ds=train_ds, train_loader=train_loader, val_ds=val_ds,
               val_loader=val_loader, test_ds=test_ds, optimizer=optimizer,
               scheduler=_build_scheduler(optimizer, config, len(train_ds)),
               scaler=torch.amp.GradScaler("cuda", enabled=needs_grad_scaler(device, use_amp)), use_amp=use_amp,
               memory_format=memory_format(config, device),
               ema=WeightAverage(model, config.ema_decay) if config.ema_decay > 0 else None,
               defense=create_defense(config.defense, **config.defense_options))
    if saved is not None:
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        if run.scaler.is_enabled() and saved.get("scaler"):
            run.scaler.load_state_dict(saved["scaler"])
        set_rng_states(saved["rng"])
        run.history = list(saved["history"])
        run.start_epoch = int(saved["epoch"])
        run.recalibrated = bool(saved.get("bn_recalibrated", False))
        if run.ema is not None:
            if "ema" not in saved:
                raise StoreError(f"{out_dir / CHECKPOINT_NAME} keeps no weight average, which ema_decay asks for")
            run.ema.load_state_dict(saved["ema"])
    return run


def _view(config: TrainConfig, store: Store, split: FoldSplit, *, source: Mapping[str, Any] | None) -> View:
    """The view of the checkpoint being resumed or fine-tuned (``source``), else one fitted on the training rows."""
    if source is not None:
        view = View.from_dict(source["view"])
        if view.name != config.view or view.input_size != config.input_size:
            raise ParameterError(f"the checkpoint's view is {view.name} at {view.input_size}; "
                                 f"the configuration asks for {config.view} at {config.input_size}")
    else:
        view = fit_view(store, config.view, rows=split.train, input_size=config.input_size,
                        percentiles=config.percentiles)
    view.check_store(store)
    return view


def _check_extra_sources(config: TrainConfig, store: Store, split: FoldSplit, view: View) -> None:
    """The rules of ``retrain`` for every adversarial input (checksum, range, store, view, no held-out clip)."""
    paths = [Path(s.path) for s in config.extra_sources if s.inputs == "adversarial"]
    if paths:
        summary = split.summary()
        held_out = {int(f) for f in (summary.get("test_fold"), summary.get("val_fold")) if f is not None}
        inspect_shards(paths, store=store, held_out_folds=held_out, view=view.to_dict(), require_provenance=False)


def _build_model(config: TrainConfig, store: Store, view: View, device: torch.device, ctx: Distributed, *,
                 init: Mapping[str, Any] | None, saved: Mapping[str, Any] | None) -> tuple[Classifier, torch.nn.Module]:
    """The model on ``device`` (weights: seeded, fine-tuned from ``init`` or resumed from ``saved``),
    and what the training step calls: the model itself, or its DDP wrapper."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank; DDP broadcasts rank 0's anyway
    model = create_model(config.model, in_channels=1, num_classes=store.num_classes, width=config.width,
                         **config.model_options)
    model.to(dtype=getattr(torch, config.dtype))  # before loading weights: a float64 run resumes unrounded
    if init is not None:
        other = model_from_config(init["model"]["config"]).config
        if other != model.config:
            raise ParameterError(f"init checkpoint's model {other} differs from the configured {model.config}")
        model.load_state_dict(init["model"]["state_dict"])
    if saved is not None:
        model.load_state_dict(saved["model"]["state_dict"])
    min_size = model.min_input_size
    if min(view.output_shape[1:]) < min_size:
        raise ParameterError(f"{config.model} needs inputs of at least {min_size}×{min_size}; the view gives "
                             f"{view.output_shape[1]}×{view.output_shape[2]} (raise --input-size)")
    model.to(device, memory_format=memory_format(config, device))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if not ctx.enabled:
        return model, model
    from torch.nn.parallel import DistributedDataParallel

    model = convert_sync_batchnorm(model, device)
    return model, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def memory_format(config: TrainConfig, device: torch.device) -> torch.memory_format:
    """NHWC on CUDA when ``config.channels_last`` (cuDNN's tensor-core convolutions want it);
    NCHW on CPU, where oneDNN reorders NHWC inputs of these small convolutions at a loss."""
    return torch.channels_last if config.channels_last and device.type == "cuda" else torch.contiguous_format


def loader_workers(config: TrainConfig, device: torch.device) -> int:
    """``config.workers``, or when None :func:`advaudio.data.default_workers` for ``device``."""
    return default_workers(device) if config.workers is None else int(config.workers)


def _build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on biases and normalisation parameters (1-D tensors).
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.9, nesterov=True)


def _build_scheduler(optimizer, config: TrainConfig, steps_per_epoch: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch),
            pct_start=config.warmup_fraction, anneal_strategy="cos",
            cycle_momentum=config.optimizer == "sgd",
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


# --------------------------------------------------------------------------- #
# Running it
# --------------------------------------------------------------------------- #
def _train_epoch(run: _Run, epoch: int, *, progress: bool, callback) -> dict[str, Any]:
    """One pass over the training batches (and the validation set, if any); the epoch's record."""
    config, ctx, device, train_ds = run.config, run.ctx, run.device, run.train_ds
    run.reseed(epoch)
    train_ds.set_epoch(epoch)
    run.net.train()
    loss_sum, correct, seen = 0.0, 0, 0
    t0 = time.perf_counter()
    bar = progress_bar(total=len(train_ds), desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch",
                       enabled=progress, leave=False)
    # Sums stay on the device: reading one back waits for the GPU, so that happens only for a
    # callback, a progress-bar refresh (at most every 0.5 s) and at the end of the epoch.
    loss_acc = torch.zeros((), dtype=torch.float64, device=device)
    correct_acc = torch.zeros((), dtype=torch.int64, device=device)
    shown = t0
    for step, batch in enumerate(run.train_loader):
        batch = to_device(batch, device, dtype=run.dtype)
        x, y = batch["x"], batch["y"]
        # Mixed samples have soft targets; without mixing the loss sees the labels, as it always did.
        target = batch["target"].to(run.dtype) if "target" in batch else y
        if run.memory_format is not torch.contiguous_format:
            x = x.contiguous(memory_format=run.memory_format)
        n = y.shape[0]
        # DDP: the share's summed loss over global batch / world, so DDP's gradient average is the global mean.
        denominator = train_ds.global_batch_size(epoch, step) / ctx.world_size if ctx.enabled else None
        # The defense sees the inputs (an on-the-fly attack perturbs them); "none" is net(x) and its loss.
        step_context = StepContext(classifier=run.model, epoch=epoch, step=step, seed=config.seed, rank=ctx.rank,
                                   world_size=ctx.world_size, label_smoothing=config.label_smoothing,
                                   denominator=denominator,
                                   batch_size=train_ds.global_batch_size(epoch, step) if ctx.enabled else None)
        with autocast(device, run.use_amp):
            # Mixed samples' soft targets reach only the built-in "none" (the config refuses mixing with
            # another defense: an attack inside the step wants each sample's class).
            loss = run.defense.loss(run.net, x, target, step_context=step_context)
        output = step_context.output
        if output is None:
            raise ParameterError(f"defense {config.defense!r} did not set step_context.output (the output whose "
                                 "logits count as training accuracy)")
        run.optimizer.zero_grad(set_to_none=True)
        if run.scaler.is_enabled():
            run.scaler.scale(loss).backward()
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            loss.backward()
            run.optimizer.step()
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.model)
        loss_detached = loss.detach()
        # the share's summed loss (DDP) or the batch's
        loss_acc += loss_detached.double() * (n if denominator is None else denominator)
        # a mixed sample counts as its dominant label (what its target says most)
        truth = y if target is y else target.argmax(1)
        correct_acc += (run.model.main_logits(output).detach().argmax(1) == truth).sum()
        seen += n
        bar.update(1)
        now = time.perf_counter()
        if progress and now - shown >= 0.5:
            shown = now
            loss_sum, correct = float(loss_acc), int(correct_acc)
            # refresh=False: the bar redraws on update() at its own pace (every 30 s in a log)
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}",
                            sps=f"{seen * ctx.world_size / max(now - t0, 1e-9):.0f}", refresh=False)
        if callback is not None:
            loss_value = float(loss_detached)
            if denominator is not None:  # the mean over the share
                loss_value = loss_value * denominator / max(n, 1)
            callback({"epoch": epoch + 1, "batch": step + 1, "batches": len(train_ds), "loss": loss_value})
    loss_sum, correct = float(loss_acc), int(correct_acc)
    bar.close()
    if ctx.enabled:  # global sums: the same numbers on every rank
        total = ctx.all_reduce([loss_sum, correct, seen])
        loss_sum, correct, seen = float(total[0]), int(round(total[1])), int(round(total[2]))
    seconds = time.perf_counter() - t0
    record = {
        "epoch": epoch + 1,
        "train_loss": loss_sum / max(seen, 1),
        "train_accuracy": correct / max(seen, 1),
        "lr": float(run.scheduler.get_last_lr()[0]),
        "samples": seen,
        "seconds": seconds,
        "samples_per_second": seen / seconds if seconds > 0 else None,
        "world_size": ctx.world_size,
    }
    if run.split.val.size > 0:
        v = run_evaluation(run.model, run.val_loader, run.val_ds, device=device, classes=run.store.classes,
                           amp=run.use_amp, distributed=ctx)
        record.update(val_loss=v["loss"], val_accuracy=v["accuracy"])
    return record


def _final_test(run: _Run) -> dict[str, Any]:
    """Batch-norm recalibration (once, if configured), then the test fold's metrics."""
    config = run.config
    t0 = time.perf_counter()
    if run.ema is not None and not run.recalibrated:
        run.ema.copy_to(run.model)  # the average is the model evaluated, saved and attacked
    if config.recalibrate_bn and not run.recalibrated:
        # The training distribution (time shifts, extra sources) on a plan no epoch used; but not
        # masked or mixed: the statistics are for clean inputs, like the ones the model is tested on.
        run.reseed(config.epochs)
        loader, ds = run.train_loader, run.train_ds
        if ds.augmentation is not None:
            ds = StoreBatches(run.store, run.view, run.split.train, batch_size=config.batch_size, shuffle=True,
                              seed=config.seed, time_shift=config.time_shift, extra_sources=config.extra_sources,
                              mix=config.mix, rank=run.ctx.rank, world_size=run.ctx.world_size)
            loader = make_loader(ds, workers=min(loader_workers(config, run.device), 1), device=run.device)
        ds.set_epoch(config.epochs)
        try:
            recalibrate_bn(run.model, loader, device=run.device, amp=run.use_amp)
        finally:
            if ds is not run.train_ds:
                ds.close()
        run.recalibrated = True
    test_loader = (make_loader(run.test_ds, workers=min(loader_workers(config, run.device), 1), device=run.device)
                   if run.test_ds else None)
    test = run_evaluation(run.model, test_loader, run.test_ds, device=run.device, classes=run.store.classes,
                          amp=run.use_amp, distributed=run.ctx)
    test["fold"] = run.split.test_fold
    # The final model on its own training clips, clean (no augmentation, evaluation mode): the
    # other side of the train-test gap, which accuracy on augmented batches does not show.
    train_rows = run.ctx.share(run.split.train)
    train_ds = StoreBatches(run.store, run.view, train_rows, batch_size=max(config.batch_size, 64)) \
        if train_rows.size else None
    train_loader = (make_loader(train_ds, workers=min(loader_workers(config, run.device), 1), device=run.device)
                    if train_ds else None)
    try:
        on_train = run_evaluation(run.model, train_loader, train_ds, device=run.device, classes=run.store.classes,
                                  amp=run.use_amp, distributed=run.ctx)
    finally:
        if train_ds is not None:
            train_ds.close()
    test["train_accuracy"], test["train_loss"] = on_train["accuracy"], on_train["loss"]
    test["seconds"] = time.perf_counter() - t0
    return test


def _metrics(run: _Run, test: Mapping[str, Any] | None, complete: bool) -> dict[str, Any]:
    """What ``metrics.json`` holds."""
    history, config = run.history, run.config
    train_seconds = sum(h["seconds"] for h in history)
    samples = sum(h["samples"] for h in history)
    out = {
        "complete": complete,
        "epochs_done": len(history),
        "epochs": config.epochs,
        "history": list(history),
        "samples_per_second": samples / train_seconds if train_seconds > 0 else None,
        "wall_seconds": train_seconds + (test or {}).get("seconds", 0.0),
        "device": str(run.device),
        "model": dict(run.model.config),
        "parameters": int(sum(p.numel() for p in run.model.parameters())),
        "view": run.view.to_dict(),
        "store": {"path": str(run.store.directory), "fingerprint": run.store.fingerprint,
                  "dataset": run.store.dataset},
        "split": run.split.summary(),
        "config": config.to_dict(),
        "checkpoint": str(run.checkpoint_path),
        "round": int(config.provenance.get("round", 0)),
        "world_size": run.ctx.world_size,
        "distributed": run.ctx.to_dict(),
        "plugins": training_plugins(run.model, config),
    }
    if test is not None:
        out["test"] = dict(test)
        out["test_accuracy"] = test["accuracy"]
        if "train_accuracy" in test:  # runs before it lack it
            out["train_accuracy"] = test["train_accuracy"]
        out["per_class_accuracy"] = test["per_class_accuracy"]
        out["confusion_matrix"] = test["confusion_matrix"]
    if history and "val_accuracy" in history[-1]:
        out["val_accuracy"] = history[-1]["val_accuracy"]
    return out
