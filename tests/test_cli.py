"""The CLI is generated from the commands' option declarations, and so are the API functions:
their options, defaults and choices agree by construction, and a hand edit of either side fails here."""

import inspect
import subprocess
import sys

import click
import pytest

import advaudio
from advaudio.cli import cli
from advaudio.errors import ParameterError
from advaudio.options import UNSET

#: Commands that are not functions of the API: queries of the layout and of a store.
NO_FUNCTION = {"path round-dir", "path checkpoint", "path metrics", "path attack-results", "store info"}


def _leaves(group=cli, prefix=()):
    with click.Context(group) as ctx:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if isinstance(command, click.Group):
                yield from _leaves(command, prefix + (name,))
            else:
                yield " ".join(prefix + (name,)), command


COMMANDS = dict(_leaves())


def _function(path: str):
    *group, name = path.split()
    if group == ["study"]:
        return getattr(advaudio.study, name)
    return getattr(advaudio, {"store merge": "merge"}.get(path, name))


def _empty(value) -> bool:
    return value is None or value is UNSET or (isinstance(value, (tuple, list, dict)) and not value)


def _converted(option, value, path):
    """A default as the function receives it (click's text or the signature's value)."""
    return None if _empty(value) else option.convert(value, command=path)


def test_every_command_is_a_function_of_the_api():
    assert set(COMMANDS) - NO_FUNCTION == {"featurize", "train", "evaluate", "attack", "store merge", "retrain",
                                           "rounds", "demo", "report", "listen", "study init", "study plan",
                                           "study run", "study status", "study report"}
    names = set(advaudio.__all__)
    assert {"featurize", "train", "evaluate", "attack", "merge", "retrain", "rounds", "report", "listen",
            "study"} <= names
    for name in ("init", "plan", "run", "status", "report"):
        assert callable(getattr(advaudio.study, name))


@pytest.mark.parametrize("path", sorted(set(COMMANDS) - NO_FUNCTION))
def test_the_command_and_its_function_take_the_same_options_and_defaults(path):
    command, function = COMMANDS[path], _function(path)
    spec = command.spec
    assert function.command is spec, "the command and the function are made from one declaration"
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    signature = inspect.signature(function).parameters
    # dest names: the click params are the function's parameters, in order, plus the presentation-only ones
    assert [p.name for p in params if not spec.option(p.name).cli_only] == list(signature)
    assert [p.name for p in params] == [o.name for o in spec.options]
    for p in params:
        o = spec.option(p.name)
        if o.cli_only:
            continue
        expected = signature[p.name].default
        if expected is inspect.Parameter.empty or o.kind == "argument":
            assert p.required == o.required, (path, p.name)
            continue
        clicked = p.default() if callable(p.default) else p.default
        assert _converted(o, clicked, path) == _converted(o, expected, path), (path, p.name, clicked, expected)
        if isinstance(p.type, click.Choice):
            assert list(p.type.choices) == [str(c) for c in o.allowed()], (path, p.name)


def test_today_spellings_still_parse():
    """Options whose names differ from their config fields, and older spellings kept as aliases."""
    spellings = {
        "attack": ["--fooling-rate", "-p", "--param", "--allow-unreached", "--precision", "--slice"],
        "rounds": ["--fooling-rate", "--search", "--precision", "--no-checks", "--allow-unreached", "--mode",
                   "--fine-tune", "--from-scratch", "--train-limit"],
        "retrain": ["--mode", "--fine-tune", "--from-scratch", "--shards"],
        "featurize": ["-o", "--dataset-option", "--cluster", "--cluster-extra", "--no-progress"],
        "train": ["-d", "--defense-option", "--extra", "--no-amp", "--input-size"],
        "report": ["--no-listen", "--listen", "--max-clips"],
        "study run": ["--quiet", "--echo", "--fail-fast", "--keep-going", "--cell"],
        "evaluate": ["--json"],
    }
    for path, flags in spellings.items():
        known = {f for p in COMMANDS[path].params for f in (*p.opts, *getattr(p, "secondary_opts", ()))}
        assert set(flags) <= known, (path, set(flags) - known)


def test_an_alias_sets_the_option(monkeypatch, tmp_path):
    """``--from-scratch`` is ``--mode from-scratch``; only the options given reach the function."""
    seen = {}
    monkeypatch.setattr("advaudio.cli._common.function_of", lambda target: lambda **kw: seen.update(kw) or _Done())
    from advaudio.cli import main

    main(["retrain", "--checkpoint", "c.pt", "--out", str(tmp_path), "--from-scratch", "--mix", "0.25"])
    assert seen == {"checkpoint": "c.pt", "out": str(tmp_path), "mode": "from-scratch", "mix": 0.25}


class _Done:
    def output(self):
        return []

    def warnings(self):
        return []

    exit_status = 0


def test_values_as_text_or_typed_and_one_line_errors():
    from advaudio.stages.attack_config import ATTACK, AttackStageConfig
    from advaudio.stages.train_config import TRAIN
    from advaudio.training import TrainConfig

    text = TRAIN.bind((), {"store": "s", "out": "o", "input_size": "32x32", "width": "0.125", "epochs": "2",
                           "defense_option": ["a=1"], "amp": "false", "extra": "x.h5", "mix": "0.5"})
    typed = TRAIN.bind((), {"store": "s", "out": "o", "input_size": (32, 32), "width": 0.125, "epochs": 2,
                            "defense_option": {"a": 1}, "amp": False, "extra": ["x.h5"], "mix": 0.5})
    assert text.as_dict() == typed.as_dict()
    assert TrainConfig(**{**typed.config(), "defense_options": {}}).input_size == (32, 32)
    a = ATTACK.bind((), {"checkpoint": "c", "attacks": "pgd, cw", "param": ["pgd.steps=20", "cw.steps=5"],
                         "slice": "1/4", "batch_size": "auto", "precision": "clip"})
    b = ATTACK.bind((), {"checkpoint": "c", "attacks": ["pgd", "cw"], "param": {"pgd": {"steps": 20}, "cw": {"steps": 5}},
                         "slice": (1, 4), "batch_size": None, "precision": "clip"})
    assert a.as_dict() == b.as_dict()
    assert AttackStageConfig(**a.config()).slice == (1, 4)
    with pytest.raises(ParameterError, match=r"^attack: unknown option\(s\) fooling_rat;"):
        advaudio.attack(checkpoint="c.pt", fooling_rat=0.5)
    with pytest.raises(ParameterError, match=r"^train: --out is required$"):
        advaudio.train(store="s")
    with pytest.raises(ParameterError, match=r"^train: --epochs must be an integer, got 'two'$"):
        advaudio.train(store="s", out="o", epochs="two")
    with pytest.raises(ParameterError, match=r"^report: takes 0 positional|^report: RUN_DIR... is required$"):
        advaudio.report(out="o")
    with pytest.raises(ParameterError, match=r"^attack: --batch-size: .*neither auto nor an integer"):
        advaudio.attack(checkpoint="c", batch_size="many")


def test_help_imports_no_heavy_library_and_a_path_query_stays_light():
    """``--help`` of every command (and ``advaudio --help``, which lists them) imports no torch, librosa,
    h5py, Dask or matplotlib; ``advaudio path`` neither."""
    helps = [[*path.split(), "--help"] for path in sorted(COMMANDS)] + [["--help"], ["study", "--help"]]
    code = ("import sys\nfrom advaudio.cli import main\n"
            f"for argv in {helps!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit as exc:\n        assert not exc.code, (argv, exc.code)\n"
            "main(['path', 'checkpoint', 'run', '--round', '2'])\n"
            "print(sorted(m for m in ('torch', 'librosa', 'dask', 'distributed', 'h5py', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["run/round02/checkpoint.pt", "[]"]
    assert "--fooling-rate FLOAT" in out.stdout and "[default: pgd,cw]" in out.stdout


def test_the_built_in_names_listed_without_torch_are_the_registries():
    from advaudio.datasets import DATASETS
    from advaudio.datasets.names import dataset_names
    from advaudio.features.config import C1_HZ
    from advaudio.features.tonal import C1_HZ as librosa_c1
    from advaudio.models import list_models
    from advaudio.models.names import model_names
    from advaudio.reporting.listening import METHODS
    from advaudio.stages.listen_config import METHODS as LISTEN_METHODS
    from advaudio.training.config import defense_names
    from advaudio.training.defenses import DEFENSES

    assert model_names() == list_models()
    assert dataset_names() == list(DATASETS)
    assert defense_names() == list(DEFENSES)
    assert LISTEN_METHODS == METHODS
    assert C1_HZ == librosa_c1


def test_the_demo_sizes_itself_to_the_dataset():
    from advaudio.stages.demo import DemoConfig

    synthetic, real = DemoConfig.for_dataset("synthetic"), DemoConfig.for_dataset("esc10", root="/data")
    assert synthetic == DemoConfig()
    # real data: the published size, the recipe's epochs
    assert (real.width, real.input_size, real.epochs, real.test_limit, real.train_limit) == (1.0, (128, 128), None,
                                                                                            None, None)
    assert real.recipe == synthetic.recipe == "default"
    assert DemoConfig.for_dataset("esc10", root="/data", epochs=3, width=None).epochs == 3  # None: not given
    with pytest.raises(ParameterError, match="needs --root"):
        DemoConfig.for_dataset("esc10")


def test_the_recipe_options_fill_the_config_and_default_to_the_recipe():
    """Every field a recipe sets is an option of ``train``; not given, it is None (the recipe's value)."""
    from advaudio.stages.demo_config import DEMO
    from advaudio.stages.train_config import TRAIN
    from advaudio.training import RECIPES, TrainConfig

    fields = {o.field for o in TRAIN.options}
    assert set(RECIPES["default"]) - {"warmup_fraction"} <= fields
    assert {"augment_extra"} <= fields and "recipe" in {o.name for o in TRAIN.options}
    assert "recipe" in {o.field for o in DEMO.options}
    given = TRAIN.bind((), {"store": "s", "out": "o", "mixing": "mixup", "freq_masks": "1", "recipe": "paper"})
    assert given.recipe == "paper" and given.config()["mixing"] == "mixup" and given.config()["epochs"] is None
    config = TrainConfig(**given.config(), recipe=given.recipe)
    assert (config.mixing, config.freq_masks, config.epochs) == ("mixup", 1, RECIPES["paper"]["epochs"])
    with pytest.raises(ParameterError, match=r"^train: --mixing must be one of none, mixup, bc"):
        TRAIN.bind((), {"store": "s", "out": "o", "mixing": "cutmix"})


def test_the_store_options_reach_the_feature_config():
    """``featurize --chroma-floor-db`` (and the other representation options) fill FeatureConfig's fields;
    not given, the field keeps its default (None: librosa's normalisation, the store's old fingerprint)."""
    from advaudio.features.config import FeatureConfig
    from advaudio.stages.featurize_config import FEATURIZE

    given = FEATURIZE.bind((), {"chroma_floor_db": "80", "features": "stft,chroma", "n_fft": "512"})
    config = FeatureConfig(**given.config("features"))
    assert (config.chroma_floor_db, config.representations, config.n_fft) == (80.0, ("stft", "chroma"), 512)
    assert FeatureConfig(**FEATURIZE.bind((), {}).config("features")) == FeatureConfig()
    assert "chroma_floor_db" not in FeatureConfig(**FEATURIZE.bind((), {}).config("features")).to_dict()
    with pytest.raises(ParameterError, match=r"^featurize: --chroma-floor-db must be a number"):
        FEATURIZE.bind((), {"chroma_floor_db": "loud"})
