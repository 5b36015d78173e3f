"""The architectures' names, without torch: option choices and ``--help`` read them here.

:func:`model_names` is :func:`advaudio.models.list_models` without importing a model (the
plugins' names come from their distributions' metadata); a test checks that the two agree.
"""

from __future__ import annotations

from advaudio import plugins

#: The built-in architectures (the factories registered by :mod:`advaudio.models.builtins`).
BUILTIN_MODELS = ("alexnet", "googlenet", "resnet18", "resnet34", "resnet56", "vgg16")


def model_names() -> list[str]:
    """Built-in and installed plugin architectures, sorted (as :func:`~advaudio.models.list_models`)."""
    return sorted(plugins.names("advaudio.models", BUILTIN_MODELS))
