"""Progress output: a redrawn bar on a terminal, plain lines in batch logs."""

import io
import logging
import time

from advaudio.progress import Throttle, progress_bar, progress_log


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_batch_log_gets_lines_not_carriage_returns():
    log = io.StringIO()
    with progress_bar(total=50, desc="featurize", unit="clip", stream=log, log_interval=0.05) as bar:
        for _ in range(5):
            time.sleep(0.06)
            bar.update(10)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert 3 <= len(lines) <= 8, lines  # the start, a few timed updates, the end; not one per update
    assert lines[0].startswith("featurize:") and "0/50" in lines[0]
    assert "50/50" in lines[-1] and "100%" in lines[-1]


def test_batch_log_throttles_fast_updates():
    log = io.StringIO()
    with progress_bar(total=10_000, desc="epoch 1/1", unit="batch", stream=log, log_interval=60) as bar:
        for step in range(10_000):  # the trainer's pattern: postfix without a redraw, then update
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}", refresh=False)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert len(lines) <= 3
    assert "loss=0.000" in lines[-1]  # the last postfix reaches the final line


def test_terminal_is_redrawn_in_place_and_disabled_prints_nothing():
    tty = Terminal()
    with progress_bar(total=3, desc="x", unit="clip", stream=tty) as bar:
        bar.update(3)
    assert "\r" in tty.getvalue()
    quiet = io.StringIO()
    with progress_bar(total=3, desc="x", unit="clip", stream=quiet, enabled=False) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_throttle_allows_one_line_per_interval_and_none_for_short_work():
    clock = Clock()
    throttle = Throttle(30.0, clock=clock)
    clock.now += 29.9
    assert not throttle.due()  # short work says nothing
    clock.now += 0.1
    assert throttle.due()
    clock.now += 10.0
    assert not throttle.due()  # the next one is 30 s after the last line, not after the start
    clock.now += 20.0
    assert throttle.due() and not throttle.due()
    assert throttle.elapsed() == "1 min 0 s"
    clock.now += 3 * 3600 + 5 * 60 - 60
    assert throttle.elapsed() == "3 h 05 min"
    assert Throttle(clock=Clock()).elapsed() == "0 s"


def test_progress_log_shows_a_loggers_info_lines_only_while_open():
    logger = logging.getLogger("advaudio.attacks.test_progress")
    before = (logging.getLogger("advaudio.attacks").level, list(logging.getLogger("advaudio.attacks").handlers))
    log = io.StringIO()
    with progress_log("advaudio.attacks", stream=log):
        logger.info("cw: constant %d of %d done", 1, 3)
        logger.debug("not shown")
    logger.info("after: not shown")
    assert log.getvalue() == "cw: constant 1 of 3 done\n"
    parent = logging.getLogger("advaudio.attacks")
    assert (parent.level, list(parent.handlers)) == before  # put back as it was
    quiet = io.StringIO()
    with progress_log("advaudio.attacks", stream=quiet, enabled=False):
        logger.info("disabled: not shown")
    assert quiet.getvalue() == ""
