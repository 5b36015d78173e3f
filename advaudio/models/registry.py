"""Name → factory registry, in the manner of timm's ``create_model``.

A factory is a function named after its architecture, taking ``in_channels``,
``num_classes`` and ``width`` through ``**kwargs`` plus its own options as
keyword-only parameters with defaults; those parameters are the options
:func:`create_model` accepts for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ParameterError
from .base import Classifier

ModelFactory = Callable[..., Classifier]

_FACTORIES: dict[str, ModelFactory] = {}


def register_model(factory: ModelFactory) -> ModelFactory:
    """Register ``factory`` under its function name (decorator)."""
    name = factory.__name__
    if name in _FACTORIES:
        raise ValueError(f"a model named {name!r} is already registered")
    _FACTORIES[name] = factory
    return factory


def list_models() -> list[str]:
    """Names of the registered architectures, sorted."""
    return sorted(_FACTORIES)


def _factory(name: str) -> tuple[str, ModelFactory]:
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in _FACTORIES:
        raise ParameterError(
            f"unknown model {name!r}; known models: {', '.join(list_models())}"
        )
    return key, _FACTORIES[key]


def model_options(name: str) -> dict[str, Any]:
    """Options that model ``name`` accepts beyond channels, classes and width, with defaults."""
    _, factory = _factory(name)
    return {
        parameter.name: parameter.default
        for parameter in inspect.signature(factory).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
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
    model = factory(in_channels=in_channels, num_classes=num_classes, width=width, **resolved)
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
