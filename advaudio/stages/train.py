"""``advaudio train`` and ``advaudio evaluate`` as functions (:func:`train`, :func:`evaluate`), over
:func:`advaudio.training.train` and :func:`advaudio.training.evaluate`; their options are
:mod:`advaudio.stages.train_config`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advaudio import layout
from advaudio.options import CommandResult, Values, field_default
from advaudio.stages.train_config import EVALUATE, TRAIN, defense_params
from advaudio.threads import configure_threads

__all__ = ["EvaluateRun", "TrainRun", "evaluate", "train"]


@dataclass
class TrainRun(CommandResult):
    """What :func:`train` did: :attr:`path` is the checkpoint, :attr:`metrics` the run's
    ``metrics.json`` (history, test accuracy, …). Under torchrun every rank gets the same metrics;
    rank 0 alone prints them (:attr:`rank`)."""

    metrics: dict[str, Any] = field(default_factory=dict)
    rank: int = 0

    def lines(self) -> list[str]:
        m = self.metrics
        split = m["split"]
        out = [f"trained {m['model']['name']} (width {m['model']['width']:g}, {m['parameters']:,} parameters) on "
               f"view {m['view']['name']} {m['view']['output_shape'][1]}x{m['view']['output_shape'][2]}: "
               f"{split['train_clips']} training clips (folds {','.join(map(str, split['train_folds']))}), "
               f"{m['epochs_done']} epochs on {m['device']}"]
        if m["history"]:
            last = m["history"][-1]
            val = f", val accuracy {last['val_accuracy']:.3f}" if "val_accuracy" in last else ""
            out.append(f"final train loss {last['train_loss']:.4f}, train accuracy {last['train_accuracy']:.3f}{val}")
        if m.get("test"):
            t = m["test"]
            on_train = f"; {t['train_accuracy']:.3f} on the training clips (clean)" if "train_accuracy" in t else ""
            out.append(f"test accuracy {t['accuracy']:.3f} on fold {t['fold']} ({t['n']} clips){on_train}")
        sps = m.get("samples_per_second")
        out.append(f"{sps:.1f} samples/s, {m['wall_seconds']:.1f} s" if sps else f"{m['wall_seconds']:.1f} s")
        out.append(f"metrics: {layout.metrics_path(self.path.parent)}")
        return out

    def output(self) -> list[str]:
        return super().output() if self.rank == 0 else []  # torchrun: rank 0 reports for the job


@TRAIN.function(TrainRun)
def train(v: Values) -> TrainRun:
    from advaudio.training import TrainConfig
    from advaudio.training import train as run

    recipe = v.recipe or (_resumed_recipe(v.out) if v.resume else None)
    values = v.config()
    if v.param:  # -p defense.KEY=VALUE: options of the defense, beside -d KEY=VALUE
        defense = str(values.get("defense") or field_default(TrainConfig, "defense")()).strip().lower()
        values["defense_options"] = {**values.get("defense_options", {}), **defense_params(v.param, defense)}
    config = TrainConfig(**values, recipe=recipe or field_default(TrainConfig, "recipe")())
    configure_threads(v.threads)
    metrics = run(config, out_dir=v.out, resume=v.resume, progress=v.progress)
    return TrainRun(Path(metrics["checkpoint"]), metrics=metrics, rank=int(os.environ.get("RANK", "0")))


def _resumed_recipe(out_dir) -> str | None:
    """The recipe of the checkpoint ``resume`` continues (``paper`` for one written before
    recipes), so that the command that started a run resumes it; None without a checkpoint."""
    from advaudio.training import read_checkpoint

    path = layout.checkpoint_path(out_dir)
    if not path.is_file():
        return None
    return read_checkpoint(path)["train_config"].get("recipe", "paper")


@dataclass
class EvaluateRun(CommandResult):
    """What :func:`evaluate` measured: :attr:`evaluation` (accuracy, loss, per-class accuracy, confusion
    matrix; with ``autoattack``, its ``"autoattack"`` list: robust accuracy per norm and ε with its
    interval); :attr:`path` is the checkpoint evaluated (its first line names it)."""

    evaluation: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        r = self.evaluation
        out = [f"checkpoint   {r['checkpoint']} (epoch {r['epoch']}, view {r['view']})",
               f"store        {r['store']} (fingerprint {r['store_fingerprint']})",
               f"fold {r['fold']}       {r['n']} clips, accuracy {r['accuracy']:.4f}, loss {r['loss']:.4f}"]
        width = max(len(c) for c in r["classes"])
        out += [f"  {name:<{width}}  " + ("n/a" if acc is None else f"{acc:.3f}")
                for name, acc in r["per_class_accuracy"].items()]
        out.append("confusion matrix (rows: true class, columns: predicted)")
        out += [f"  {name:<{width}}  " + " ".join(f"{v:4d}" for v in row)
                for name, row in zip(r["classes"], r["confusion_matrix"])]
        for a in r.get("autoattack") or []:
            out.append(f"AutoAttack {a['norm']} ε={a['eps']:.4g}: robust accuracy {a['robust_accuracy']:.4f} "
                       f"[{a['ci_low']:.4f}, {a['ci_high']:.4f}] ({a['n_robust']} of {a['n']} clips; "
                       f"{a['n_correct']} attacked, {a['seconds']:.0f} s)")
            out += [f"  warning: {w}" for w in a.get("warnings") or []]
        return out

    def output(self) -> list[str]:
        return self.lines()  # the checkpoint is named on the first line


@EVALUATE.function(EvaluateRun)
def evaluate(v: Values) -> EvaluateRun:
    from advaudio.training import evaluate as run

    configure_threads(v.threads)
    result = run(v.checkpoint, store=v.store, fold=v.fold, device=v.device, batch_size=v.batch_size,
                 workers=v.workers, autoattack=v.autoattack, seed=v.seed)
    if v.autoattack:  # kept beside the checkpoint, where `advaudio report` finds them
        from advaudio.training.evaluation import write_autoattack

        write_autoattack(v.checkpoint, result)
    return EvaluateRun(Path(v.checkpoint), evaluation=result)
