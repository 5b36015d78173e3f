"""The attacks by name: :data:`ATTACKS` (name → spec) and :func:`list_attacks`."""

from __future__ import annotations

from typing import Any

from advaudio.attacks.base import AttackSpec
from advaudio.attacks.decision import Boundary, HopSkipJump
from advaudio.attacks.gradient import BIM, FGSM, PGD
from advaudio.attacks.minimisation import EAD, CarliniWagnerL2, DeepFool, FastMinimumNorm
from advaudio.attacks.params import PARAMS, AttackConfig
from advaudio.errors import ParameterError

ATTACKS: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (FGSM(), BIM(), PGD(), DeepFool(), CarliniWagnerL2(), EAD(), FastMinimumNorm(), Boundary(),
                 HopSkipJump())
}
assert list(ATTACKS) == list(PARAMS), "every parameter dataclass has its spec, in the same order"


def list_attacks() -> list[dict[str, Any]]:
    """Name, kind, budget norm(s), targetability, description and defaults of each attack."""
    return [spec.info() for spec in ATTACKS.values()]


def spec_of(config: AttackConfig) -> AttackSpec:
    """The spec that runs ``config``."""
    if not isinstance(config, AttackConfig):
        raise ParameterError("config must be an AttackConfig")
    return ATTACKS[config.name]
