"""``advaudio retrain`` and ``advaudio rounds``."""

from __future__ import annotations

from pathlib import Path

import click

from advaudio.cli._common import computes, config_default, split_csv, with_options
from advaudio.cli.attack import ATTACK_OPTIONS, parse_attack_params
from advaudio.stages.retrain import RetrainConfig


@click.command()
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="checkpoint.pt to retrain.")
@click.option("--store", "store_path", type=click.Path(file_okay=False), default=None,
              help="Feature store [default: the checkpoint's].")
@click.option("--shards", multiple=True, type=click.Path(dir_okay=False), metavar="SHARD",
              help="Adversarial shard(s) to train on, repeatable [default: all training-split shards "
                   "of --round made from this checkpoint].")
@click.option("--round", "round_", type=int, default=None,
              help="Round whose shards to use [default: the checkpoint's round].")
@click.option("--mix", type=float, default=config_default(RetrainConfig, "mix"), show_default=True,
              help="Fraction of every batch taken from the adversarial shards.")
@click.option("--epochs", type=int, default=None, help="Epochs [default: as the original run].")
@click.option("--lr", type=float, default=None,
              help="Peak learning rate [default: the original's; a tenth of it when fine-tuning].")
@click.option("--fine-tune/--from-scratch", default=True, show_default=True,
              help="Start from the checkpoint's weights, or re-initialise the model.")
@click.option("--device", default=None, help="auto, cpu, cuda [default: as the original run].")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory of the new run.")
@click.option("--resume", is_flag=True, help="Continue an interrupted retraining in --out.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@computes
def retrain(checkpoint, store_path, shards, round_, mix, epochs, lr, fine_tune, device, out_dir, resume, progress):
    """Retrain a model on its clean training folds plus adversarial shards.

    Shards keep their true labels; only shards made from training-fold clips
    are accepted (a shard holding test-fold clips is refused). The new
    checkpoint records the shards, attacks and budgets it saw.
    """
    from advaudio.stages.retrain import RetrainConfig
    from advaudio.stages.retrain import retrain as run

    config = RetrainConfig(mix=mix, epochs=epochs, mode="fine-tune" if fine_tune else "from-scratch", lr=lr)
    metrics = run(checkpoint, out_dir=out_dir, config=config, shards=list(shards) or None, round=round_,
                  store=store_path, device=device, resume=resume, progress=progress)
    click.echo(f"round {metrics.get('round')}: test accuracy {metrics.get('test_accuracy', float('nan')):.3f}")
    click.echo(metrics["checkpoint"])


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--rounds", type=int, default=1, show_default=True, help="Retraining rounds.")
@with_options(ATTACK_OPTIONS)
@click.option("--train-limit", type=int, default=None, help="Attack at most N training clips per round.")
@click.option("--mix", type=float, default=config_default(RetrainConfig, "mix"), show_default=True,
              help="Adversarial fraction of every batch.")
@click.option("--epochs", type=int, default=None, help="Epochs per retraining [default: as the original run].")
@click.option("--fine-tune/--from-scratch", default=True, show_default=True)
@click.option("--progress/--no-progress", default=True, show_default=True)
@computes
def rounds(run_dir, rounds, attacks, fooling_rate, limit, batch_size, target_rule, seed, params, device,
           allow_expensive, train_limit, mix, epochs, fine_tune, progress):
    """Attack-on-test → attack-on-train → retrain → attack-on-test, K rounds, in RUN_DIR.

    RUN_DIR holds a finished `advaudio train` run (round 0). Each round's
    checkpoint, shards and results are kept apart (RUN_DIR/roundNN/);
    rerunning the command resumes at the step where it stopped.
    """
    from advaudio.stages.attack import AttackStageConfig
    from advaudio.stages.retrain import RetrainConfig
    from advaudio.stages.rounds import run_rounds

    attack_config = AttackStageConfig(attacks=split_csv(attacks) or (), threshold=fooling_rate, limit=limit,
                                      batch_size=batch_size, seed=seed, target_rule=target_rule,
                                      attack_params=parse_attack_params(params), allow_expensive=allow_expensive)
    retrain_config = RetrainConfig(mix=mix, epochs=epochs, mode="fine-tune" if fine_tune else "from-scratch")
    log = run_rounds(run_dir, rounds=rounds, attack_config=attack_config, retrain_config=retrain_config,
                     train_limit=train_limit, device=device, progress=progress)
    for entry in log:
        click.echo(f"round {entry['round']} {entry['step']:<13} {'skipped' if entry['skipped'] else 'done':<8} "
                   f"{entry['path']}")
    click.echo(str(Path(run_dir)))
