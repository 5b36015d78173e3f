"""The options of ``advaudio study init | plan | run | status | report`` (:data:`INIT`, :data:`PLAN`,
:data:`RUN`, :data:`STATUS`, :data:`REPORT`), light; the functions are :mod:`advaudio.study.api`.
"""

from __future__ import annotations

from advaudio.errors import ParameterError
from advaudio.options import PROGRESS, THREADS, Command, Option
from advaudio.study.examples import EXAMPLES
from advaudio.study.spec import EXECUTORS

__all__ = ["INIT", "PLAN", "REPORT", "RUN", "STATUS"]


def _study_file(help: str) -> Option:
    return Option("study_file", kind="argument", required=True, path=True, metavar="FILE", help=help)


def _between(low: float, high: float):
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ParameterError(f"must be in [{low:g}, {high:g}], got {value!r}")
        return value
    return check


INIT = Command(
    "study init",
    """Write a commented example study to FILE.""",
    (
        _study_file("The study file (TOML) to write."),
        Option("example", default="synthetic", choices=lambda: list(EXAMPLES),
               help="Which example: the embedded synthetic set (minutes on a laptop CPU), the paper's ESC-50 grid, "
                    "or the original ESC-10 release."),
        Option("force", kind="switch", help="Overwrite FILE if it exists."),
    ),
)

PLAN = Command(
    "study plan",
    """The cells of FILE, what each costs, and what is already done.""",
    (
        _study_file("The study file (TOML)."),
        Option("probe", kind="flag", default=True,
               help="Time a forward/backward pass of each model here to estimate the cells not yet run (finished "
                    "cells of the same model are used instead when there are any)."),
    ),
)

RUN = Command(
    "study run",
    """Run every cell of FILE that is not done (resumable: run it again after a kill).""",
    (
        _study_file("The study file (TOML)."),
        Option("executor", choices=EXECUTORS, show_default=False,
               help="Where cells run [default: the file's [run] executor]."),
        Option("cell", kind="multiple", metavar="ID",
               help="Run only this cell (repeatable); `study plan` lists the ids."),
        Option("featurize_only", kind="switch", help="Featurize the datasets and stop."),
        Option("echo", kind="flag", default=False, off="--quiet",
               help="Show each cell's own progress here too (it always goes to the cell's log)."),
        Option("keep_going", kind="flag", default=True, off="--fail-fast",
               help="After a failed cell, run the others (and exit with an error at the end), or stop."),
        PROGRESS,
        THREADS,
    ),
)

STATUS = Command(
    "study status",
    """Cells done / running / failed / pending, with each failure's reason and log.

    Exit status: 1 when a cell failed.
    """,
    (_study_file("The study file (TOML)."),),
)

REPORT = Command(
    "study report",
    """The paper's tables for FILE: accuracy (mean ± std over folds), budgets with CIs, heat maps.""",
    (
        _study_file("The study file (TOML)."),
        Option("out", path=True, help="Report directory [default: STUDY_DIR/report]."),
        Option("resamples", default=2000, cli_type=int, parse=_between(100, float("inf")),
               help="Bootstrap resamples of the budgets' confidence intervals (at least 100)."),
        Option("confidence", default=0.95, cli_type=float, parse=_between(0.5, 0.999),
               help="Confidence level of the intervals (0.5 to 0.999)."),
        Option("seed", default=0, cli_type=int, help="Seed of the bootstrap."),
    ),
)
