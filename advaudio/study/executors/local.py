"""The ``local`` executor: a study's cells one after another in this process."""

from __future__ import annotations

import sys
import time

from advaudio.errors import AdvaudioError
from advaudio.study import cellfile
from advaudio.study.cells import Cell, run_cell
from advaudio.study.planning import StudyPlan
from advaudio.threads import configure_threads


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(plan: StudyPlan, todo: list[Cell], *, progress: bool, echo: bool, keep_going: bool) -> None:
    """Run ``todo`` one cell after another in this process."""
    spec = plan.spec
    if spec.run.threads is not None:  # else the command's own choice (--threads, the environment) stands
        configure_threads(spec.run.threads)
    for i, cell in enumerate(todo, 1):
        t = time.perf_counter()
        if progress:
            _say(f"[{i}/{len(todo)}] {cell.cell_id} … (log: {cellfile.log_path(cell.directory(spec))})")
        try:
            run_cell(spec, cell, echo=echo, progress=True)  # the log gets status lines either way
        except AdvaudioError as exc:
            if progress:
                _say(f"[{i}/{len(todo)}] {cell.cell_id} failed: {exc}")
            if not keep_going:
                raise
            continue
        if progress:
            _say(f"[{i}/{len(todo)}] {cell.cell_id} done in {time.perf_counter() - t:.1f} s")
