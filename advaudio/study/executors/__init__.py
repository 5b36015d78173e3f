"""Where a study's cells run. Every executor takes the plan (:mod:`advaudio.study.planning`) and the
cells to run, with one signature: ``run(plan, todo, *, progress, echo, keep_going)``.

* ``local`` (:mod:`.local`) — cells one after another in this process (the default);
* ``dask`` (:mod:`.dask_workers`) — cells as tasks on a Dask cluster;
* ``slurm`` (:mod:`.slurm`) — one batch job per cell, after a featurize job, then a report job.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from advaudio.errors import ParameterError
from advaudio.study.spec import EXECUTORS


@dataclass(frozen=True)
class Executor:
    """An executor: its module and whether the datasets are featurized here before it runs
    (the SLURM executor featurizes in a job of its own)."""

    name: str
    module: str
    featurizes_here: bool = True

    @property
    def run(self):
        return importlib.import_module(self.module).run  # dask and SLURM only load when chosen


_EXECUTORS = {
    "local": Executor("local", "advaudio.study.executors.local"),
    "dask": Executor("dask", "advaudio.study.executors.dask_workers"),
    "slurm": Executor("slurm", "advaudio.study.executors.slurm", featurizes_here=False),
}
assert tuple(_EXECUTORS) == tuple(EXECUTORS)


def executor(name: str) -> Executor:
    """The executor called ``name`` (ParameterError listing them otherwise)."""
    if name not in _EXECUTORS:
        raise ParameterError(f"executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    return _EXECUTORS[name]
