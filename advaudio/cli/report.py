"""``advaudio report`` and ``advaudio listen``: :func:`advaudio.report`, :func:`advaudio.listen`
(options: :mod:`advaudio.stages.report_config`, :mod:`advaudio.stages.listen_config`)."""

from __future__ import annotations

from advaudio.cli._common import command
from advaudio.stages.listen_config import LISTEN
from advaudio.stages.report_config import REPORT

report = command(REPORT, "advaudio.stages.report:report")
listen = command(LISTEN, "advaudio.stages.listen:listen")
