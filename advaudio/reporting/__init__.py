"""The run report: run directories → Markdown, HTML, figures, JSON/CSV and WAV files.

The question answered: *how much clean accuracy does adversarial training cost,
and how much larger a budget does the attacker then need?*

======================================  ================================================
module                                  holds
======================================  ================================================
:mod:`advaudio.reporting.discovery`        :func:`collect_runs`: the ``metrics.json`` and
                                        attack results below run directories, grouped
                                        by round (:class:`RunData`, :class:`ReportData`)
:mod:`advaudio.reporting.analysis`         :func:`analyse`: accuracy per round, budgets,
                                        before/after comparisons, :func:`fooling_rate_at`,
                                        the tidy value rows (:data:`VALUE_COLUMNS`)
:mod:`advaudio.reporting.examples`         the paper's Fig. 1 per round and the listening
                                        WAVs, read from the adversarial shards
:mod:`advaudio.reporting.figures`          pure functions from numbers/arrays to PNG files
:mod:`advaudio.reporting.render`           formatting helpers; blocks → Markdown and HTML
:mod:`advaudio.reporting.document`         the report's sections as blocks
:mod:`advaudio.reporting.writer`           :func:`write_report`, the entry point
:mod:`advaudio.reporting.bootstrap`        percentile-bootstrap intervals of the budget at the
                                        threshold (stratified by cell) and of the
                                        after/before ratio (paired); :func:`mean_std`
:mod:`advaudio.reporting.listening`        adversarial STFT inputs back to audio (WAVs)
======================================  ================================================

:func:`write_report` writes ``report.md``, ``report.html`` (self-contained apart
from the PNGs it links relatively), ``figures/*.png``, ``report.json`` and
``report.csv`` (every number shown, in a tidy layout: one row per run, round,
model, view, split, attack, metric — with the file and the JSON pointer it was
read from, or ``derived``), and ``audio/*.wav`` for runs on the ``stft`` view.
Its command line is ``advaudio report``. The study report (``advaudio study report``)
is :mod:`advaudio.study.report_writer`, built on these pieces.
"""

from advaudio.lazy import exports, names

# Imported on first use (advaudio.lazy): matplotlib only when a report is written.
_EXPORTS = {
    ".analysis": ["FIXED_BUDGET", "MINIMISATION", "VALUE_COLUMNS", "analyse", "fooling_rate_at", "resolve_pointer"],
    ".bootstrap": ["BudgetInterval", "RatioInterval", "budget_interval", "mean_std", "ratio_interval"],
    ".discovery": ["AttackEntry", "MetricsEntry", "ReportData", "RunData", "collect_runs"],
    ".render": ["Link", "fmt_num", "fmt_pct", "fmt_pp", "fmt_ratio", "render_html", "render_markdown"],
    ".writer": ["REPORT_FORMAT", "REPORT_VERSION", "write_report"],
}
__getattr__, __dir__ = exports(__name__, _EXPORTS)
__all__ = names(_EXPORTS)
