"""Running a study: featurize each dataset once, then every cell not yet done, on an executor.

Executors (``[run] executor``, or ``advaudio study run --executor``):

* ``local`` — cells one after another in this process (the default);
* ``dask`` — cells as tasks on a Dask cluster, one cell per worker at a time:
  ``[run] scheduler`` (a running scheduler), ``[run.cluster]`` (dask-jobqueue
  batch jobs, :mod:`advaudio.cluster`), or ``[run] workers`` local worker
  processes; with GPUs, each worker takes one (``cuda:<worker index mod GPUs>``);
* ``slurm`` — one batch job per cell, after a featurize job, then a report job
  (:mod:`advaudio.study.slurm`).

Graph built in one place (:func:`plan_study`: stores, cells, what is done) and run
in another (:func:`run_study`). Every level resumes: a complete store is not
featurized again, a finished cell is skipped, a killed cell continues from its
last finished step (training from its last epoch).
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advaudio import layout
from advaudio import store as st
from advaudio.errors import AdvaudioError, DamagedFileError, DatasetError, ParameterError
from advaudio.study import cellfile
from advaudio.study.cells import Cell, StorePlan, expand_cells, find_cell, plan_stores, run_cell
from advaudio.study.spec import EXECUTORS, StudySpec, read_study

STATUSES = ("done", "running", "failed", "interrupted", "pending")


@dataclass(frozen=True)
class CellStatus:
    cell: Cell
    status: str  # one of STATUSES
    reason: str = ""
    log: str = ""
    summary: cellfile.CellSummary | None = None


@dataclass(frozen=True)
class StudyPlan:
    spec: StudySpec
    stores: dict[str, StorePlan]
    cells: list[Cell]
    statuses: list[CellStatus]

    def pending(self) -> list[Cell]:
        return [s.cell for s in self.statuses if s.status != "done"]

    def counts(self) -> dict[str, int]:
        return {k: sum(s.status == k for s in self.statuses) for k in STATUSES}


def cell_status(spec: StudySpec, cell: Cell) -> CellStatus:
    directory = cell.directory(spec)
    try:
        summary = cellfile.read_cell_summary(directory)
    except DamagedFileError as exc:
        return CellStatus(cell, "failed", f"{exc}; `advaudio study run` sets it aside and recomputes the summary",
                          str(cellfile.log_path(directory)))
    except AdvaudioError as exc:
        return CellStatus(cell, "failed", str(exc), str(cellfile.log_path(directory)))
    if summary is not None and summary.fingerprint == cell.fingerprint:
        return CellStatus(cell, "done", summary=summary)
    state = cellfile.read_cell_state(directory)
    if state is None:
        return CellStatus(cell, "pending")
    if state.status == "running":
        alive = state.alive
        if alive is False:
            return CellStatus(cell, "interrupted", f"process {state.pid} on {state.host} ended without finishing",
                              state.log)
        return CellStatus(cell, "running", f"process {state.pid} on {state.host}", state.log)
    return CellStatus(cell, "failed", state.reason, state.log)


def plan_study(spec: StudySpec) -> StudyPlan:
    """Stores, cells and each cell's status; reads metadata only."""
    stores = plan_stores(spec)
    cells = expand_cells(spec, stores)
    return StudyPlan(spec, stores, cells, [cell_status(spec, c) for c in cells])


def write_study_record(spec: StudySpec) -> Path:
    """``study.json``: the study as resolved, beside its cells."""
    path = spec.directory / layout.STUDY_NAME
    st.write_json_atomic(path, spec.to_dict())
    return path


def featurize_study(spec: StudySpec, *, progress: bool = True, scheduler: str | None = None) -> dict[str, Path]:
    """Featurize every dataset of the study once (a complete store is reused); name → store."""
    from advaudio.featurize import featurize

    stores = {}
    for data in spec.data:
        try:
            result = featurize(data.featurize, cache=layout.study_stores_dir(spec.directory),
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
    executor = executor or spec.run.executor
    if executor not in EXECUTORS:
        raise ParameterError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    spec.directory.mkdir(parents=True, exist_ok=True)
    write_study_record(spec)
    if executor == "slurm":
        from advaudio.study.slurm import submit_study

        submit_study(spec, cells=cells)
        return plan_study(spec)
    t0 = time.perf_counter()
    featurize_study(spec, progress=progress, scheduler=spec.run.scheduler if executor == "dask" else None)
    plan = plan_study(spec)
    todo = [find_cell(plan.cells, c) for c in cells] if cells else plan.pending()
    todo = [c for c in todo if cell_status(spec, c).status != "done"]
    done = len(plan.cells) - len(plan.pending())
    if progress:
        _say(f"study {spec.name}: {len(plan.cells)} cells, {done} done, {len(todo)} to run ({executor})")
    if executor == "local":
        _run_local(spec, todo, progress=progress, echo=echo, keep_going=keep_going)
    else:
        _run_dask(spec, todo, progress=progress, keep_going=keep_going)
    final = plan_study(spec)
    if progress:
        c = final.counts()
        _say(f"study {spec.name}: {c['done']} of {len(final.cells)} cells done, {c['failed']} failed "
             f"({time.perf_counter() - t0:.0f} s)")
    return final


def _run_local(spec: StudySpec, todo: list[Cell], *, progress: bool, echo: bool, keep_going: bool) -> None:
    from advaudio.threads import configure_threads

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


def _cell_task(study_file: str, cell_id: str, threads: int | None, gpu_slot: bool) -> dict[str, Any]:
    """One cell on a Dask worker (imported there by name; arguments are plain values)."""
    from advaudio.threads import configure_threads

    spec = read_study(study_file)
    configure_threads(threads)
    device = None
    if gpu_slot:
        import torch

        if spec.run.device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
            from distributed import get_worker

            try:
                index = int(get_worker().name)
            except (ValueError, TypeError):
                index = abs(hash(get_worker().name))
            device = f"cuda:{index % torch.cuda.device_count()}"
    cell = find_cell(expand_cells(spec), cell_id)
    t = time.perf_counter()
    try:
        run_cell(spec, cell, device=device, echo=False, progress=True)
    except AdvaudioError as exc:
        return {"cell": cell_id, "ok": False, "reason": str(exc), "seconds": time.perf_counter() - t}
    except Exception as exc:  # a bug: the traceback goes to the cell's log, the reason to the caller
        with open(cellfile.log_path(cell.directory(spec)), "a") as log:
            traceback.print_exc(file=log)
        return {"cell": cell_id, "ok": False, "reason": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t}
    return {"cell": cell_id, "ok": True, "seconds": time.perf_counter() - t}


def _run_dask(spec: StudySpec, todo: list[Cell], *, progress: bool, keep_going: bool) -> None:
    import contextlib

    import dask
    from distributed import as_completed

    from advaudio.featurize import dask_client

    if not todo:
        return
    cluster = None
    if spec.run.cluster and spec.run.scheduler is None:
        from advaudio.cluster import ClusterConfig, make_cluster

        cluster = make_cluster(ClusterConfig(**spec.run.cluster))
    # Local workers share this machine's CPUs; a cell's threads default to its share of them.
    threads = spec.run.threads
    if threads is None and spec.run.scheduler is None and cluster is None:
        from advaudio.threads import choose_threads

        threads = max(1, choose_threads(environ={}).threads // spec.run.workers)
    with contextlib.ExitStack() as stack:
        if cluster is not None:
            stack.callback(cluster.close)
        stack.enter_context(dask.config.set({"distributed.scheduler.work-stealing": False}))
        client = stack.enter_context(dask_client(workers=spec.run.workers, scheduler=spec.run.scheduler,
                                                 cluster=cluster))
        futures = [client.submit(_cell_task, str(spec.path), c.cell_id, threads, True, key=f"cell-{c.cell_id}",
                                 pure=False, retries=0) for c in todo]
        for i, future in enumerate(as_completed(futures), 1):
            result = future.result()
            if progress:
                state = "done" if result["ok"] else f"failed: {result['reason']}"
                _say(f"[{i}/{len(todo)}] {result['cell']} {state} ({result['seconds']:.1f} s)")
            if not result["ok"] and not keep_going:
                for f in futures:
                    f.cancel()
                raise AdvaudioError(f"cell {result['cell']} failed: {result['reason']}")
