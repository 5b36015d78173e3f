"""The attacks by name: :data:`ATTACKS` (name → spec), the one registry, and :func:`list_attacks`.

Each spec carries its parameter dataclass (``spec.params_type``), so adding an attack
is one spec class and one entry in :data:`BUILTIN`; :data:`advaudio.attacks.params.PARAMS`
is a view of this registry, not a second list.  Installed plugins (entry-point group
``advaudio.attacks``, :mod:`advaudio.plugins`) follow the built-ins: an
:class:`~advaudio.attacks.base.AttackSpec` subclass or instance whose ``params_type``
subclasses :class:`~advaudio.attacks.params.AttackParams` and is named like its entry point.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from advaudio.attacks.base import AttackSpec
from advaudio.attacks.decision import Boundary, HopSkipJump
from advaudio.attacks.gradient import BIM, FGSM, PGD
from advaudio.attacks.minimisation import EAD, CarliniWagnerL2, DeepFool, FastMinimumNorm
from advaudio.attacks.params import BUILTIN_PARAMS, FIXED_BUDGET, KINDS, AttackConfig, AttackParams
from advaudio.errors import ParameterError, PluginError
from advaudio.plugins import PluginInfo, Registry

#: The built-in attacks, in the order listings show them.
BUILTIN: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (FGSM(), BIM(), PGD(), DeepFool(), CarliniWagnerL2(), EAD(), FastMinimumNorm(), Boundary(),
                 HopSkipJump())
}


def _plugin_spec(obj: Any, info: PluginInfo) -> AttackSpec:
    """The spec an ``advaudio.attacks`` entry point names, checked (one line naming the distribution)."""
    where = f"attack {info.name!r} from {info.describe()}"
    spec = obj() if isinstance(obj, type) and issubclass(obj, AttackSpec) else obj
    if not isinstance(spec, AttackSpec):
        raise PluginError(f"{where} is {type(obj).__name__}, not an AttackSpec subclass")
    params = spec.params_type
    if not (isinstance(params, type) and issubclass(params, AttackParams) and dataclasses.is_dataclass(params)
            and params is not AttackParams):
        raise PluginError(f"{where}: params_type must be a dataclass subclassing AttackParams")
    if params.attack != info.name:
        raise PluginError(f"{where}: its params_type says attack {params.attack!r}; the names must agree")
    if params.kind not in KINDS or not params.norms:
        raise PluginError(f"{where}: params_type needs kind (one of {', '.join(KINDS)}) and norms")
    if params.kind == FIXED_BUDGET and "epsilon" not in params.names():
        raise PluginError(f"{where}: a fixed-budget attack's params_type needs an epsilon field")
    try:
        params()
    except Exception as exc:  # defaults that do not pass the dataclass's own checks
        raise PluginError(f"{where}: its default parameters do not build ({exc})") from None
    return spec


assert {name: spec.params_type for name, spec in BUILTIN.items()} == BUILTIN_PARAMS, "one list of built-ins"

#: Attack name → spec: the built-ins, then the installed plugins (loaded on first lookup).
ATTACKS: Registry[AttackSpec] = Registry("advaudio.attacks", BUILTIN, what="attack", adapt=_plugin_spec)


def list_attacks() -> list[dict[str, Any]]:
    """Name, kind, budget norm(s), targetability, description and defaults of each attack
    (a plugin that fails to load is left out with a warning)."""
    out = []
    for name, spec in ATTACKS.usable().items():
        info = spec.info()
        plugin = ATTACKS.plugin(name)
        if plugin is not None:
            info["plugin"] = plugin.record()
        out.append(info)
    return out


def spec_of(config: AttackConfig) -> AttackSpec:
    """The spec that runs ``config``."""
    if not isinstance(config, AttackConfig):
        raise ParameterError("config must be an AttackConfig")
    return ATTACKS[config.name]


def attack_plugin(name: str) -> PluginInfo | None:
    """Where attack ``name`` comes from when a plugin provides it; None for a built-in."""
    return ATTACKS.plugin(name)
