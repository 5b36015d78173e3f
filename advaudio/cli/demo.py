"""``advaudio demo``."""

from __future__ import annotations

import click

from advaudio.cli._common import computes, config_default, split_csv
from advaudio.datasets import DATASETS
from advaudio.models import list_models
from advaudio.stages.demo import DemoConfig
from advaudio.training import RECIPES


@click.command()
@click.option("--dataset", type=click.Choice(list(DATASETS)), default=config_default(DemoConfig, "dataset"),
              show_default=True,
              help="synthetic (embedded, no files) or a real dataset with --root.")
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Dataset root for real data.")
@click.option("--out", type=click.Path(file_okay=False), default="cache/demo", show_default=True,
              help="Directory of the demo's stores, runs and report (rerun to resume).")
@click.option("--model", type=click.Choice(list_models()), default=config_default(DemoConfig, "model"), show_default=True,
              help="Architecture.")
@click.option("--width", type=float, default=None,
              help=f"Width multiplier [default: {config_default(DemoConfig, 'width')} synthetic, {DemoConfig.for_dataset('esc10', root='.').width} real].")
@click.option("--view", default=config_default(DemoConfig, "view"), show_default=True, help="View of the store the model reads.")
@click.option("--recipe", type=click.Choice(list(RECIPES)), default=config_default(DemoConfig, "recipe"),
              show_default=True, help="Training recipe (see `advaudio train --help`); paper: the earlier results'.")
@click.option("--epochs", type=int, default=None,
              help=f"Training epochs [default: {config_default(DemoConfig, 'epochs')} synthetic, the recipe's for "
                   "real data].")
@click.option("--attacks", default=",".join(config_default(DemoConfig, "attacks")), show_default=True,
              help="Attacks before and after retraining.")
@click.option("--rounds", type=int, default=config_default(DemoConfig, "rounds"), show_default=True, help="Retraining rounds.")
@click.option("--workers", type=int, default=config_default(DemoConfig, "workers"), show_default=True,
              help="Dask worker processes for featurize.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@computes
def demo(dataset, root, out, model, width, view, recipe, epochs, attacks, rounds, workers, device, progress):
    """The whole loop: featurize → train → attack → retrain → attack → report.

    On the embedded synthetic set (the default) it takes a few minutes on a
    laptop CPU. Prints the path of the report last.
    """
    from advaudio.stages.demo import run_demo

    config = DemoConfig.for_dataset(dataset, root=root, model=model, view=view, attacks=split_csv(attacks),
                                    rounds=rounds, workers=workers, width=width, recipe=recipe, epochs=epochs)
    click.echo(str(run_demo(config, out=out, device=device, progress=progress)))
