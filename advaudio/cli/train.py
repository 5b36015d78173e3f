"""``advaudio train`` and ``advaudio evaluate``."""

from __future__ import annotations

import json
import os

import click

from advaudio import layout
from advaudio.cli._common import computes, config_default, key_values, size_text
from advaudio.models import list_models
from advaudio.training import DEFENSES, DTYPES, OPTIMIZERS, SCHEDULES, TrainConfig


def _input_size(value: str | None):
    from advaudio.views import parse_input_size

    return parse_input_size(value)


def _defense_params(pairs: tuple[str, ...], defense: str) -> dict:
    """``defense.KEY=VALUE`` (or ``NAME.KEY=VALUE``) pairs; ``8/255`` reads as a number."""
    from advaudio.errors import ParameterError

    out = {}
    for pair in pairs:
        head, sep, value = pair.partition("=")
        owner, dot, key = head.partition(".")
        if not sep or not dot or owner.strip().lower() not in ("defense", defense):
            raise ParameterError(f"-p takes defense.KEY=VALUE (the options of --defense {defense}), got {pair!r}")
        num, slash, den = value.partition("/")
        try:
            value = str(float(num) / float(den)) if slash else value
        except ValueError:
            pass
        out.update(key_values((f"{key}={value}",), "defense option"))
    return out


@click.command()
@click.option("--store", "store_path", required=True, type=click.Path(),
              help="Feature store directory (made by `advaudio featurize`).")
@click.option("--view", default=config_default(TrainConfig, "view"), show_default=True,
              help="Representations joined by '+', appended along the band axis, e.g. stft, dwt+chroma.")
@click.option("--model", type=click.Choice(list_models()), default=config_default(TrainConfig, "model"), show_default=True,
              help="Architecture.")
@click.option("--defense", type=click.Choice(list(DEFENSES)), default=config_default(TrainConfig, "defense"),
              show_default=True, help="What each training step minimises: none (clean training) or an installed "
                                      "defense plugin, whose loss sees the inputs.")
@click.option("-d", "--defense-option", "defense_options", multiple=True, metavar="KEY=VALUE",
              help="Option of the defense, repeatable, e.g. -d epsilon=0.03.")
@click.option("-p", "--param", "defense_params", multiple=True, metavar="defense.KEY=VALUE",
              help="Option of the defense as defense.KEY=VALUE (or NAME.KEY=VALUE), repeatable; a fraction "
                   "is a number: -p defense.epsilon=8/255 -p defense.steps=7. pgd-at: epsilon, alpha, steps, "
                   "random_start, norm; trades: epsilon, alpha, steps, beta, norm; fast-at: epsilon, alpha, "
                   "random_start.")
@click.option("--width", type=float, default=config_default(TrainConfig, "width"), show_default=True,
              help="Channel-width multiplier of the model (e.g. 0.25 for quick CPU runs).")
@click.option("--input-size", default=size_text(config_default(TrainConfig, "input_size")), show_default=True, metavar="HxW",
              help="Model input size the view is resized to (bilinear), e.g. 128x128 or 96; 'none' keeps "
                   "bands x frames.")
@click.option("--test-fold", type=int, default=None, help="Fold held out for testing [default: the highest fold].")
@click.option("--val-fold", type=int, default=None, help="A fold held out for validation.")
@click.option("--val-fraction", type=float, default=config_default(TrainConfig, "val_fraction"), show_default=True,
              help="Stratified fraction of the training clips held out for validation.")
@click.option("--epochs", type=int, default=config_default(TrainConfig, "epochs"), show_default=True, help="Passes over the training clips.")
@click.option("--batch-size", type=int, default=config_default(TrainConfig, "batch_size"), show_default=True, help="Samples per optimizer step (global: under torchrun, split across the processes).")
@click.option("--lr", type=float, default=config_default(TrainConfig, "lr"), show_default=True,
              help="Peak learning rate of the one-cycle schedule (AdamW).")
@click.option("--weight-decay", type=float, default=config_default(TrainConfig, "weight_decay"), show_default=True,
              help="AdamW decoupled weight decay (SGD: L2).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=config_default(TrainConfig, "optimizer"), show_default=True,
              help="Optimizer.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=config_default(TrainConfig, "schedule"), show_default=True,
              help="Learning-rate schedule, stepped per batch.")
@click.option("--label-smoothing", type=float, default=config_default(TrainConfig, "label_smoothing"), show_default=True,
              help="Label smoothing of the training loss.")
@click.option("--time-shift", type=float, default=config_default(TrainConfig, "time_shift"), show_default=True,
              help="Random circular shift along time, max fraction of the width (0 turns it off).")
@click.option("--seed", type=int, default=config_default(TrainConfig, "seed"), show_default=True, help="Seed of every random choice.")
@click.option("--workers", type=int, default=config_default(TrainConfig, "workers"), show_default=True,
              help="DataLoader worker processes reading the store (0: read in the main process; "
                   "default: sized to the CPUs).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available), cpu, cuda or cuda:N.")
@click.option("--amp/--no-amp", default=config_default(TrainConfig, "amp"), show_default=True,
              help="Mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling).")
@click.option("--dtype", type=click.Choice(DTYPES), default=config_default(TrainConfig, "dtype"), show_default=True,
              help="Precision of weights, inputs and optimizer. float64: a reference run for reproducibility "
                   "checks (float32 runs of small CNNs drift with the order of reductions: threads, CPU, "
                   "DDP ranks); other stages load its checkpoint in float32.")
@click.option("--channels-last/--no-channels-last", default=config_default(TrainConfig, "channels_last"),
              show_default=True, help="NHWC memory format on CUDA (ignored on CPU).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory for checkpoint.pt and metrics.json.")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its checkpoint (same parameters); starts fresh if none.")
@click.option("--init-checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Start from this checkpoint's weights and view (fine-tuning).")
@click.option("--extra", "extra", multiple=True, type=click.Path(dir_okay=False), metavar="H5",
              help="Model-space inputs to mix into training batches (datasets adversarial, label, "
                   "success); repeatable.")
@click.option("--mix", type=float, default=config_default(TrainConfig, "mix"), show_default=True,
              help="Fraction of each training batch taken from --extra sources.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@computes
def train(store_path, view, model, defense, defense_options, defense_params, width, input_size, test_fold, val_fold, val_fraction, epochs, batch_size, lr,
          weight_decay, optimizer, schedule, label_smoothing, time_shift, seed, workers, device, amp, dtype,
          channels_last, out_dir, resume, init_checkpoint, extra, mix, progress):
    """Train a CNN on a view of a feature store, holding out a test fold.

    Streams batches from the store, writes OUT/checkpoint.pt after every epoch
    (atomically; --resume continues a killed run to the same weights) and
    OUT/metrics.json. Prints a summary; the checkpoint path is the last line.
    """
    from advaudio.training import TrainConfig
    from advaudio.training import train as run

    config = TrainConfig(
        store=store_path, view=view, model=model, defense=defense,
        defense_options={**key_values(defense_options, "defense option"), **_defense_params(defense_params, defense)},
        width=width, input_size=_input_size(input_size),
        test_fold=test_fold, val_fold=val_fold, val_fraction=val_fraction, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, optimizer=optimizer, schedule=schedule,
        label_smoothing=label_smoothing, time_shift=time_shift, seed=seed, workers=workers, device=device,
        amp=amp, dtype=dtype, channels_last=channels_last, extra_sources=tuple(extra), mix=mix, init_checkpoint=init_checkpoint,
    )
    m = run(config, out_dir=out_dir, resume=resume, progress=progress)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports for the job
        return
    split = m["split"]
    click.echo(
        f"trained {m['model']['name']} (width {m['model']['width']:g}, {m['parameters']:,} parameters) on view "
        f"{m['view']['name']} {m['view']['output_shape'][1]}x{m['view']['output_shape'][2]}: "
        f"{split['train_clips']} training clips (folds {','.join(map(str, split['train_folds']))}), "
        f"{m['epochs_done']} epochs on {m['device']}"
    )
    if m["history"]:
        last = m["history"][-1]
        val = f", val accuracy {last['val_accuracy']:.3f}" if "val_accuracy" in last else ""
        click.echo(f"final train loss {last['train_loss']:.4f}, train accuracy {last['train_accuracy']:.3f}{val}")
    if m.get("test"):
        t = m["test"]
        click.echo(f"test accuracy {t['accuracy']:.3f} on fold {t['fold']} ({t['n']} clips)")
    sps = m.get("samples_per_second")
    click.echo(f"{sps:.1f} samples/s, {m['wall_seconds']:.1f} s" if sps else f"{m['wall_seconds']:.1f} s")
    click.echo(f"metrics: {layout.metrics_path(out_dir)}")
    click.echo(m["checkpoint"])


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="checkpoint.pt of a run.")
@click.option("--store", "store_path", type=click.Path(), default=None,
              help="Feature store [default: the one recorded in the checkpoint]; must have the same fingerprint.")
@click.option("--fold", type=int, default=None, help="Fold to evaluate [default: the run's test fold].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Samples per forward pass.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader worker processes.")
@click.option("--autoattack", default=None, metavar="NORM:EPS,…",
              help="Robust accuracy under AutoAttack (standard version, every correctly classified clip) at "
                   "each NORM:EPS, e.g. linf:8/255,l2:0.5 (ε in model-input units); needs pyautoattack "
                   "(pip install 'advaudio[autoattack]'). Written beside the checkpoint as autoattack.json.")
@click.option("--seed", type=int, default=0, show_default=True, help="AutoAttack's seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@computes
def evaluate(checkpoint, store_path, fold, device, batch_size, workers, autoattack, seed, as_json):
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on one fold (and, with
    --autoattack, robust accuracy under AutoAttack with a binomial 95 % interval)."""
    from advaudio.training import evaluate as run

    r = run(checkpoint, store=store_path, fold=fold, device=device, batch_size=batch_size, workers=workers,
            autoattack=autoattack, seed=seed)
    if autoattack:
        from advaudio.training.evaluation import write_autoattack

        write_autoattack(checkpoint, r)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"checkpoint   {r['checkpoint']} (epoch {r['epoch']}, view {r['view']})")
    click.echo(f"store        {r['store']} (fingerprint {r['store_fingerprint']})")
    click.echo(f"fold {r['fold']}       {r['n']} clips, accuracy {r['accuracy']:.4f}, loss {r['loss']:.4f}")
    width = max(len(c) for c in r["classes"])
    for name, acc in r["per_class_accuracy"].items():
        click.echo(f"  {name:<{width}}  " + ("n/a" if acc is None else f"{acc:.3f}"))
    click.echo("confusion matrix (rows: true class, columns: predicted)")
    for name, row in zip(r["classes"], r["confusion_matrix"]):
        click.echo(f"  {name:<{width}}  " + " ".join(f"{v:4d}" for v in row))
    for a in r.get("autoattack") or []:
        click.echo(f"AutoAttack {a['norm']} ε={a['eps']:.4g}: robust accuracy {a['robust_accuracy']:.4f} "
                   f"[{a['ci_low']:.4f}, {a['ci_high']:.4f}] ({a['n_robust']} of {a['n']} clips; "
                   f"{a['n_correct']} attacked, {a['seconds']:.0f} s)")
        for w in a.get("warnings") or []:
            click.echo(f"  warning: {w}")
