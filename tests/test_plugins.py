"""Plugins: a real installed distribution (``tests/plugins/advaudio-example-plugin``) adds a model,
two attacks, a representation, a dataset and a defense through entry points.

The distribution is installed once per session with pip (``--no-deps --no-index --target``:
offline, into a temporary directory), so ``importlib.metadata`` sees a real distribution with
its entry points. In-process tests put that directory on ``sys.path``; commands run in
subprocesses with it on ``PYTHONPATH`` — and without it, to see the plugin "uninstalled".
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_cnn import trained_model

from advaudio import plugins
from advaudio.errors import ParameterError, PluginError

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SOURCE = REPO / "tests" / "plugins" / "advaudio-example-plugin"
DIST, VERSION = "advaudio-example-plugin", "0.1.0"


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The example plugin, installed by pip into a directory of its own (offline)."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "src"
    shutil.copytree(PLUGIN_SOURCE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = root / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "--quiet", "--target", str(site), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / f"advaudio_example_plugin-{VERSION}.dist-info" / "entry_points.txt").is_file()
    return site


@pytest.fixture
def installed(plugin_site, monkeypatch):
    """The plugin importable in this process; the registries forget it afterwards."""
    monkeypatch.syspath_prepend(str(plugin_site))
    plugins.refresh()
    yield plugin_site
    plugins.refresh()


def _env(site: Path | None, **extra: str) -> dict[str, str]:
    path = [str(REPO)] + ([str(site)] if site is not None else [])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(path), **extra}


def _advaudio(*args: str, site: Path | None, cwd: Path, timeout: float = 300, **extra: str):
    return subprocess.run([sys.executable, "-m", "advaudio", *args], capture_output=True, text=True,
                          env=_env(site, **extra), cwd=cwd, timeout=timeout)


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --------------------------------------------------------------------------- registries, in-process


def test_registries_list_plugins_and_look_them_up(installed):
    from advaudio.attacks import ATTACKS, list_attacks
    from advaudio.attacks.params import PARAMS, AttackConfig
    from advaudio.datasets import DATASETS
    from advaudio.features import REPRESENTATIONS, FeatureConfig
    from advaudio.models import ModuleClassifier, create_model, list_models, model_from_config, model_options
    from advaudio.training import DEFENSES, TrainConfig, defense_options

    assert "tiny" in list_models() and "mifgsm" in PARAMS and "onestep" in ATTACKS
    assert "envelope" in REPRESENTATIONS and "tones" in DATASETS and "gaussian" in DEFENSES
    assert list(PARAMS)[:3] == ["fgsm", "bim", "pgd"]  # built-ins first, plugins after
    assert model_options("tiny") == {"hidden": 16}  # in_channels, num_classes, width are not options
    model = create_model("tiny", num_classes=3, width=0.5, hidden=8)
    assert isinstance(model, ModuleClassifier) and model.min_input_size == 4
    assert model.config == {"name": "tiny", "in_channels": 1, "num_classes": 3, "width": 0.5, "hidden": 8}
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ParameterError, match="needs inputs of at least 4×4"):
        model(torch.zeros(1, 1, 2, 2))
    assert model_from_config(model.config).config == model.config
    info = {a["name"]: a for a in list_attacks()}
    assert info["mifgsm"]["per_clip_epsilon"] is True and info["onestep"]["per_clip_epsilon"] is False
    assert info["mifgsm"]["plugin"] == {"group": "advaudio.attacks", "name": "mifgsm", "distribution": DIST,
                                        "version": VERSION}
    cfg = AttackConfig.create("mifgsm", decay=0.5, seed=2)  # -p mifgsm.decay=0.5 / [attacks.params.mifgsm]
    assert cfg.params.decay == 0.5 and AttackConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ParameterError, match="mifgsm has no parameter momentum"):
        AttackConfig.create("mifgsm", momentum=0.5)
    FeatureConfig(representations=("stft", "envelope"))
    assert defense_options("gaussian") == {"sigma": 0.1}
    config = TrainConfig(store="s", model="tiny", defense="gaussian", defense_options={"sigma": 0.2})
    assert config.to_dict()["defense_options"] == {"sigma": 0.2}  # hashed into the run
    assert "defense" not in TrainConfig(store="s").to_dict()  # clean runs hash as before defenses existed
    with pytest.raises(ParameterError, match="defense 'gaussian' has no option"):
        TrainConfig(store="s", defense="gaussian", defense_options={"mu": 1})


@pytest.mark.slow
def test_listing_reads_metadata_only_and_the_help_stays_light(plugin_site, tmp_path):
    code = ("import sys\nfrom advaudio.models import list_models\nfrom advaudio.attacks.params import PARAMS\n"
            "from advaudio.datasets import DATASETS\n"
            "print('tiny' in list_models(), 'mifgsm' in PARAMS, 'tones' in DATASETS, "
            "'advaudio_example_plugin' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(plugin_site),
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "True", "False"]  # listed, not imported
    out = _advaudio("train", "--help", site=plugin_site, cwd=tmp_path)
    assert out.returncode == 0 and "tiny" in out.stdout and "gaussian" in out.stdout, out.stderr
    out = _advaudio("attack", "--help", site=plugin_site, cwd=tmp_path)
    assert out.returncode == 0 and "mifgsm" in out.stdout, out.stderr
    # A plugin named like a built-in: a warning of one line on the command line; the command works.
    site = tmp_path / "clash"
    _fake_distribution(site, "clash-dist", "[advaudio.models]\nresnet18 = os:getcwd\n")
    out = subprocess.run([sys.executable, "-m", "advaudio", "train", "--help"], capture_output=True, text=True,
                         env=_env(plugin_site, PYTHONPATH=os.pathsep.join([str(REPO), str(plugin_site), str(site)])),
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["advaudio: warning: plugin model 'resnet18' of distribution clash-dist "
                                       "(version 1.0) is refused: advaudio has a built-in model of that name"]


def _fake_distribution(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


def test_a_broken_or_clashing_plugin_is_one_line_and_breaks_nothing_else(tmp_path, monkeypatch):
    from advaudio.attacks import list_attacks
    from advaudio.models import create_model, list_models

    site = tmp_path / "site"
    _fake_distribution(site, "broken-dist", "[advaudio.models]\nbroken = no_such_module_here:factory\n"
                                            "[advaudio.attacks]\nbrokenattack = no_such_module_here:Spec\n")
    _fake_distribution(site, "clash-dist", "[advaudio.models]\nresnet18 = os:getcwd\n")
    monkeypatch.syspath_prepend(str(site))
    plugins.refresh()
    try:
        with pytest.warns(plugins.PluginWarning, match=r"model 'resnet18' of distribution clash-dist \(version 1.0\) "
                                                       r"is refused: advaudio has a built-in model"):
            names = list_models()
        assert "broken" in names and names.count("resnet18") == 1
        assert create_model("resnet18", num_classes=2, width=0.0625).config["name"] == "resnet18"  # the built-in
        with pytest.raises(PluginError, match=r"^model 'broken' from distribution broken-dist \(version 1.0\) failed "
                                              r"to load: ModuleNotFoundError") as err:
            create_model("broken")
        assert "\n" not in str(err.value)
        with pytest.warns(plugins.PluginWarning, match="attack 'brokenattack' from distribution broken-dist"):
            listed = [a["name"] for a in list_attacks()]
        assert "pgd" in listed and "brokenattack" not in listed  # the others still listed
    finally:
        plugins.refresh()


# --------------------------------------------------------------------------- attacks


def test_the_per_clip_search_runs_the_plugins_own_step(installed, tmp_path, monkeypatch):
    from advaudio_example_plugin.attacks import mifgsm

    from advaudio.attacks import AttackConfig, tune_budget
    from advaudio.attacks.checks import evaluation_checks

    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("ADVAUDIO_EXAMPLE_PLUGIN_LOG", str(log))
    torch.set_num_threads(1)
    model, x, y = trained_model()
    cfg = AttackConfig.create("mifgsm", steps=5, step_size=0.25, decay=1.0, seed=1)
    tune = tune_budget(model, x, y, config=cfg, fooling_rate=0.75, precision="clip")
    assert tune.search == "per-clip" and tune.reached, tune.reason
    calls = _log(log)
    # The search called mifgsm's own perturb, round after round, each clip at its own ε.
    assert len(calls) >= 3 and all(c["attack"] == "mifgsm" for c in calls)
    assert max(len(c["epsilons"]) for c in calls) > 1
    res = tune.result
    fooled = np.flatnonzero(res.success)
    assert len(fooled) >= 12
    eps = torch.as_tensor(res.minimal_budget[fooled], dtype=torch.float32)
    # Each fooled clip's adversarial lies within its minimal ε, and MI-FGSM itself at that ε fools it.
    assert (res.linf[fooled] <= res.minimal_budget[fooled] * (1 + 1e-6)).all()
    again = mifgsm(model, x[fooled], torch.as_tensor(res.targets[fooled]), eps, targeted=True, steps=5,
                   step_size=0.25, decay=1.0)
    assert bool(again.success.all())
    np.testing.assert_allclose(again.adversarial.numpy(), res.adversarial[fooled], atol=1e-5)
    # The evaluation checks of an iterative attack rerun that same step (twice the steps, one FGSM step).
    before = len(_log(log))
    checks = evaluation_checks(model, x, y, {"mifgsm": tune}, targets=res.targets, batch_size=256).checks
    assert {c.check for c in checks} == {"success-at-large-eps", "iterative-beats-fgsm", "more-steps-no-gain"}
    assert any(len(c["epsilons"]) == 1 for c in _log(log)[before:])  # at the budget


def test_an_attack_with_one_epsilon_per_call_is_bisected_and_says_so(installed, tmp_path, monkeypatch):
    from advaudio.attacks import AttackConfig, tune_budget

    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("ADVAUDIO_EXAMPLE_PLUGIN_LOG", str(log))
    torch.set_num_threads(1)
    model, x, y = trained_model()
    tune = tune_budget(model, x, y, config=AttackConfig.create("onestep"), fooling_rate=0.5)
    assert tune.search == "bisection"
    assert "bisection-one-epsilon" in [n.code for n in tune.notes]
    calls = _log(log)
    assert calls and all(len(c["epsilons"]) == 1 for c in calls)  # one ε per call, as it declared
    assert [e for e, _ in tune.evaluations] == [c["epsilons"][0] for c in calls]


# --------------------------------------------------------------------------- defenses


def _train(store, out: Path, **values):
    from advaudio.training import TrainConfig, train

    # the paper recipe: the subject is the defense's step, not the augmentation (which a defense turns partly off)
    config = TrainConfig(store=store.directory, view="stft", model="resnet18", width=0.125, input_size=(16, 16),
                         test_fold=4, epochs=1, batch_size=8, workers=0, device="cpu", seed=1, recipe="paper",
                         **values)
    train(config, out_dir=out, progress=False)
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


def test_the_defense_loss_sees_the_inputs(store, installed, tmp_path, monkeypatch):
    from advaudio.training import DEFENSES, Defense

    seen = []

    class Recording(Defense):
        """none's step, recording what the loss was given."""

        def loss(self, model, x, y, *, step_context):
            seen.append((step_context.epoch, step_context.step, x.detach().clone(), y.clone()))
            output = model(x)
            step_context.output = output
            return step_context.criterion(output, y)

    monkeypatch.setitem(DEFENSES.builtins, "recording", Recording)
    torch.set_num_threads(1)
    none = _train(store, tmp_path / "none")
    recorded = _train(store, tmp_path / "recording", defense="recording")
    assert "plugins" not in none and "defense" not in none["train_config"]
    # The loss got every training batch: inputs of the view's shape, the training clips' labels.
    assert [s[:2] for s in seen] == [(0, i) for i in range(len(seen))]
    assert all(s[2].shape[1:] == (1, 16, 16) for s in seen)
    assert sum(len(s[3]) for s in seen) == none["split"]["train_clips"]
    for key, value in none["model"]["state_dict"].items():  # and training as none does: the same weights
        assert torch.equal(value, recorded["model"]["state_dict"][key]), key
    # A plugin defense that changes the inputs changes the training; with sigma 0 it is none's.
    zero = _train(store, tmp_path / "zero", defense="gaussian", defense_options={"sigma": 0.0})
    noisy = _train(store, tmp_path / "noisy", defense="gaussian", defense_options={"sigma": 0.5})
    weights = [k for k, v in none["model"]["state_dict"].items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(none["model"]["state_dict"][k], zero["model"]["state_dict"][k]) for k in weights)
    assert not all(torch.equal(none["model"]["state_dict"][k], noisy["model"]["state_dict"][k]) for k in weights)
    assert noisy["plugins"] == [{"group": "advaudio.defenses", "name": "gaussian", "distribution": DIST,
                                 "version": VERSION}]
    assert noisy["train_config"]["defense_options"] == {"sigma": 0.5}


# --------------------------------------------------------------------------- every command, in subprocesses


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Plugins\n")
    return text[start:text.index("\n## ", start + 1)]


def _readme_commands() -> dict[str, list[str]]:
    """The README's plugin example: the commands of its bash block, by command name."""
    block = _readme_section().split("```bash\n", 1)[1].split("```", 1)[0]
    commands = {}
    for line in block.splitlines():
        inner = re.search(r"\$\((advaudio .*?) \| tail -n 1\)", line)
        words = shlex.split(inner.group(1) if inner else line)
        if words and words[0] == "advaudio":
            commands[words[1]] = words[1:]
    return commands


def test_the_readme_quotes_the_example_plugin():
    pyproject = (PLUGIN_SOURCE / "pyproject.toml").read_text()
    entry_points = pyproject[pyproject.index("[project.entry-points"):pyproject.index("[tool.setuptools]")].strip()
    section = _readme_section()
    assert entry_points in section
    models = (PLUGIN_SOURCE / "advaudio_example_plugin" / "models.py").read_text()
    factory = models[models.index("def tiny("):].strip()
    assert textwrap.indent(factory, "  ") in section
    assert set(_readme_commands()) == {"featurize", "train", "attack"}


@pytest.mark.slow
def test_the_readme_example_in_every_command_and_an_uninstalled_plugin_named(plugin_site, tmp_path):
    """The README's commands: featurize on Dask workers, train (and under torchrun), attack, evaluate;
    then evaluate without the plugin."""
    site = plugin_site
    commands = _readme_commands()
    out = _advaudio(*commands["featurize"], "--no-progress", site=site, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--workers" in commands["featurize"] and commands["featurize"][-1] == "2"  # Dask worker processes
    store = tmp_path / out.stdout.splitlines()[-1]
    import h5py

    with h5py.File(store / "store.h5") as f:
        config = json.loads(f.attrs["config"])
        assert f["features/envelope"].shape[1] == 8
    assert [(p["group"], p["name"], p["distribution"], p["version"]) for p in config["plugins"]] == [
        ("advaudio.datasets", "tones", DIST, VERSION), ("advaudio.representations", "envelope", DIST, VERSION)]
    out = _advaudio("store", "info", str(store), site=site, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (f"plugins      tones (datasets: {DIST} {VERSION}), envelope (representations: {DIST} {VERSION})"
            in out.stdout.splitlines())

    train = [str(store) if w == "$STORE" else w for w in commands["train"]]
    run = tmp_path / train[train.index("--out") + 1]
    out = _advaudio(*train, "--workers", "0", "--no-progress", site=site, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["plugins"] == [{"group": "advaudio.models", "name": "tiny", "distribution": DIST, "version": VERSION}]
    assert ckpt["model"]["config"]["name"] == "tiny"
    # torchrun ranks find the plugin by themselves
    ddp = list(train)
    ddp[ddp.index("--epochs") + 1], ddp[ddp.index("--out") + 1] = "1", "ddp"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "advaudio", *ddp, "--workers", "0", "--no-progress"], capture_output=True, text=True, env=_env(site), cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)["distributed"]["world_size"] == 2

    log = tmp_path / "calls.jsonl"
    attack = commands["attack"]
    checkpoint = attack[attack.index("--checkpoint") + 1]
    out = _advaudio(*attack, "--no-progress", "--no-checks", site=site, cwd=tmp_path,
                    ADVAUDIO_EXAMPLE_PLUGIN_LOG=str(log))
    assert out.returncode == 0, out.stderr
    doc = json.loads((run / "attack-round00-test.json").read_text())
    records = {r["attack"]: r for r in doc["attacks"]}
    assert records["mifgsm"]["search"] == "per-clip" and records["mifgsm"]["config"]["decay"] == 0.5
    assert records["onestep"]["search"] == "bisection"
    assert "bisection-one-epsilon" in [n["code"] for n in records["onestep"]["notes"]]
    assert {(p["group"], p["name"]) for p in doc["plugins"]} == {
        ("advaudio.models", "tiny"), ("advaudio.datasets", "tones"), ("advaudio.representations", "envelope"),
        ("advaudio.attacks", "mifgsm"), ("advaudio.attacks", "onestep")}
    assert all(p["distribution"] == DIST and p["version"] == VERSION for p in doc["plugins"])
    calls = _log(log)
    assert any(c["attack"] == "mifgsm" and len(c["epsilons"]) > 1 for c in calls)  # its own step, per clip
    assert "plugins: tiny (models: advaudio-example-plugin 0.1.0)" in out.stdout

    out = _advaudio("evaluate", "--checkpoint", checkpoint, site=site, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # The plugin uninstalled: one line naming the distribution, exit status 2.
    out = _advaudio("evaluate", "--checkpoint", checkpoint, site=None, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"advaudio: error: checkpoint {checkpoint}: model 'tiny' comes from distribution {DIST} "
        f"(version {VERSION}), which is not installed: pip install {DIST}"]


STUDY = """
[study]
name = "plug"

[data.tones]
dataset = "tones"
options = { clips_per_class = 6 }
shard_size = 6
[data.tones.features]
representations = ["stft", "envelope"]
n_fft = 512
hop_length = 256

[grid]
models = ["tiny"]
views = ["envelope"]
widths = [1.0]
input_sizes = ["16x16"]
seeds = [0]

[train]
epochs = 20
batch_size = 6
lr = 1e-2

[protocol]
cv = [2, 3]
attack_folds = [3]

[attacks]
names = ["mifgsm", "pgd"]
test_clips = 6
train_clips = 6
checks = false
[attacks.params.mifgsm]
decay = 0.5
[attacks.params.pgd]
steps = 5

[rounds]
count = 1
epochs = 2

[run]
out = "plug.study"
executor = "dask"
threads = 1
featurize_workers = 0
workers = 2
"""


@pytest.mark.slow
def test_a_study_of_plugins_on_the_dask_executor(plugin_site, tmp_path):
    (tmp_path / "plug.toml").write_text(STUDY)
    log = tmp_path / "calls.jsonl"
    out = _advaudio("study", "run", "plug.toml", site=plugin_site, cwd=tmp_path, timeout=600,
                    ADVAUDIO_EXAMPLE_PLUGIN_LOG=str(log))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "2 of 2 cells done" in out.stdout
    assert any(c["attack"] == "mifgsm" for c in _log(log))  # run by the Dask workers
    out = _advaudio("study", "report", "plug.toml", site=plugin_site, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = tmp_path / "plug.study" / "report"
    listed = json.loads((report / "study.json").read_text())["protocol"]["plugins"]
    assert {(p["group"], p["name"], p["distribution"], p["version"]) for p in listed} == {
        ("advaudio.models", "tiny", DIST, VERSION), ("advaudio.datasets", "tones", DIST, VERSION),
        ("advaudio.representations", "envelope", DIST, VERSION), ("advaudio.attacks", "mifgsm", DIST, VERSION)}
    assert "tiny (models: advaudio-example-plugin 0.1.0)" in (report / "study.md").read_text()
    # without the plugin the study file itself is refused, in one line naming the file and the key
    out = _advaudio("study", "plan", "plug.toml", site=None, cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.splitlines() == [
        "advaudio: error: plug.toml: [data.tones.features]: unknown representation 'envelope'; choose from stft, "
        "dwt, chroma, tonnetz"]


def test_recorded_plugins_are_checked_against_what_is_installed(installed):
    record = {"group": "advaudio.models", "name": "tiny", "distribution": DIST, "version": VERSION}
    plugins.require([record], where="checkpoint c.pt")  # installed, same version: silent
    with pytest.warns(plugins.PluginWarning, match=r"^checkpoint c.pt: model 'tiny' was made with "
                                                   r"advaudio-example-plugin 0.0.9; 0.1.0 is installed$"):
        plugins.require([{**record, "version": "0.0.9"}], where="checkpoint c.pt")
    with pytest.raises(PluginError, match=r"^checkpoint c.pt: model 'tiny' comes from distribution other-dist "
                                          r"\(version 2.0\), which is not installed \(installed: distribution "
                                          r"advaudio-example-plugin \(version 0.1.0\)\): pip install other-dist$"):
        plugins.require([{**record, "distribution": "other-dist", "version": "2.0"}], where="checkpoint c.pt")
    plugins.require([{**record, "name": "gone"}], where="c", groups=("advaudio.attacks",))  # other groups: skipped
    assert plugins.used([("advaudio.models", "tiny"), ("advaudio.models", "resnet18"), ("advaudio.models", "tiny"),
                         ("advaudio.attacks", "mifgsm")]) == [record, {**record, "group": "advaudio.attacks",
                                                                        "name": "mifgsm"}]
