"""``advaudio study init | plan | run | status | report``: :func:`advaudio.study.init` … (options:
:mod:`advaudio.study.study_config`)."""

from __future__ import annotations

import click

from advaudio.cli._common import command
from advaudio.study.study_config import INIT, PLAN, REPORT, RUN, STATUS


@click.group()
def study():
    """The paper's grid as one study: datasets × models × views × seeds × CV folds.

    A study file (TOML) declares the grid, the cross-validation protocol, the
    attacks and the rounds; `init` writes a commented one. Cells are run by
    the same stage functions as `train` and `rounds`, resume after a kill, and
    a changed parameter makes new cells without touching the others.
    """


for _spec in (INIT, PLAN, RUN, STATUS, REPORT):
    study.add_command(command(_spec, f"advaudio.study.api:{_spec.name.split()[-1]}"))
