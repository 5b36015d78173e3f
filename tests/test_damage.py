"""Nothing damaged or foreign is used as good: shards, adversarial inputs, audio that overflows."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from advaudio import store as st
from advaudio.cli import main
from advaudio.errors import StoreError
from advaudio.features import FeatureConfig
from advaudio.stages.featurize import FeaturizeConfig, featurize_store
from advaudio.stages.retrain import retrain_checkpoint
from advaudio.training import TrainConfig, load_checkpoint, train


def _flip(path: Path, *, at: int | None = None, size: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if at is None else at
    data[at:at + size] = bytes(b ^ 0xFF for b in data[at:at + size])
    path.write_bytes(bytes(data))


def _config(store_dir, **kw):
    base = dict(store=str(store_dir), view="stft", model="resnet18", width=0.125, input_size=24, test_fold=5,
                epochs=1, batch_size=8, seed=0, workers=0, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def store_copy(store, tmp_path):
    """A private copy of the session store (copytree keeps the shards' mtimes: an untouched copy)."""
    return Path(shutil.copytree(store.directory, tmp_path / store.directory.name))


# --------------------------------------------------------------------------- #
# Feature shards: checked when a store is opened
# --------------------------------------------------------------------------- #
def test_a_flipped_feature_shard_is_refused_on_open_and_listed_by_verify(store_copy, tmp_path, capsys):
    st.Store(store_copy)  # the untouched copy opens
    shard = sorted((store_copy / st.SHARD_DIR).glob("*.h5"))[0]
    _flip(shard)
    with pytest.raises(StoreError, match=f"checksum mismatch: {shard}"):
        st.Store(store_copy)
    with pytest.raises(StoreError, match="checksum mismatch"):
        train(_config(store_copy), out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    with pytest.raises(SystemExit) as info:
        main(["train", "--store", str(store_copy), "--out", str(tmp_path / "cli"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "checksum mismatch" in err and len(err.strip().splitlines()) == 1
    # --verify still opens the damaged store to say what is wrong with it.
    problems = st.Store(store_copy, check=False).verify()
    assert problems == [f"checksum mismatch: {shard.relative_to(store_copy)}"]


def test_a_rewritten_but_intact_shard_costs_one_hash_and_passes(store_copy):
    """A copy without preserved mtimes (cp -r) is hashed, not refused."""
    shard = sorted((store_copy / st.SHARD_DIR).glob("*.h5"))[0]
    shard.write_bytes(shard.read_bytes())  # same bytes, new mtime
    st.Store(store_copy)
    shard.write_bytes(shard.read_bytes()[:-1])  # one byte short: refused by its size alone
    with pytest.raises(StoreError, match="bytes"):
        st.Store(store_copy)


# --------------------------------------------------------------------------- #
# Non-finite features: a recorded clip error, never stored
# --------------------------------------------------------------------------- #
def test_huge_float_samples_are_a_clip_error_not_infinite_features(tmp_path):
    root = tmp_path / "audio"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            sf.write(root / cls / f"{cls}{i}.wav", 0.1 * rng.standard_normal(8000).astype(np.float32), 8000,
                     subtype="FLOAT")
    sf.write(root / "a" / "huge.wav", 1e30 * rng.standard_normal(8000).astype(np.float32), 8000, subtype="FLOAT")
    # Entries named like audio that are not files: each a recorded error, none skipped silently.
    (root / "b" / "gone.wav").symlink_to(root / "nowhere.wav")
    (root / "b" / "folder.wav").mkdir()
    os.mkfifo(root / "b" / "pipe.wav")
    result = featurize_store(FeaturizeConfig(dataset="folder", root=str(root), dataset_options={"duration": 1.0},
                                       features=FeatureConfig(representations=("stft",))),
                             cache=tmp_path / "cache", workers=0, progress=False)
    reasons = {Path(e["path"]).name: e["reason"] for e in result.errors}
    assert set(reasons) == {"huge.wav", "gone.wav", "folder.wav", "pipe.wav"}
    assert "non-finite stft values" in reasons["huge.wav"] and "e+30" in reasons["huge.wav"]
    assert (reasons["gone.wav"], reasons["folder.wav"], reasons["pipe.wav"]) == (
        "dangling symbolic link", "not a regular file (a directory)", "not a regular file (a fifo)")
    s = st.Store(result.store_dir)
    assert len(s) == 6 and np.isfinite(s.read("stft")).all()
    assert sorted(e["clip_id"] for e in s.errors) == sorted(e["clip_id"] for e in result.errors)


# --------------------------------------------------------------------------- #
# Adversarial inputs: checksum, range, provenance, leakage — at every entry point
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def model_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    train(_config(store.directory), out_dir=out, progress=False)
    return out / "checkpoint.pt"


def _shard(store, ckpt_path, name, *, folds=(1, 2), values=None, view=None, sha=None):
    """An adversarial shard written by the store's own writer, as the attack stage writes one."""
    ck = load_checkpoint(ckpt_path)
    rows = store.select(folds=list(folds))[:6]
    with store.reader() as f:
        x = ck.view.read(f, rows).numpy()
    if values is not None:
        x = x.copy()
        x.reshape(-1)[: values.size] = values
    return st.write_adversarial_shard(store.directory, name, arrays={
        "adversarial": x, "clean_index": rows, "label": store.labels[rows], "fold": store.folds[rows],
        "target": (store.labels[rows] + 1) % store.num_classes, "success": np.ones(rows.size, bool),
    }, attrs={"attack": "pgd", "norm": "linf", "budget": 0.1, "fooling_rate": 1.0, "round": 0, "split": "train",
              "store_fingerprint": store.fingerprint, "view": view or ck.view.to_dict(),
              "checkpoint_sha256": sha or st.sha256_file(ckpt_path)})


def _extra(store, ckpt_path, shard, out):
    config = dataclasses.replace(TrainConfig.from_dict(load_checkpoint(ckpt_path).config),
                                 extra_sources=({"path": str(shard)},), mix=0.25)
    return train(config, out_dir=out, progress=False)


def test_adversarial_shards_are_checked_wherever_they_enter_training(store, model_run, tmp_path):
    good = _shard(store, model_run, "t-good")
    try:
        _extra(store, model_run, good, tmp_path / "ok")  # a good shard is used
        cases = {
            "flipped": (None, "checksum mismatch"),
            "range": (dict(values=np.full(16, -31.4, np.float32)), r"inputs in \[-31.4, .*\]; model inputs lie in"),
            "testfold": (dict(folds=(5,)), r"held-out fold\(s\) \[5\]"),
            "view": (dict(view={**load_checkpoint(model_run).view.to_dict(), "name": "dwt+chroma",
                                "output_shape": [1, 64, 64]}), "made in view 'dwt\\+chroma'"),
        }
        for name, (kw, message) in cases.items():
            path = _shard(store, model_run, f"t-{name}", **(kw or {}))
            if name == "flipped":
                _flip(path, size=64, at=path.stat().st_size - 4096)
            for entry in ("train --extra", "retrain --shards"):
                with pytest.raises(StoreError, match=message):
                    if entry == "train --extra":
                        _extra(store, model_run, path, tmp_path / f"{name}-extra")
                    else:
                        retrain_checkpoint(model_run, out_dir=tmp_path / f"{name}-retrain", shards=[path], progress=False)
            path.unlink()
        # A shard made by another checkpoint is not this model's retraining data.
        other = _shard(store, model_run, "t-other", sha="0" * 64)
        with pytest.raises(StoreError, match="made by checkpoint 0000000000"):
            retrain_checkpoint(model_run, out_dir=tmp_path / "other", shards=[other], progress=False)
    finally:
        for p in (store.directory / st.ADVERSARIAL_DIR).glob("t-*"):
            p.unlink()


# --------------------------------------------------------------------------- #
# A full disk: one line naming the file, exit status 2, no temporary left, no native crash
# --------------------------------------------------------------------------- #
def _no_temporaries(root: Path) -> bool:
    return not [p for p in root.rglob("*") if st.is_temporary(p)]


def test_an_injected_enospc_is_a_one_line_store_error(monkeypatch, store, tmp_path):
    import errno

    import h5py

    real = h5py.Group.create_dataset
    calls = {"n": 0}

    def full_disk(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", full_disk)
    config = FeaturizeConfig(dataset="synthetic", dataset_options={"clips_per_class": 2, "n_classes": 2,
                                                                   "duration": 0.5},
                             features=FeatureConfig(representations=("stft",)))
    with pytest.raises(StoreError, match=r"cannot write .*shard-00000\.h5: No space left on device"):
        featurize_store(config, cache=tmp_path / "cache", workers=0, progress=False)
    assert _no_temporaries(tmp_path) and not list((tmp_path / "cache").rglob("shard-*.h5"))
    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    featurize_store(config, cache=tmp_path / "cache", workers=0, progress=False)  # the disk has room again: it resumes

    import torch

    def torch_full(obj, path, *a, **k):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", torch_full)
    with pytest.raises(StoreError, match=r"cannot write .*checkpoint\.pt: \[enforce fail"):
        train(_config(store.directory), out_dir=tmp_path / "run", progress=False)
    assert _no_temporaries(tmp_path / "run") and not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs at tmp_path/disk where this machine lets the tests mount one."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if made.returncode:
        pytest.skip("cannot mount a tmpfs here (the injected-ENOSPC test covers the same paths)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_featurize_and_train_on_a_real_full_disk(tiny_disk, store, capsys):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "advaudio", "featurize", "--dataset", "synthetic",
                           "-o", "clips_per_class=8", "-o", "duration=1.0", "--cache", str(tiny_disk / "cache"),
                           "--workers", "0", "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "No space left on device" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and _no_temporaries(tiny_disk)
    # torch's writer fails cleanly (the HDF5 crash needed the subprocess above): in process.
    with pytest.raises(SystemExit) as info:
        main(["train", "--store", str(store.directory), "--view", "stft", "--model", "resnet18", "--width", "0.5",
              "--input-size", "24x24", "--epochs", "1", "--workers", "0", "--device", "cpu",
              "--out", str(tiny_disk / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "cannot write" in err and len(err.strip().splitlines()) == 1, err
    assert _no_temporaries(tiny_disk) and not (tiny_disk / "run" / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- #
# Two runs on one cache: temporaries by owner, one featurize per store
# --------------------------------------------------------------------------- #
HOLD_LOCK = """
import sys, time
from advaudio import store as st
with st.exclusive_lock(sys.argv[1], what="the store"):
    open(sys.argv[2], "w").write(st.tmp_path_for(sys.argv[3]).name)
    time.sleep(120)
"""


def test_a_second_featurize_is_told_another_is_active_and_spares_its_temporaries(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from advaudio.stages.featurize import plan_featurize

    config = FeaturizeConfig(dataset="synthetic", dataset_options={"clips_per_class": 2, "n_classes": 2,
                                                                   "duration": 0.5},
                             features=FeatureConfig(representations=("stft",)))
    plan = plan_featurize(config, cache=tmp_path / "cache")
    (plan.store_dir / st.SHARD_DIR).mkdir(parents=True)
    marker = tmp_path / "holding"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    # Another process: holds the store's lock and "writes" a temporary shard.
    other = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(plan.store_dir / st.LOCK_NAME), str(marker),
                              str(plan.store_dir / st.SHARD_DIR / "shard-00000.h5")], env=env)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() or not marker.read_text():
            assert other.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        live_tmp = plan.store_dir / st.SHARD_DIR / marker.read_text()
        live_tmp.write_bytes(b"being written")
        dead_tmp = plan.store_dir / st.SHARD_DIR / "shard-00001.h5.tmp-4194304"  # a pid that cannot be running
        dead_tmp.write_bytes(b"left by a killed run")
        assert st.tmp_owner(live_tmp) == (live_tmp.name.split(".tmp-")[1].rsplit("-", 1)[0], other.pid)
        with pytest.raises(StoreError, match=f"another run \\(pid {other.pid} on .*\\) is writing store"):
            featurize_store(config, cache=tmp_path / "cache", workers=0, progress=False)
        assert st.remove_stale_tmp(plan.store_dir / st.SHARD_DIR) == 1
        assert live_tmp.exists() and not dead_tmp.exists()  # the live writer's file is left alone
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    # Its owner killed (the kernel drops its lock): the next run takes over and cleans up.
    result = featurize_store(config, cache=tmp_path / "cache", workers=0, progress=False)
    assert st.Store(result.store_dir) and not live_tmp.exists() and _no_temporaries(tmp_path)


# --------------------------------------------------------------------------- #
# User mistakes: one line, exit status 2
# --------------------------------------------------------------------------- #
def test_mistakes_of_the_issue_are_one_line_errors(model_run, tmp_path, capsys):
    import torch

    from advaudio.errors import ParameterError
    from advaudio.stages.featurize import dask_client

    raw = torch.load(model_run, map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in raw.items() if k not in ("model", "sha256")}, tmp_path / "nomodel.pt")
    flipped = tmp_path / "flipped.pt"
    shutil.copy(model_run, flipped)
    weight = next(v for v in raw["model"]["state_dict"].values() if v.numel() >= 64 and v.dtype == torch.float32)
    _flip(flipped, at=flipped.read_bytes().find(weight.reshape(-1)[:16].numpy().tobytes()), size=64)
    cases = [
        (["evaluate", "--checkpoint", str(tmp_path / "nomodel.pt")], "lacks 'model'"),
        (["evaluate", "--checkpoint", str(flipped)], f"checksum mismatch: checkpoint {flipped}"),
        (["attack", "--checkpoint", str(model_run), "--attacks", "pgd", "-p", "pgd.steps=abc"],
         "pgd.steps must be an integer"),
        (["attack", "--checkpoint", str(model_run), "--attacks", "pgd,pgd"], "pgd given more than once"),
        (["attack", "--checkpoint", str(model_run), "--attacks", "pgd", "-p", "pgd.epsilon=-1"], "pgd.epsilon"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            main(argv + ["--device", "cpu"])
        err = capsys.readouterr().err
        assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    with pytest.raises(ParameterError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
        with dask_client(workers=0, scheduler="tcp://127.0.0.1:1", connect_timeout=1):
            pass
