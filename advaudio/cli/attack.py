"""``advaudio attack``: :func:`advaudio.attack` (options: :mod:`advaudio.stages.attack_config`)."""

from __future__ import annotations

from advaudio.cli._common import command
from advaudio.stages.attack_config import ATTACK

attack = command(ATTACK, "advaudio.stages.attack:attack")
