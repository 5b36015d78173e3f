"""``advaudio demo``: :func:`advaudio.stages.demo.demo` (options: :mod:`advaudio.stages.demo_config`)."""

from __future__ import annotations

from advaudio.cli._common import command
from advaudio.stages.demo_config import DEMO

demo = command(DEMO, "advaudio.stages.demo:demo")
