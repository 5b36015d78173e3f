"""``advaudio path``: where a run's files are, for scripts (imports nothing heavy)."""

from __future__ import annotations

import click

from advaudio import layout
from advaudio.layout import SPLITS


@click.group("path")
def path_():
    """Print where a run's files are (advaudio.layout): for scripts, so they never rebuild names."""


_ROUND = click.option("--round", "round_", type=click.IntRange(min=0), default=0, show_default=True,
                      help="Round (0: RUN_DIR itself; K: RUN_DIR/roundKK).")


@path_.command("round-dir")
@click.argument("run_dir", type=click.Path())
@click.argument("round_", metavar="K", type=click.IntRange(min=0))
def path_round_dir(run_dir, round_):
    """Directory of round K of RUN_DIR."""
    click.echo(layout.round_dir(run_dir, round_))


@path_.command("checkpoint")
@click.argument("run_dir", type=click.Path())
@_ROUND
def path_checkpoint(run_dir, round_):
    """The checkpoint of a round of RUN_DIR."""
    click.echo(layout.checkpoint_path(run_dir, round=round_))


@path_.command("metrics")
@click.argument("run_dir", type=click.Path())
@_ROUND
def path_metrics(run_dir, round_):
    """The training metrics of a round of RUN_DIR."""
    click.echo(layout.metrics_path(run_dir, round=round_))


@path_.command("attack-results")
@click.argument("run_dir", type=click.Path())
@_ROUND
@click.option("--split", type=click.Choice(SPLITS), required=True, help="Attacked split.")
def path_attack_results(run_dir, round_, split):
    """The (unsliced or merged) attack results of a round of RUN_DIR, beside its checkpoint."""
    click.echo(layout.attack_results_path(run_dir, round=round_, split=split))
