"""The ``dask`` executor: a study's cells as tasks on a Dask cluster.

``[run] scheduler`` (a running scheduler), ``[run.cluster]`` (dask-jobqueue batch jobs,
:mod:`advaudio.cluster`), or ``[run] workers`` local worker processes; one cell per worker
at a time; with several GPUs each worker takes one (``cuda:<worker index mod GPUs>``).
A task is :func:`cell_task`, imported on the worker by name with plain arguments, so a
worker needs nothing but advaudio (and the plugins it finds there).
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from typing import Any

from advaudio.cluster import ClusterConfig, make_cluster
from advaudio.errors import AdvaudioError
from advaudio.stages.featurize import dask_client
from advaudio.study import cellfile
from advaudio.study.cells import Cell, expand_cells, find_cell, run_cell
from advaudio.study.planning import StudyPlan
from advaudio.study.spec import read_study
from advaudio.threads import choose_threads, configure_threads


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cell_task(study_file: str, cell_id: str, threads: int | None, gpu_slot: bool) -> dict[str, Any]:
    """One cell on a Dask worker (imported there by name; arguments are plain values)."""
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


def run(plan: StudyPlan, todo: list[Cell], *, progress: bool, echo: bool, keep_going: bool) -> None:
    """Run ``todo`` as tasks on a Dask cluster, one cell per worker at a time (``echo`` does not
    apply: each cell's progress goes to its log)."""
    import dask
    from distributed import as_completed

    spec = plan.spec
    if not todo:
        return
    cluster = None
    if spec.run.cluster and spec.run.scheduler is None:
        cluster = make_cluster(ClusterConfig(**spec.run.cluster))
    # Local workers share this machine's CPUs; a cell's threads default to its share of them.
    threads = spec.run.threads
    if threads is None and spec.run.scheduler is None and cluster is None:
        threads = max(1, choose_threads(environ={}).threads // spec.run.workers)
    with contextlib.ExitStack() as stack:
        if cluster is not None:
            stack.callback(cluster.close)
        stack.enter_context(dask.config.set({"distributed.scheduler.work-stealing": False}))
        client = stack.enter_context(dask_client(workers=spec.run.workers, scheduler=spec.run.scheduler,
                                                 cluster=cluster))
        futures = [client.submit(cell_task, str(spec.path), c.cell_id, threads, True, key=f"cell-{c.cell_id}",
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
