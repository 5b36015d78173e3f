"""The CLI takes its defaults and choices from the config classes and registries."""

import dataclasses

import click
import pytest

from advaudio.cli import cli
from advaudio.datasets import DATASETS
from advaudio.errors import ParameterError
from advaudio.features import FeatureConfig
from advaudio.models import list_models
from advaudio.stages.attack import AttackStageConfig
from advaudio.stages.demo import DemoConfig
from advaudio.stages.featurize import FeaturizeConfig
from advaudio.stages.retrain import RetrainConfig
from advaudio.training import TrainConfig


def _params(command: str) -> dict[str, click.Parameter]:
    with click.Context(cli) as ctx:
        return {p.name: p for p in cli.get_command(ctx, command).params}


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize("command, cls, names", [
    ("train", TrainConfig, ["view", "model", "width", "val_fraction", "epochs", "batch_size", "lr", "weight_decay",
                            "optimizer", "schedule", "label_smoothing", "time_shift", "seed", "workers", "amp",
                            "mix"]),
    ("featurize", FeatureConfig, ["sr", "n_fft", "hop_length", "wavelet", "dwt_level"]),
    ("featurize", FeaturizeConfig, ["dataset", "shard_size"]),
    ("attack", AttackStageConfig, ["fooling_rate:threshold", "batch_size", "target_rule", "seed", "split"]),
    ("rounds", AttackStageConfig, ["fooling_rate:threshold", "batch_size", "target_rule", "seed"]),
    ("retrain", RetrainConfig, ["mix"]),
    ("demo", DemoConfig, ["dataset", "model", "view", "rounds", "workers"]),
])
def test_option_defaults_are_the_config_defaults(command, cls, names):
    params, defaults = _params(command), _defaults(cls)
    for name in names:  # "option:field" where the option keeps an older name
        option, _, field = name.partition(":")
        assert params[option].default == defaults[field or option], (command, name)


def test_list_defaults_and_choices_come_from_the_registries():
    assert _params("featurize")["features"].default == ",".join(FeatureConfig().representations)
    assert _params("attack")["attacks"].default == ",".join(AttackStageConfig().attacks)
    assert _params("train")["input_size"].default == "{}x{}".format(*TrainConfig(store="s").input_size)
    assert list(_params("featurize")["dataset"].type.choices) == list(DATASETS)
    assert list(_params("train")["model"].type.choices) == list_models()
    assert list(_params("demo")["model"].type.choices) == list_models()


def test_every_command_is_registered_and_a_path_query_stays_light():
    import subprocess
    import sys

    with click.Context(cli) as ctx:
        assert all(isinstance(cli.get_command(ctx, name), click.Command) for name in cli.list_commands(ctx))
    code = ("import sys; from advaudio.cli import main; main(['path', 'checkpoint', 'run', '--round', '2']);"
            "print(sorted(m for m in ('torch', 'librosa', 'dask', 'h5py') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["run/round02/checkpoint.pt", "[]"]


def test_the_demo_sizes_itself_to_the_dataset():
    synthetic, real = DemoConfig.for_dataset("synthetic"), DemoConfig.for_dataset("esc10", root="/data")
    assert synthetic == DemoConfig()
    assert (real.width, real.input_size, real.epochs, real.test_limit, real.train_limit) == (1.0, (128, 128), 30,
                                                                                            None, None)
    assert DemoConfig.for_dataset("esc10", root="/data", epochs=3, width=None).epochs == 3  # None: not given
    with pytest.raises(ParameterError, match="needs --root"):
        DemoConfig.for_dataset("esc10")
