"""The paper's study as one command: a grid of datasets × models × views × seeds × CV folds.

``advaudio study init | plan | run | status | report`` are the functions :func:`init`,
:func:`plan`, :func:`run`, :func:`status`, :func:`report` of this package
(:mod:`~advaudio.study.api`; their options :mod:`~advaudio.study.study_config`).

A study file (TOML) is read and checked (:mod:`~advaudio.study.spec`), expanded into
cells (:mod:`~advaudio.study.cells`), planned (:mod:`~advaudio.study.planning`), run where
the file says (:mod:`~advaudio.study.runner`, :mod:`~advaudio.study.executors`) and reported
(:mod:`~advaudio.study.reporting`, the tables themselves in :mod:`advaudio.study.tables`).

=====================================  ==============================================
module                                 holds
=====================================  ==============================================
:mod:`advaudio.study.spec`             :func:`read_study`: the TOML file → :class:`StudySpec`
                                       (the stages' own config classes), every key checked
:mod:`advaudio.study.cells`            :class:`Cell`, :func:`expand_cells` (fingerprints),
                                       :func:`run_cell` (train → rounds → ``cell.json``)
:mod:`advaudio.study.cellfile`         ``cell.json`` / ``state.json``: a cell's summary and state
:mod:`advaudio.study.planning`         :func:`plan_study`: stores, cells and their states (read only)
:mod:`advaudio.study.runner`           :func:`run_study`: featurize, then the pending cells on an executor
:mod:`advaudio.study.executors`        ``local``, ``dask`` and ``slurm``: one signature, the plan in
:mod:`advaudio.study.costs`            each cell's work and its estimated / measured time
:mod:`advaudio.study.examples`         ``advaudio study init``'s commented example files
:mod:`advaudio.study.reporting`        ``advaudio study report``: done cells → the report
:mod:`advaudio.study.study_config`     the options of ``advaudio study …`` (light: ``--help``)
:mod:`advaudio.study.api`              the commands as functions: ``advaudio.study.run(FILE)``
=====================================  ==============================================

Directory names: :mod:`advaudio.layout` (``study_*``).
"""

from advaudio.lazy import exports, names

# ``advaudio.study.run("study.toml")`` and the other commands, imported on first use (advaudio.lazy).
_EXPORTS = {
    ".api": ["init", "plan", "run", "status", "report"],
    ".spec": ["StudySpec", "read_study"],
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)
__all__ = names(_EXPORTS)
