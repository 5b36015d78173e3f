"""Progress that also reads well in batch logs.

On a terminal, a normal tqdm bar redrawn in place. Anywhere else (a SLURM
log, a pipe, CI), tqdm's carriage-return redraws pile up into one line of
megabytes; there the bar becomes a plain status line every ``log_interval``
seconds and one at the end.

Work whose total is unknown in advance (an attack's early exits) logs status
lines instead: the library writes them to a :mod:`logging` logger at INFO,
at most one per :class:`Throttle` interval, and a stage shows them while
:func:`progress_log` is open.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

__all__ = ["Throttle", "progress_bar", "progress_log"]

#: Seconds between two status lines of one long computation.
LOG_INTERVAL_S = 30.0


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


class Throttle:
    """Says when a status line is due: at most once per ``interval`` seconds, the first
    ``interval`` seconds after it was made (short work says nothing)."""

    def __init__(self, interval: float | None = None, *, clock: Callable[[], float] = time.perf_counter):
        self.interval = LOG_INTERVAL_S if interval is None else interval  # None: the module's, read now
        self.clock = clock
        self.start = self.last = clock()

    def due(self) -> bool:
        """True when ``interval`` seconds have passed since the last line (or the start); the
        next one is due ``interval`` seconds from now."""
        now = self.clock()
        if now - self.last < self.interval:
            return False
        self.last = now
        return True

    def elapsed(self) -> str:
        """Time since the start, as "42 s", "3 min 12 s" or "2 h 05 min"."""
        s = int(self.clock() - self.start)
        if s < 60:
            return f"{s} s"
        if s < 3600:
            return f"{s // 60} min {s % 60} s"
        return f"{s // 3600} h {s % 3600 // 60:02d} min"


@contextlib.contextmanager
def progress_log(name: str, *, enabled: bool = True, stream: TextIO | None = None) -> Iterator[None]:
    """While open, the INFO lines of logger ``name`` (and its children) go to ``stream``
    (standard error by default) as plain lines; ``enabled=False`` changes nothing."""
    if not enabled:
        yield
        return
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
