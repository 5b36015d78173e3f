"""``advaudio report`` as a function (:func:`report`), over :func:`advaudio.reporting.write_report`;
its options are :mod:`advaudio.stages.report_config`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advaudio.options import CommandResult, Values
from advaudio.stages.report_config import REPORT

__all__ = ["ReportRun", "report"]


@dataclass
class ReportRun(CommandResult):
    """What :func:`report` wrote: :attr:`path` is ``report.md``; :attr:`numbers` is ``report.json``
    (every number, with the file it came from; ``warnings``: the files skipped)."""

    numbers: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"numbers: {self.path.with_suffix('.json')}, {self.path.with_suffix('.csv')}",
                f"html:    {self.path.with_suffix('.html')}"]

    def warnings(self) -> list[str]:
        # also in the report: a skipped file is never silent
        return [f"warning: {w}" for w in self.numbers.get("warnings") or []]


@REPORT.function(ReportRun)
def report(v: Values) -> ReportRun:
    from advaudio.reporting import write_report

    md = write_report(list(v.run_dirs), v.out, listen=v.listen, max_clips=v.max_clips, title=v.title)
    return ReportRun(Path(md), numbers=json.loads(Path(md).with_suffix(".json").read_text()))
