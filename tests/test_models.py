"""Model registry and architectures: shapes, gradients, parameter counts, input limits."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from advaudio.errors import ParameterError
from advaudio.models import create_model, list_models, model_from_config, model_options

ARCHITECTURES = ["alexnet", "googlenet", "resnet18", "resnet34", "resnet56", "vgg16"]
SMALL = 0.25  # width that keeps every architecture cheap on CPU


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def test_registry_lists_every_architecture():
    assert list_models() == ARCHITECTURES


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_forward_and_backward_reach_first_conv_and_input(name, in_channels):
    model = create_model(name, in_channels=in_channels, num_classes=7, width=SMALL)
    x = torch.rand(2, in_channels, 64, 64, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # attacks need gradients with respect to the input
    assert x.grad is not None and x.grad.abs().sum() > 0


PUBLISHED_COUNTS = [
    ("alexnet", {}, 61_100_840),
    ("googlenet", {}, 6_624_904),
    ("googlenet", {"aux_logits": True}, 13_004_888),
    ("vgg16", {}, 138_357_544),
    ("vgg16", {"batch_norm": True}, 138_365_992),
    ("resnet18", {}, 11_689_512),
    ("resnet34", {}, 21_797_672),
]


@pytest.mark.parametrize(("name", "options", "expected"), PUBLISHED_COUNTS)
def test_parameter_counts_match_published_models(name, options, expected):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = create_model(name, in_channels=3, num_classes=1000, **options)
    assert parameter_count(model) == expected


def test_resnet56_has_cifar_size_and_option_a_shortcuts_are_free():
    with torch.device("meta"):
        option_a = create_model("resnet56", in_channels=3, num_classes=10)
        option_b = create_model("resnet56", in_channels=3, num_classes=10, shortcut="B")
    assert 840_000 <= parameter_count(option_a) <= 860_000
    assert parameter_count(option_a) == 853_018
    # option B adds a 1×1 conv + BN at each of the two widening blocks
    assert parameter_count(option_b) - parameter_count(option_a) == (16 * 32 + 64) + (32 * 64 + 128)


def test_width_scales_hidden_channels():
    model = create_model("resnet18", width=SMALL)
    assert first_conv(model).out_channels == 16
    assert model.fc.in_features == 128
    tiny = create_model("resnet56", width=0.01)  # rounds to at least one channel
    assert first_conv(tiny).out_channels == 1
    assert create_model("vgg16", width=SMALL).classifier[0].out_features == 1024


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_non_square_input(name):
    model = create_model(name, num_classes=5, width=SMALL).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 140, 87)).shape == (1, 5)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_minimum_input_size_is_exact_and_enforced(name):
    model = create_model(name, width=0.125).eval()
    size = model.min_input_size
    with torch.no_grad():
        assert model(torch.rand(1, 1, size, size)).shape == (1, 10)
        if size == 1:
            return
        for shape in [(size - 1, size - 1), (size - 1, 200), (200, size - 1)]:
            with pytest.raises(ParameterError, match=f"at least {size}×{size}"):
                model(torch.rand(1, 1, *shape))
        # without the check torch itself fails, so the stated minimum is tight
        model.check_input = lambda x: None
        with pytest.raises(RuntimeError):
            model(torch.rand(1, 1, size - 1, size - 1))


def test_wrong_input_shape_or_channels_is_a_parameter_error():
    model = create_model("resnet56", in_channels=2, width=SMALL)
    with pytest.raises(ParameterError, match="2 input channel"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ParameterError, match=r"\(N, C, H, W\)"):
        model(torch.rand(2, 32, 32))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_eval_is_deterministic(name):
    model = create_model(name, width=SMALL).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_googlenet_aux_heads_only_in_training():
    model = create_model("googlenet", num_classes=4, width=SMALL, aux_logits=True)
    x = torch.rand(2, 1, 64, 64)
    outputs = model(x)
    assert [o.shape for o in outputs] == [(2, 4)] * 3
    assert outputs.logits is outputs[0]
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 4)


def test_the_training_loss_is_the_model_s_own():
    y = torch.tensor([0, 3])
    x = torch.rand(2, 1, 64, 64)

    def ce(logits, **kw):
        return nn.functional.cross_entropy(logits, y, **kw)

    googlenet = create_model("googlenet", num_classes=4, width=SMALL, aux_logits=True)
    out = googlenet(x)
    assert googlenet.main_logits(out) is out.logits
    assert torch.equal(googlenet.training_loss(out, y, label_smoothing=0.1),
                       ce(out.logits, label_smoothing=0.1)
                       + 0.3 * (ce(out.aux1, label_smoothing=0.1) + ce(out.aux2, label_smoothing=0.1)))
    summed = lambda logits: ce(logits, reduction="sum") / 1.5  # noqa: E731  (a DDP share's denominator)
    assert torch.equal(googlenet.training_loss(out, y, denominator=1.5),
                       summed(out.logits) + 0.3 * (summed(out.aux1) + summed(out.aux2)))

    resnet = create_model("resnet18", num_classes=4, width=SMALL)
    logits = resnet(x)
    assert resnet.main_logits(logits) is logits
    assert torch.equal(resnet.training_loss(logits, y), ce(logits))
    assert torch.equal(resnet.training_loss(logits, y, denominator=1.5), summed(logits))


@pytest.mark.parametrize(
    "arguments",
    [
        {"name": "lenet"},
        {"name": "resnet18", "in_channels": 0},
        {"name": "resnet18", "num_classes": 1},
        {"name": "resnet18", "width": 0},
        {"name": "resnet18", "width": -0.5},
        {"name": "resnet18", "width": float("nan")},
        {"name": "resnet18", "in_channels": 1.5},
        {"name": "resnet18", "depth": 50},
        {"name": "resnet56", "shortcut": "C"},
        {"name": "vgg16", "dropout": 1.0},
    ],
)
def test_invalid_arguments_are_parameter_errors(arguments):
    with pytest.raises(ParameterError):
        create_model(**arguments)


def test_unknown_name_lists_known_models():
    with pytest.raises(ParameterError) as info:
        create_model("resnet50")
    assert all(name in str(info.value) for name in ARCHITECTURES)


def test_names_are_case_insensitive():
    assert create_model("ResNet56", width=SMALL).config["name"] == "resnet56"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_model_from_config_round_trip(name):
    model = create_model(name, in_channels=2, num_classes=6, width=SMALL)
    config = json.loads(json.dumps(model.config))  # as a checkpoint would store it
    assert config == {
        "name": name,
        "in_channels": 2,
        "num_classes": 6,
        "width": SMALL,
        **model_options(name),
    }
    rebuilt = model_from_config(config)
    assert type(rebuilt) is type(model)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config == model.config


def test_config_records_options():
    model = create_model("vgg16", width=0.125, batch_norm=True)
    assert model.config["batch_norm"] is True
    rebuilt = model_from_config(model.config)
    assert any(isinstance(m, nn.BatchNorm2d) for m in rebuilt.modules())
    with pytest.raises(ParameterError):
        model_from_config({"width": 1.0})
