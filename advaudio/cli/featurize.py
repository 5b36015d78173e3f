"""``advaudio featurize``: :func:`advaudio.featurize` (options: :mod:`advaudio.stages.featurize_config`)."""

from __future__ import annotations

from advaudio.cli._common import command
from advaudio.stages.featurize_config import FEATURIZE

featurize = command(FEATURIZE, "advaudio.stages.featurize:featurize")
