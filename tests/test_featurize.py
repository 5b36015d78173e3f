"""The featurize stage and the store it writes, end to end on real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from advaudio import store as st
from advaudio.cli import cli, main
from advaudio.datasets import load_clip, read_dataset
from advaudio.errors import StoreError
from advaudio.features import FeatureConfig, compute_features
from advaudio.stages.featurize import FeaturizeConfig, featurize_store, plan_featurize

ESC10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "esc10"
SYNTH = {"clips_per_class": 4, "n_classes": 3, "duration": 1.0}
FEATURES = FeatureConfig(representations=("stft", "dwt", "chroma", "tonnetz"))


def synthetic_config(**kw) -> FeaturizeConfig:
    base = dict(dataset="synthetic", dataset_options=dict(SYNTH), features=FEATURES, shard_size=5)
    base.update(kw)
    return FeaturizeConfig(**base)


def assert_store_matches_direct_computation(store_dir: Path, config: FeaturizeConfig) -> None:
    """Every stored row equals the single-process functions applied to its clip."""
    table = read_dataset(config.dataset, root=config.root, **config.dataset_options)
    by_id = {c.clip_id: c for c in table.clips}
    with h5py.File(store_dir / "store.h5", "r") as f:
        ids = [s.decode() for s in f["meta/clip_id"][:]]
        assert sorted(ids) == sorted(by_id)
        assert json.loads(f.attrs["classes"]) == list(table.classes)
        assert json.loads(f.attrs["config"])["featurize"]["features"]["hop_length"] == config.features.hop_length
        for row, clip_id in enumerate(ids):
            clip = by_id[clip_id]
            assert f["meta/label"][row] == clip.label
            assert f["meta/fold"][row] == clip.fold
            assert f["meta/path"][row].decode() == clip.path
            expected = compute_features(load_clip(table, clip, sr=config.features.sr), config.features)
            for name, array in expected.items():
                np.testing.assert_allclose(f["features"][name][row], array, rtol=1e-5, atol=1e-5)


@pytest.mark.floats
def test_featurize_on_local_dask_cluster_matches_single_process(tmp_path):
    config = synthetic_config()
    result = featurize_store(config, cache=tmp_path, workers=2, progress=False)
    assert result.clips == result.featurized == 12 and result.failed == 0
    assert result.shards_written == 3
    assert result.store_dir.name.startswith("synthetic-")
    assert_store_matches_direct_computation(result.store_dir, config)
    # Per-clip chunks in the shards the virtual datasets point at.
    with h5py.File(result.store_dir / "shards" / "shard-00000.h5", "r") as f:
        ds = f["features/stft"]
        assert ds.chunks == (1,) + ds.shape[1:]
    with h5py.File(result.store_dir / "store.h5", "r") as f:
        assert f["features/stft"].is_virtual
    manifest = json.loads((result.store_dir / "manifest.json").read_text())
    assert [s["clips"] for s in manifest["shards"]] == [5, 5, 2]
    for entry in manifest["shards"]:
        assert st.sha256_file(result.store_dir / entry["file"]) == entry["sha256"]
    # A second run finds the finished store and recomputes nothing.
    again = featurize_store(config, cache=tmp_path, workers=0, progress=False)
    assert again.already_complete and again.store_dir == result.store_dir


def test_changed_parameter_or_input_makes_a_new_store(tmp_path):
    a = plan_featurize(synthetic_config(), cache=tmp_path)
    same = plan_featurize(synthetic_config(), cache=tmp_path)
    hop = plan_featurize(
        synthetic_config(features=FeatureConfig(representations=FEATURES.representations, hop_length=256)),
        cache=tmp_path,
    )
    more = plan_featurize(synthetic_config(dataset_options={**SYNTH, "clips_per_class": 5}), cache=tmp_path)
    seed = plan_featurize(synthetic_config(dataset_options={**SYNTH, "seed": 7}), cache=tmp_path)
    assert a.store_dir == same.store_dir
    assert len({a.store_dir, hop.store_dir, more.store_dir, seed.store_dir}) == 4


def _write_folder_dataset(root: Path, *, bad: bool) -> None:
    rng = np.random.default_rng(0)
    sr = 16000
    t = np.arange(sr) / sr
    for c, freq in enumerate((440.0, 1500.0)):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for i in range(3):
            y = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.05 * i) * t) + 0.01 * rng.standard_normal(sr)
            sf.write(d / f"clip{i}.wav", y.astype(np.float32), sr, subtype="PCM_16")
    if bad:
        (root / "class0" / "corrupt.wav").write_bytes(b"RIFF" + os.urandom(200))
        (root / "class1" / "empty.wav").write_bytes(b"")
        sf.write(root / "class1" / "silent.wav", np.zeros(sr, np.float32), sr)


def test_bad_clips_are_recorded_and_the_rest_goes_on(tmp_path):
    root = tmp_path / "data"
    _write_folder_dataset(root, bad=True)
    args = ["featurize", "--dataset", "folder", "--root", str(root), "--cache", str(tmp_path / "cache"),
            "--workers", "0", "--features", "stft,dwt", "-o", "duration=1.0", "--no-progress"]
    runner = CliRunner()
    failed = runner.invoke(cli, args)
    assert failed.exit_code == 1, failed.output
    last = failed.output.strip().splitlines()[-1]
    assert Path(last).is_dir() and "3 failed" in failed.output
    store = st.Store(last)
    assert len(store) == 6
    reasons = {Path(e["path"]).name: e["reason"] for e in store.errors}
    assert set(reasons) == {"corrupt.wav", "empty.wav", "silent.wav"}
    assert "silent" in reasons["silent.wav"] and "empty" in reasons["empty.wav"]
    # --allow-errors: same store, exit 0.
    ok = runner.invoke(cli, args + ["--allow-errors"])
    assert ok.exit_code == 0 and ok.output.strip().splitlines()[-1] == last
    info = runner.invoke(cli, ["store", "info", last, "--json"])
    assert info.exit_code == 0
    assert len(json.loads(info.output)["errors"]) == 3


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "advaudio", *args], capture_output=True, text=True, **kw)


@pytest.mark.floats
def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    opts = ["-o", "clips_per_class=6", "-o", "n_classes=3", "-o", "duration=1.0",
            "--features", "stft,chroma,tonnetz", "--shard-size", "2", "--workers", "0", "--no-progress"]
    killed_cache = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "advaudio", "featurize", "--cache", str(killed_cache), *opts],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        done = list(killed_cache.glob("*/shards/shard-*.h5"))
        if len(done) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store_dir = next(killed_cache.iterdir())
    assert not (store_dir / "store.h5").exists(), "killed too late to test resuming"
    with pytest.raises(StoreError, match="not a complete feature store"):
        st.Store(store_dir)
    # A writer killed mid-shard leaves a temporary that must never be taken as good.
    (store_dir / "shards" / "shard-00008.h5.tmp-4242").write_bytes(b"partial")
    finished_before = {p.name: p.stat().st_mtime_ns for p in (store_dir / "shards").glob("shard-*.h5")}

    resumed = _run_cli(["featurize", "--cache", str(killed_cache), *opts])
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished_before)} resumed" in resumed.stdout
    assert not list((store_dir / "shards").glob("*.tmp-*"))
    for name, mtime in finished_before.items():  # finished shards were not redone
        assert (store_dir / "shards" / name).stat().st_mtime_ns == mtime

    fresh = _run_cli(["featurize", "--cache", str(tmp_path / "fresh"), *opts])
    assert fresh.returncode == 0, fresh.stderr
    fresh_dir = Path(fresh.stdout.strip().splitlines()[-1])
    assert fresh_dir.name == store_dir.name
    a, b = st.Store(store_dir), st.Store(fresh_dir)
    assert list(a.clip_ids) == list(b.clip_ids) and np.array_equal(a.labels, b.labels)
    for name in a.representations:
        np.testing.assert_array_equal(a.read(name), b.read(name))
    assert json.loads((store_dir / "manifest.json").read_text())["shards"] == \
        json.loads((fresh_dir / "manifest.json").read_text())["shards"]


def test_store_info_verify_and_missing_shard(tmp_path):
    result = featurize_store(synthetic_config(features=FeatureConfig(representations=("stft",))),
                             cache=tmp_path, workers=0, progress=False)
    runner = CliRunner()
    out = runner.invoke(cli, ["store", "info", str(result.store_dir), "--verify"])
    assert out.exit_code == 0, out.output
    assert "stft" in out.output and "513 bands" in out.output and "verify       ok" in out.output
    shard = result.store_dir / "shards" / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = runner.invoke(cli, ["store", "info", str(result.store_dir), "--verify"])
    assert bad.exit_code == 1 and "checksum mismatch: shards/shard-00001.h5" in bad.output
    shard.unlink()
    with pytest.raises(StoreError, match="missing shard files"):
        st.Store(result.store_dir)


def test_user_errors_are_one_line_with_exit_status_2(tmp_path, capsys):
    for argv in (
        ["featurize", "--dataset", "esc50", "--root", str(tmp_path / "nowhere"), "--cache", str(tmp_path)],
        ["featurize", "--features", "stft,mfcc", "--cache", str(tmp_path)],
        ["store", "info", str(tmp_path / "nostore")],
        ["featurize", "--folds", "9", "--cache", str(tmp_path)],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("advaudio: error:") and len(err.splitlines()) == 1, err


def test_datasets_no_classifier_can_use_are_refused_before_featurizing(tmp_path, capsys):
    """Issue 18: one class, or a class name with a newline, was featurized (only train refused one class)."""
    tone = (0.1 * np.sin(np.linspace(0, 200, 8000))).astype(np.float32)
    single, odd = tmp_path / "single", tmp_path / "odd"
    for root, names in ((single, ["dog"]), (odd, ["dog", "rain\nfall"])):
        for name in names:
            (root / name).mkdir(parents=True)
            sf.write(root / name / "a.wav", tone, 8000)
    cases = [(single, "has clips of 1 class ('dog'): a classifier needs at least 2"),
             (odd, "class name 'rain\\nfall' is empty or holds a control character")]
    for root, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(["featurize", "--dataset", "folder", "--root", str(root), "--cache", str(tmp_path / "cache"),
                  "--workers", "0", "--no-progress", "-o", "duration=0.5"])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "cache").exists()  # refused before any store was made


@pytest.mark.realdata
def test_real_esc10_subset_featurizes(tmp_path):
    if not ESC10.is_dir():
        pytest.skip(f"real ESC-10 copy not found at {ESC10}")
    config = FeaturizeConfig(dataset="esc10", root=str(ESC10), folds=(1,), limit_per_class=1,
                             features=FEATURES, shard_size=4)
    result = featurize_store(config, cache=tmp_path, workers=0, progress=False)
    assert result.featurized == 10 and result.failed == 0
    store = st.Store(result.store_dir)
    assert store.num_classes == 10 and set(store.folds) == {1}
    frames = 1 + int(5.0 * 22050) // 512
    assert store.representations["stft"].shape == (513, frames)
    assert store.representations["dwt"].shape == (128, frames)
    assert store.representations["chroma"].shape == (12, frames)
    assert store.representations["tonnetz"].shape == (6, frames)
    assert np.isfinite(store.read("chroma")).all()
