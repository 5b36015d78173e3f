"""Progress bars that also read well in batch logs.

On a terminal, a normal tqdm bar redrawn in place. Anywhere else (a SLURM
log, a pipe, CI), tqdm's carriage-return redraws pile up into one line of
megabytes; there the bar becomes a plain status line every ``log_interval``
seconds and one at the end.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

__all__ = ["progress_bar"]


class _LineLog:
    """A text stream for tqdm that turns each in-place redraw into a line."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").strip()
        if line:  # tqdm clears a bar by writing spaces: nothing to log
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(*, total: int | None, desc: str, unit: str, enabled: bool = True, leave: bool = True,
                 log_interval: float = 30.0, stream: TextIO | None = None) -> Any:
    """A tqdm bar on ``stream`` (standard error by default).

    Parameters
    ----------
    total : number of units, or None if unknown
    desc : label in front of the bar
    unit : what is counted ("clip", "batch")
    enabled : False gives a bar that prints nothing
    leave : keep the finished bar on a terminal
    log_interval : seconds between status lines when ``stream`` is not a terminal
    """
    from tqdm.auto import tqdm

    stream = sys.stderr if stream is None else stream
    interactive = bool(getattr(stream, "isatty", lambda: False)())
    if interactive:
        return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, file=stream,
                    dynamic_ncols=True)
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, file=_LineLog(stream),
                mininterval=log_interval, maxinterval=max(log_interval, 10.0), ascii=True, ncols=100)
