"""Kill points: the public test seam of every resumable stage.

A stage calls :func:`kill_point` at each boundary where a kill leaves a distinct state
on disk. Training: ``"epoch"`` (an epoch's checkpoint and metrics written),
``"evaluated"`` (batch norm recalibrated and the test fold run, nothing final written),
``"final-checkpoint"`` (the final checkpoint written, its metrics not yet). The round
loop: ``"attack-test"``/``"attack-train"`` (a round's attack results written) and
``"retrain"`` (a round's model trained). A resumability test sets :data:`HOOK` (or uses
:func:`hooked`) to raise or ``os.kill`` itself there, reruns the stage and compares
with an uninterrupted run. None in normal use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

#: ``hook(point, index)``, called at every kill point; None in normal use.
HOOK: Callable[[str, int], None] | None = None


def kill_point(point: str, index: int) -> None:
    """Pass kill point ``point`` (an epoch or round ``index``): calls :data:`HOOK` when one is set."""
    if HOOK is not None:
        HOOK(point, index)


@contextlib.contextmanager
def hooked(hook: Callable[[str, int], None]) -> Iterator[None]:
    """Set :data:`HOOK` to ``hook`` for the ``with`` block."""
    global HOOK
    before, HOOK = HOOK, hook
    try:
        yield
    finally:
        HOOK = before
