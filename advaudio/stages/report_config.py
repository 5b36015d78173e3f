"""The options of ``advaudio report`` (:data:`REPORT`), light; the function is :mod:`advaudio.stages.report`,
the report itself :mod:`advaudio.reporting`."""

from __future__ import annotations

from advaudio.options import Command, Option
from advaudio.stages.listen_config import existing

__all__ = ["REPORT"]

REPORT = Command(
    "report",
    """Report of RUN_DIR…: clean accuracy per round, attack budgets before/after, figures, audio.

    Finds every metrics.json and attack-round*-*.json below each RUN_DIR and
    writes report.md, report.html, report.json and report.csv (every number,
    with the file it came from) into --out. A file that fails its checksum or
    schema check (damaged, edited, a value out of range) is skipped with a
    warning naming it; a damaged feature store named by the results is refused
    (exit status 2). The path of report.md is the last line of standard output.
    """,
    (
        Option("run_dirs", kind="argument", nargs=-1, required=True, path=True, metavar="RUN_DIR...",
               parse=existing("directory"), help="Run directories (each with its rounds below it)."),
        Option("out", required=True, path=True,
               help="Directory of report.md/.html/.json/.csv, figures/ and audio/ (created)."),
        Option("max_clips", default=3, cli_type=int,
               help="Clips in each adversarial-example figure and listening table (0: none)."),
        Option("listen", kind="flag", default=True, help="Write WAV files (stft views only anyway)."),
        Option("title", default="Adversarial training report", help="Report heading."),
    ),
)
