"""Running a study: featurize each dataset once, then every cell not yet done, on an executor.

The plan is built in one place (:func:`advaudio.study.planning.plan_study`: stores, cells,
what is done) and run in another: :func:`run_study` hands it to the executor the file
or the command names (:mod:`advaudio.study.executors`: local, dask, slurm). Every level resumes: a
complete store is not featurized again, a finished cell is skipped, a killed cell continues from its
last finished step (training from its last epoch).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from advaudio import layout
from advaudio import store as st
from advaudio.errors import DatasetError, ParameterError
from advaudio.stages.featurize import featurize_store
from advaudio.study import executors
from advaudio.study.cells import find_cell
from advaudio.study.planning import StudyPlan, cell_status, plan_study
from advaudio.study.spec import StudySpec


def write_study_record(spec: StudySpec) -> Path:
    """``study.json``: the study as resolved, beside its cells."""
    path = spec.directory / layout.STUDY_NAME
    st.write_json_atomic(path, spec.to_dict())
    return path


def featurize_study(spec: StudySpec, *, progress: bool = True, scheduler: str | None = None) -> dict[str, Path]:
    """Featurize every dataset of the study once (a complete store is reused); name → store."""
    stores = {}
    for data in spec.data:
        try:
            result = featurize_store(data.featurize, cache=layout.study_stores_dir(spec.directory),
                                     workers=spec.run.featurize_workers, scheduler=scheduler, progress=progress)
        except DatasetError as exc:
            raise ParameterError(f"{spec.path}: [data.{data.name}]: {exc}") from None
        if result.failed and progress:
            print(f"{data.name}: {result.failed} clip(s) could not be featurized "
                  f"(`advaudio store info {result.store_dir}`)", file=sys.stderr)
        stores[data.name] = result.store_dir
    return stores


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_study(spec: StudySpec, *, executor: str | None = None, cells: list[str] | None = None,
              progress: bool = True, echo: bool = False, keep_going: bool = True) -> StudyPlan:
    """Run every cell of ``spec`` that is not done (or only ``cells``, by id); returns the final plan.

    ``echo``: show each cell's progress output here as well as in its log.
    ``keep_going``: a failed cell is recorded and the others still run; the
    command's exit status then says so. Raises ParameterError for an unknown executor.
    """
    chosen = executors.executor(executor or spec.run.executor)
    spec.directory.mkdir(parents=True, exist_ok=True)
    write_study_record(spec)
    t0 = time.perf_counter()
    if chosen.featurizes_here:
        featurize_study(spec, progress=progress, scheduler=spec.run.scheduler if chosen.name == "dask" else None)
    plan = plan_study(spec)
    todo = [find_cell(plan.cells, c) for c in cells] if cells else plan.pending()
    todo = [c for c in todo if cell_status(spec, c).status != "done"]
    done = len(plan.cells) - len(plan.pending())
    if progress:
        _say(f"study {spec.name}: {len(plan.cells)} cells, {done} done, {len(todo)} to run ({chosen.name})")
    chosen.run(plan, todo, progress=progress, echo=echo, keep_going=keep_going)
    if not chosen.featurizes_here:  # submitted as jobs: nothing has run yet
        return plan_study(spec)
    final = plan_study(spec)
    if progress:
        c = final.counts()
        _say(f"study {spec.name}: {c['done']} of {len(final.cells)} cells done, {c['failed']} failed "
             f"({time.perf_counter() - t0:.0f} s)")
    return final
