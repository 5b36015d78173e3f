"""CNN classifiers for spectrograms, built by name.

>>> model = create_model("resnet18", in_channels=1, num_classes=50, width=0.25)
>>> rebuilt = model_from_config(model.config)   # e.g. from a checkpoint

Architectures: AlexNet, GoogLeNet (Inception v1), VGG-16, ResNet-18/34 (ImageNet
layout) and ResNet-56 (CIFAR layout), in plain torch. Each takes any number of input
channels and any input at least ``model.min_input_size`` pixels high and wide, and
returns logits. ``width`` scales every hidden channel count; at width 1 with 3 input
channels and 1000 classes the parameter counts equal the published ones.
Adding an architecture is one ``@register_model`` factory in a module imported by
:mod:`.builtins` (and its name in :mod:`.names`), or,
from another distribution, one entry point in the group ``advaudio.models``
(:mod:`advaudio.plugins`; :data:`MODELS` lists both).
"""

from advaudio.lazy import exports, names

# Imported on first use (advaudio.lazy), the architectures first (importing them registers their
# factories); :mod:`.names` lists the built-in names without torch.
_EXPORTS = {
    ".alexnet": ["AlexNet", "alexnet"],
    ".base": ["Classifier"],
    ".googlenet": ["GoogLeNet", "GoogLeNetOutputs", "googlenet"],
    ".registry": ["MODELS", "ModuleClassifier", "create_model", "list_models", "model_from_config", "model_options",
                  "model_plugin", "register_model"],
    ".resnet": ["ResNet", "resnet18", "resnet34", "resnet56"],
    ".vgg": ["VGG", "vgg16"],
}
__getattr__, __dir__ = exports(__name__, _EXPORTS, first=[".builtins"])
__all__ = names(_EXPORTS)
