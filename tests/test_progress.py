"""Progress output: a redrawn bar on a terminal, plain lines in batch logs."""

import io
import time

from advaudio.progress import progress_bar


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
