"""The paper's study as one command: a grid of datasets × models × views × seeds × CV folds.

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
:mod:`advaudio.study.planning`             :func:`plan_study`: stores, cells and their states (read only)
:mod:`advaudio.study.runner`           :func:`run_study`: featurize, then the pending cells on an executor
:mod:`advaudio.study.executors`        ``local``, ``dask`` and ``slurm``: one signature, the plan in
:mod:`advaudio.study.costs`            each cell's work and its estimated / measured time
:mod:`advaudio.study.examples`         ``advaudio study init``'s commented example files
:mod:`advaudio.study.reporting`           ``advaudio study report``: done cells → the report
=====================================  ==============================================

Directory names: :mod:`advaudio.layout` (``study_*``).
"""

from advaudio.study.spec import StudySpec, read_study

__all__ = ["StudySpec", "read_study"]
