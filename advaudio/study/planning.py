"""The plan of a study: its stores, its cells and what each cell's state is — read, never run.

:func:`plan_study` is built once and handed to every executor
(:mod:`advaudio.study.executors`): ``study plan``, ``status`` and ``report`` read it,
``study run`` runs its pending cells. It reads metadata only (store manifests, cell
files), so it is cheap and safe while cells run elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from advaudio.errors import AdvaudioError, DamagedFileError
from advaudio.study import cellfile
from advaudio.study.cells import Cell, StorePlan, expand_cells, plan_stores
from advaudio.study.spec import StudySpec

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


def is_current(summary: cellfile.CellSummary, cell: Cell) -> bool:
    """Whether ``summary`` is ``cell``'s: the same fingerprint and the AutoAttack evaluations it asks for
    (those are not in the fingerprint: changing them adds an evaluation, it retrains nothing)."""
    return summary.fingerprint == cell.fingerprint and autoattack_done(summary, cell)


def autoattack_done(summary: cellfile.CellSummary, cell: Cell) -> bool:
    return [list(a) for a in summary.config.get("autoattack") or []] == [list(a) for a in cell.autoattack]


def cell_status(spec: StudySpec, cell: Cell) -> CellStatus:
    directory = cell.directory(spec)
    try:
        summary = cellfile.read_cell_summary(directory)
    except DamagedFileError as exc:
        return CellStatus(cell, "failed", f"{exc}; `advaudio study run` sets it aside and recomputes the summary",
                          str(cellfile.log_path(directory)))
    except AdvaudioError as exc:
        return CellStatus(cell, "failed", str(exc), str(cellfile.log_path(directory)))
    if summary is not None and is_current(summary, cell):
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
