"""CNN classifiers for spectrograms, built by name.

>>> model = create_model("resnet18", in_channels=1, num_classes=50, width=0.25)
>>> rebuilt = model_from_config(model.config)   # e.g. from a checkpoint

Architectures: AlexNet, GoogLeNet (Inception v1), VGG-16, ResNet-18/34 (ImageNet
layout) and ResNet-56 (CIFAR layout), in plain torch. Each takes any number of input
channels and any input at least ``model.min_input_size`` pixels high and wide, and
returns logits. ``width`` scales every hidden channel count; at width 1 with 3 input
channels and 1000 classes the parameter counts equal the published ones.
Adding an architecture is one ``@register_model`` factory in a module imported here, or,
from another distribution, one entry point in the group ``advaudio.models``
(:mod:`advaudio.plugins`; :data:`MODELS` lists both).
"""

# Importing the architecture modules registers their factories.
from .alexnet import AlexNet, alexnet
from .base import Classifier
from .googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from .registry import (
    MODELS,
    ModuleClassifier,
    create_model,
    list_models,
    model_from_config,
    model_options,
    model_plugin,
    register_model,
)
from .resnet import ResNet, resnet18, resnet34, resnet56
from .vgg import VGG, vgg16

__all__ = [
    "AlexNet",
    "Classifier",
    "GoogLeNet",
    "GoogLeNetOutputs",
    "MODELS",
    "ModuleClassifier",
    "ResNet",
    "VGG",
    "alexnet",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet56",
    "vgg16",
    "create_model",
    "list_models",
    "model_from_config",
    "model_options",
    "model_plugin",
    "register_model",
]
