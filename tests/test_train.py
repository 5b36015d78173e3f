"""Training: learns, resumes to the same weights (also after SIGKILL), checkpoints, metrics, CLI."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advaudio.cli import cli
from advaudio.errors import ParameterError, StoreError
from advaudio.models import create_model, list_models
from advaudio.store import Store
from advaudio.training import TrainConfig, evaluate, load_checkpoint, train

REPO = Path(__file__).resolve().parents[1]


def _make_store(cache, **options):
    from advaudio.features import FeatureConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store

    config = FeaturizeConfig(
        dataset="synthetic",
        dataset_options={"clips_per_class": 12, "duration": 1.0, "n_classes": 4, **options},
        features=FeatureConfig(representations=("stft", "chroma")),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Store(featurize_store(config, cache=cache, workers=0, progress=False).store_dir)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _make_store(tmp_path_factory.mktemp("cache"))


def _config(store, **kw):
    # The paper recipe: the loop's mechanics are under test (tests/test_recipe.py runs the augmented one).
    base = dict(store=str(store.directory), view="stft+chroma", model="resnet18", width=0.125, input_size=32,
                test_fold=5, epochs=2, batch_size=8, lr=3e-3, seed=0, workers=0, device="cpu", recipe="paper")
    return TrainConfig(**{**base, **kw})


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]["state_dict"]


def _same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def learned(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("learned")
    metrics = train(_config(store, epochs=6, workers=2, val_fraction=0.2), out_dir=out, progress=False)
    return out, metrics


def test_tiny_model_learns_the_synthetic_store(store, learned):
    out, metrics = learned
    chance = 1 / store.num_classes
    assert metrics["complete"] and metrics["test_accuracy"] > 2 * chance
    history = metrics["history"]
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(0 <= h["val_accuracy"] <= 1 for h in history)


def test_metrics_json_is_consistent(store, learned):
    out, metrics = learned
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["test_accuracy"] == metrics["test_accuracy"]
    cm = np.array(on_disk["confusion_matrix"])
    n_test = store.select(folds=[5]).size
    assert cm.shape == (4, 4) and cm.sum() == n_test == on_disk["test"]["n"]
    assert on_disk["test_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for i, name in enumerate(store.classes):
        assert on_disk["per_class_accuracy"][name] == pytest.approx(cm[i, i] / cm[i].sum())
    split = on_disk["split"]
    assert split["test_fold"] == 5 and split["train_clips"] + split["val_clips"] + n_test == len(store)
    assert on_disk["samples_per_second"] > 0 and on_disk["wall_seconds"] > 0
    assert on_disk["view"]["fitted_on"]["folds"] == [1, 2, 3, 4]
    assert on_disk["config"]["val_fraction"] == 0.2


def test_checkpoint_loads_weights_only_and_evaluates(store, learned):
    out, metrics = learned
    raw = torch.load(out / "checkpoint.pt", weights_only=True)
    assert raw["epoch"] == 6 and raw["complete"] and raw["classes"] == store.classes
    assert raw["store"]["fingerprint"] == store.fingerprint
    assert {"optimizer", "scheduler", "scaler", "rng", "view", "train_config", "history"} <= set(raw)
    ck = load_checkpoint(out / "checkpoint.pt")
    assert not ck.model.training and ck.view.name == "stft+chroma" and ck.test_fold == 5
    result = evaluate(out / "checkpoint.pt", device="cpu")
    assert result["accuracy"] == metrics["test_accuracy"]
    assert result["confusion_matrix"] == metrics["confusion_matrix"]
    rows = store.select(folds=[5])
    with torch.no_grad(), store.reader() as f:
        predicted = ck.model(ck.view.read(f, rows)).argmax(1).numpy()
    assert (predicted == store.labels[rows]).mean() == pytest.approx(result["accuracy"])


@pytest.fixture(scope="module")
def unbroken(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken")
    train(_config(store), out_dir=out, progress=False)
    return out / "checkpoint.pt"


@pytest.mark.floats
def test_resume_gives_the_weights_of_an_unbroken_run(store, unbroken, tmp_path):
    first = train(_config(store), out_dir=tmp_path, progress=False, stop_after=1)
    assert not first["complete"] and first["epochs_done"] == 1 and "test" not in first
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 1
    with pytest.raises(ParameterError, match="--resume"):
        train(_config(store), out_dir=tmp_path, progress=False)
    with pytest.raises(ParameterError, match="lr"):
        train(_config(store, lr=1e-3), out_dir=tmp_path, resume=True, progress=False)
    # Resume with another worker count: batches do not depend on it.
    done = train(_config(store, workers=2), out_dir=tmp_path, resume=True, progress=False)
    assert done["complete"] and done["epochs_done"] == 2
    assert _same_weights(_weights(tmp_path / "checkpoint.pt"), _weights(unbroken))


KILLED_RUN = """
import os, sys, time
from advaudio.training import TrainConfig, train
config = TrainConfig(**{config!r})

def pause(step):
    if step["epoch"] == 2 and step["batch"] == 2:
        open({marker!r}, "w").close()
        time.sleep(120)  # killed here, in the middle of epoch 2

train(config, out_dir={out!r}, progress=False, callback=pause)
"""


@pytest.mark.floats
def test_resume_after_sigkill_mid_epoch(store, unbroken, tmp_path):
    config = _config(store)
    out, marker = tmp_path / "run", tmp_path / "in-epoch-2"
    script = KILLED_RUN.format(config=config.to_dict(), marker=str(marker), out=str(out))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 50
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the training subprocess never reached epoch 2"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1  # epoch 2 never committed
    done = train(config, out_dir=out, resume=True, progress=False)
    assert done["complete"]
    assert not any(".tmp-" in p.name for p in out.iterdir())
    assert _same_weights(_weights(out / "checkpoint.pt"), _weights(unbroken))


def test_evaluate_refuses_a_store_with_another_fingerprint(learned, tmp_path_factory):
    out, _ = learned
    other = _make_store(tmp_path_factory.mktemp("other"), clips_per_class=5, seed=7)
    with pytest.raises(StoreError, match="fingerprint"):
        evaluate(out / "checkpoint.pt", store=other.directory, device="cpu")
    with pytest.raises(StoreError, match="fold 9"):
        evaluate(out / "checkpoint.pt", fold=9, device="cpu")


def test_cli_train_then_evaluate(store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-run"
    args = ["train", "--store", str(store.directory), "--view", "stft", "--model", "resnet18", "--width", "0.125",
            "--input-size", "32x32", "--test-fold", "5", "--epochs", "2", "--batch-size", "8", "--lr", "0.003",
            "--device", "cpu", "--seed", "1", "--workers", "0", "--out", str(out), "--no-progress"]
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == str(out / "checkpoint.pt")
    assert any(line.startswith("test accuracy") for line in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["input_size"] == [32, 32] and metrics["config"]["width"] == 0.125
    again = runner.invoke(cli, args + ["--resume"], catch_exceptions=False)  # complete: nothing to redo
    assert again.exit_code == 0 and again.output.strip().splitlines()[-1] == lines[-1]
    evaluated = runner.invoke(cli, ["evaluate", "--checkpoint", lines[-1], "--json", "--device", "cpu"],
                              catch_exceptions=False)
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output)
    assert report["accuracy"] == metrics["test_accuracy"] and report["fold"] == 5
    text = runner.invoke(cli, ["evaluate", "--checkpoint", lines[-1], "--fold", "1", "--device", "cpu"])
    assert text.exit_code == 0 and "confusion matrix" in text.output


def test_cli_reports_an_existing_run_as_one_line(store, learned):
    out, _ = learned
    proc = subprocess.run([sys.executable, "-m", "advaudio", "train", "--store", str(store.directory),
                           "--out", str(out), "--device", "cpu", "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "already exists" in proc.stderr and "Traceback" not in proc.stderr


def test_extra_sources_and_init_checkpoint(store, learned, tmp_path):
    """The retraining hooks: fine-tune from a checkpoint with model-space inputs mixed in."""
    out, _ = learned
    ck = load_checkpoint(out / "checkpoint.pt")
    rows = store.select(folds=[1, 2])
    adv = tmp_path / "adv.h5"
    with store.reader() as f, h5py.File(adv, "w") as g:
        g["adversarial"] = ck.view.read(f, rows).numpy()
        g["label"] = store.labels[rows]
        g["success"] = np.arange(rows.size) % 2 == 0
    config = dataclasses.replace(
        TrainConfig.from_dict(ck.config), epochs=1, extra_sources=({"path": str(adv)},), mix=0.25,
        init_checkpoint=str(out / "checkpoint.pt"), val_fraction=0.0,
    )
    metrics = train(config, out_dir=tmp_path / "retrain", progress=False)
    assert metrics["complete"] and metrics["test"]["n"] == store.select(folds=[5]).size
    n_train = metrics["split"]["train_clips"]
    assert metrics["history"][0]["samples"] > n_train  # extra samples on top of one pass over the store
    assert metrics["config"]["extra_sources"][0]["path"] == str(adv)
    assert metrics["view"]["normalisation"] == ck.view.to_dict()["normalisation"]  # model space unchanged
    with pytest.raises(ParameterError, match="view"):
        train(dataclasses.replace(config, input_size=(40, 40)), out_dir=tmp_path / "bad", progress=False)


@pytest.mark.parametrize("name", list_models())
def test_every_architecture_trains_a_step(store, tmp_path, name):
    size = max(32, create_model(name, in_channels=1, num_classes=4, width=0.125).min_input_size)
    config = _config(store, model=name, input_size=size, epochs=1, batch_size=64, workers=0, view="chroma")
    metrics = train(config, out_dir=tmp_path, progress=False)
    assert metrics["complete"] and np.isfinite(metrics["history"][0]["train_loss"])
    torch.manual_seed(0)
    fresh = create_model(name, in_channels=1, num_classes=4, width=0.125).state_dict()
    assert not _same_weights({k: v for k, v in fresh.items() if v.is_floating_point()},
                             {k: v for k, v in _weights(tmp_path / "checkpoint.pt").items() if v.is_floating_point()})
