"""``advaudio retrain`` and ``advaudio rounds``: :func:`advaudio.retrain`, :func:`advaudio.rounds`
(options: :mod:`advaudio.stages.retrain_config`, :mod:`advaudio.stages.rounds_config`)."""

from __future__ import annotations

from advaudio.cli._common import command
from advaudio.stages.retrain_config import RETRAIN
from advaudio.stages.rounds_config import ROUNDS

retrain = command(RETRAIN, "advaudio.stages.retrain:retrain")
rounds = command(ROUNDS, "advaudio.stages.rounds:rounds")
