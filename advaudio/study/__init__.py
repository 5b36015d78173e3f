"""The paper's study as one command: a grid of datasets × models × views × seeds × folds.

=====================================  ==============================================
module                                 holds
=====================================  ==============================================
:mod:`advaudio.study.cellfile`         ``cell.json`` / ``state.json``: a cell's summary and state
=====================================  ==============================================
"""
