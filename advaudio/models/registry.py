"""Name → factory registry, in the manner of timm's ``create_model``.

A factory is a function named after its architecture, taking ``in_channels``,
``num_classes`` and ``width`` through ``**kwargs`` plus its own options as
keyword-only parameters with defaults; those parameters are the options
:func:`create_model` accepts for it.

Plugins (entry-point group ``advaudio.models``, see :mod:`advaudio.plugins`) are
factories called the same way, ``f(*, in_channels, num_classes, width, **options)``;
one that returns a plain ``torch.nn.Module`` gets it wrapped in a
:class:`ModuleClassifier`, so the trainer and the attacks never ask where a model
came from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..errors import ParameterError, PluginError
from ..plugins import PluginInfo, Registry
from .base import Classifier

ModelFactory = Callable[..., Classifier]

_FACTORIES: dict[str, ModelFactory] = {}
#: The arguments every factory takes; the rest of its keyword-only parameters are its options.
STANDARD_ARGUMENTS = ("in_channels", "num_classes", "width")


def _plugin_factory(obj, info: PluginInfo) -> ModelFactory:
    if not callable(obj):
        raise PluginError(f"model {info.name!r} from {info.describe()} is {type(obj).__name__}, not a factory "
                          "f(*, in_channels, num_classes, width, **options)")
    return obj


#: Built-in factories, then those of installed plugins (looked up on a miss, listed from metadata).
MODELS: Registry[ModelFactory] = Registry("advaudio.models", _FACTORIES, what="model", adapt=_plugin_factory)


def register_model(factory: ModelFactory) -> ModelFactory:
    """Register ``factory`` under its function name (decorator)."""
    name = factory.__name__
    if name in _FACTORIES:
        raise ValueError(f"a model named {name!r} is already registered")
    _FACTORIES[name] = factory
    return factory


def list_models() -> list[str]:
    """Names of the registered architectures and of the installed model plugins, sorted."""
    return sorted(MODELS)


def _factory(name: str) -> tuple[str, ModelFactory]:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in MODELS:
        raise ParameterError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        )
    return key, MODELS[key]


def model_plugin(name: str) -> PluginInfo | None:
    """Where model ``name`` comes from when a plugin provides it; None for a built-in."""
    return MODELS.plugin(name.strip().lower() if isinstance(name, str) else name)


def model_options(name: str) -> dict[str, Any]:
    """Options that model ``name`` accepts beyond channels, classes and width, with defaults."""
    _, factory = _factory(name)
    return {
        parameter.name: parameter.default
        for parameter in inspect.signature(factory).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.name not in STANDARD_ARGUMENTS
    }


def create_model(
    name: str,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    width: float = 1.0,
    **options: Any,
) -> Classifier:
    """Build a freshly initialised model by name.

    Args:
        name: one of :func:`list_models` (case-insensitive).
        in_channels: input channels (spectrogram views stacked as channels).
        num_classes: number of logits.
        width: multiplier on every hidden channel count; 1.0 gives the published model.
        **options: architecture options, see :func:`model_options`.

    The model's ``config`` attribute records every argument, options' defaults
    included, as a JSON-friendly dict that :func:`model_from_config` rebuilds it from.

    Raises:
        ParameterError: unknown name or option, or an argument out of range.
    """
    key, factory = _factory(name)
    accepted = model_options(key)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        known = ", ".join(accepted) or "none"
        raise ParameterError(
            f"model {key!r} has no option(s) {', '.join(unknown)}; its options: {known}"
        )
    resolved = {**accepted, **options}
    missing = sorted(k for k, v in resolved.items() if v is inspect.Parameter.empty)
    if missing:
        raise ParameterError(f"model {key!r} needs option(s) {', '.join(missing)}")
    model = factory(in_channels=in_channels, num_classes=num_classes, width=width, **resolved)
    if not isinstance(model, Classifier):
        model = _wrap(key, model, in_channels=in_channels, num_classes=num_classes, width=width)
    model.config = {
        "name": key,
        "in_channels": model.in_channels,
        "num_classes": model.num_classes,
        "width": model.width,
        **resolved,
    }
    return model


def model_from_config(config: Mapping[str, Any]) -> Classifier:
    """Rebuild a model, freshly initialised, from the ``config`` :func:`create_model` recorded."""
    if not isinstance(config, Mapping) or "name" not in config:
        raise ParameterError(f"a model config must be a mapping with a 'name', got {config!r}")
    arguments = dict(config)
    name = arguments.pop("name")
    return create_model(name, **arguments)


def _wrap(name: str, module: Any, *, in_channels: int, num_classes: int, width: float) -> Classifier:
    info = MODELS.plugin(name)
    if not isinstance(module, nn.Module):
        source = f" from {info.describe()}" if info else ""
        raise PluginError(f"model {name!r}{source} returned {type(module).__name__}, not a torch.nn.Module")
    return ModuleClassifier(module, in_channels=in_channels, num_classes=num_classes, width=width)


class ModuleClassifier(Classifier):
    """A plain ``torch.nn.Module`` from a plugin factory, as a :class:`Classifier`.

    The module maps ``(N, C, H, W)`` inputs to logits; its ``min_input_size``
    attribute, when it has one, is the smallest height and width it takes (1
    otherwise).  Inputs are checked as for the built-ins, so a wrong shape fails with
    one line instead of deep inside the plugin's layers.  The weights live under
    ``module.`` in the state dict.
    """

    def __init__(self, module: nn.Module, *, in_channels: int, num_classes: int, width: float) -> None:
        super().__init__(in_channels, num_classes, width)
        self.module = module
        self.min_input_size = int(getattr(module, "min_input_size", 1))

    def forward(self, x):
        self.check_input(x)
        return self.module(x)
