"""The built-in architectures, registered: importing this module imports every one of them.

The package imports it before any name is looked up (:mod:`advaudio.lazy`), and the plugin
registry of the group ``advaudio.models`` names it (:data:`advaudio.plugins.GROUPS`), so that
a plugin named like a built-in is refused whichever way the registry is reached first.
"""

from . import alexnet, googlenet, resnet, vgg  # noqa: F401  (registers their factories)
from .registry import MODELS

__all__ = ["MODELS"]
