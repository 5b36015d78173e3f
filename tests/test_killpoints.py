"""Exact resume from every kill point of train, retrain and rounds, including the final-save window.

A run is stopped at each boundary where a kill leaves a distinct state on disk
(:data:`advaudio.killpoints.HOOK`), resumed, and compared with an
uninterrupted run: weights bitwise, metrics equal but for wall-clock times.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advaudio import killpoints
from advaudio.training import TrainConfig, load_checkpoint, train

# compares runs: also run under other CPU kernels (.ci/run); every run here, in this process or a killed
# subprocess (OMP_NUM_THREADS=1), computes with one thread (tests/conftest.py): weights compared bit for bit
pytestmark = [pytest.mark.floats, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 2
# Every boundary of a 2-epoch run: after each epoch's checkpoint, after the final test
# (nothing final written yet), after the final checkpoint (metrics not yet written).
KILL_POINTS = [("epoch", 1), ("epoch", 2), ("evaluated", 2), ("final-checkpoint", 2)]
TIMES = {"seconds", "samples_per_second", "wall_seconds", "wall_time_s"}


class Killed(BaseException):
    """Stands for SIGKILL: nothing below the hook catches a BaseException."""


def _config(store, **kw):
    base = dict(store=str(store.directory), view="stft", model="resnet18", width=0.125, input_size=24,
                test_fold=5, epochs=EPOCHS, batch_size=8, lr=3e-3, seed=0, workers=0, device="cpu")
    return TrainConfig(**{**base, **kw})


def _timeless(obj):
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if k not in TIMES}
    if isinstance(obj, list):
        return [_timeless(v) for v in obj]
    return obj


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]["state_dict"]


def _read(path, root):
    """A JSON file with the run's root directory replaced: paths differ by directory only.

    Its digest (the key ``sha256``) is left out: it covers the paths and wall times, which differ.
    """
    data = json.loads(path.read_text().replace(str(root), "RUN"))
    data.pop("sha256", None)
    return data


def _assert_same_run(out, reference, *, roots=None):
    a, b = _state(out / "checkpoint.pt"), _state(reference / "checkpoint.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    roots = roots or (out, reference)
    got, want = (_read(d / "metrics.json", r) for d, r in zip((out, reference), roots))
    for m in (got, want):  # an adversarial shard's bytes include its attack's wall time: not its sha256
        for shard in m["config"].get("provenance", {}).get("shards", []):
            shard.pop("sha256")
    assert _timeless(got) == _timeless(want)
    assert got["complete"] and "test" in got and load_checkpoint(out / "checkpoint.pt").complete




@pytest.fixture(scope="module")
def reference(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(_config(store), out_dir=out, progress=False)
    return out


@pytest.fixture
def kill_at(monkeypatch):
    def arm(point, epoch):
        def hook(p, e):
            if (p, e) == (point, epoch):
                raise Killed(f"{p}@{e}")
        monkeypatch.setattr(killpoints, "HOOK", hook)
    yield arm
    monkeypatch.setattr(killpoints, "HOOK", None)


@pytest.mark.parametrize("point", KILL_POINTS, ids=[f"{p}-{e}" for p, e in KILL_POINTS])
def test_train_resumes_exactly_from_every_kill_point(store, reference, kill_at, tmp_path, point):
    kill_at(*point)
    with pytest.raises(Killed):
        train(_config(store), out_dir=tmp_path, progress=False)
    killpoints.HOOK = None
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    # The killed run is never mistaken for a finished one …
    assert not on_disk.get("complete")
    finished = train(_config(store), out_dir=tmp_path, resume=True, progress=False)
    # … and the resumed one is the uninterrupted run.
    assert finished["complete"] and finished["test"]["n"] > 0
    _assert_same_run(tmp_path, reference)


def test_last_epoch_checkpoint_is_not_complete(store, kill_at, tmp_path):
    """The window of the issue: the last epoch's checkpoint is written, BN not recalibrated, no test."""
    kill_at("epoch", EPOCHS)
    with pytest.raises(Killed):
        train(_config(store), out_dir=tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck.epoch == EPOCHS and not ck.complete and ck.test is None
    assert not ck.raw["complete"] and not ck.raw["bn_recalibrated"]


KILLED_IN_FINAL_WINDOW = """
import os, signal
from advaudio import killpoints
from advaudio.training import TrainConfig, train

def hook(point, epoch):
    if point == "evaluated":
        os.kill(os.getpid(), signal.SIGKILL)  # BN recalibrated and tested in memory, nothing final on disk

killpoints.HOOK = hook
train(TrainConfig(**{config!r}), out_dir={out!r}, progress=False)
"""


def test_a_real_sigkill_in_the_final_save_window_resumes_exactly(store, reference, tmp_path):
    config = _config(store)
    script = KILLED_IN_FINAL_WINDOW.format(config=config.to_dict(), out=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not json.loads((tmp_path / "metrics.json").read_text())["complete"]
    train(config, out_dir=tmp_path, resume=True, progress=False)
    _assert_same_run(tmp_path, reference)


# --------------------------------------------------------------------------- #
# rounds: every step boundary, and the retraining's final-save window
# --------------------------------------------------------------------------- #
# One round (attack test → attack train → retrain, 1 epoch → attack test of round 1).
ROUND_KILLS = [("attack-test", 0), ("attack-train", 0), ("epoch", 1), ("evaluated", 1), ("final-checkpoint", 1),
               ("retrain", 1)]


def _rounds(run_dir):
    from advaudio.stages.attack import AttackStageConfig
    from advaudio.stages.retrain import RetrainConfig
    from advaudio.stages.rounds import run_rounds

    return run_rounds(run_dir, rounds=1, attack_config=AttackStageConfig(attacks=("fgsm",), threshold=0.6, limit=4),
                      retrain_config=RetrainConfig(epochs=1), train_limit=8, device="cpu", progress=False)


def _without(obj, keys):
    if isinstance(obj, dict):
        return {k: _without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_without(v, keys) for v in obj]
    return obj


def _results(path, root):
    # Shard files hold their attack's wall time, so their sha256 (recorded in round 1's
    # provenance, hence round 1's checkpoint sha256 and shard names) differ run to run.
    doc = _without(_read(path, root), {"checkpoint_sha256", "shard", "sha256"})
    doc.pop("results_path", None)
    return _timeless({k: v for k, v in doc.items() if k not in ("checkpoint", "created", "wall_seconds")})


@pytest.fixture(scope="module")
def base_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    train(_config(store, epochs=1), out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def reference_rounds(base_run, tmp_path_factory):
    import shutil

    out = tmp_path_factory.mktemp("rounds-ref") / "run"
    shutil.copytree(base_run, out)
    _rounds(out)
    return out


@pytest.mark.parametrize("point", ROUND_KILLS, ids=[f"{p}-{e}" for p, e in ROUND_KILLS])
def test_rounds_resume_exactly_from_every_step(base_run, reference_rounds, kill_at, tmp_path, point):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    kill_at(*point)
    with pytest.raises(Killed):
        _rounds(run)
    killpoints.HOOK = None
    _rounds(run)
    _assert_same_run(run / "round01", reference_rounds / "round01", roots=(run, reference_rounds))
    for name in ("attack-round00-test.json", "attack-round00-train.json", "round01/attack-round01-test.json"):
        assert _results(run / name, run) == _results(reference_rounds / name, reference_rounds), name


def test_rounds_refuses_a_rerun_with_other_options(reference_rounds, tmp_path):
    from advaudio.errors import ParameterError
    from advaudio.stages.attack import AttackStageConfig
    from advaudio.stages.retrain import RetrainConfig
    from advaudio.stages.rounds import run_rounds

    run = tmp_path / "run"
    shutil.copytree(reference_rounds, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*.json")}
    with pytest.raises(ParameterError, match=r"attack\.limit: 4 → 6; retrain\.epochs: 1 → 2"):
        run_rounds(run, rounds=1, attack_config=AttackStageConfig(attacks=("fgsm",), threshold=0.6, limit=6),
                   retrain_config=RetrainConfig(epochs=2), train_limit=8, device="cpu", progress=False)
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*.json")} == before  # refused before any work
    log = _rounds(run)  # the same options: every step is skipped
    assert all(step["skipped"] for step in log)
