"""``advaudio train`` and ``advaudio evaluate``: :func:`advaudio.train`, :func:`advaudio.evaluate`
(options: :mod:`advaudio.stages.train_config`)."""

from __future__ import annotations

import json

import click

from advaudio.cli._common import command, show
from advaudio.stages.train_config import EVALUATE, TRAIN


def _evaluation(result, **cli_only) -> None:
    """``--json``: the evaluation as JSON instead of the table."""
    if cli_only["json"]:
        click.echo(json.dumps(result.evaluation, indent=2))
    else:
        show(result)


train = command(TRAIN, "advaudio.stages.train:train")
evaluate = command(EVALUATE, "advaudio.stages.train:evaluate", present=_evaluation)
