"""The attack stage: shards written back into the store, checked against the model."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from advaudio import progress
from advaudio import store as st
from advaudio.attacks import perturbation_norms
from advaudio.cli import cli, main
from advaudio.errors import ParameterError, StoreError
from advaudio.features import FeatureConfig
from advaudio.stages.attack import AttackStageConfig, attack_stage, choose_rows
from advaudio.stages.featurize import FeaturizeConfig, featurize_store
from advaudio.training import TrainConfig, load_checkpoint, train

SYNTH = {"clips_per_class": 10, "n_classes": 4, "duration": 1.0}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny real store and a tiny model trained on it (module-wide, a few seconds)."""
    base = tmp_path_factory.mktemp("adv")
    result = featurize_store(FeaturizeConfig(dataset="synthetic", dataset_options=SYNTH,
                                       features=FeatureConfig(representations=("stft", "chroma"))),
                             cache=base / "cache", workers=0, progress=False)
    run = base / "run"
    train(TrainConfig(store=str(result.store_dir), view="stft", model="resnet18", width=0.125,
                      input_size=(32, 32), epochs=4, workers=0, seed=0), out_dir=run, progress=False)
    return result.store_dir, run / "checkpoint.pt"


@pytest.fixture(scope="module")
def attacked(trained):
    store_dir, ckpt = trained
    doc = attack_stage(AttackStageConfig(attacks=("pgd", "deepfool"), threshold=0.75, seed=3),
                       checkpoint=ckpt, progress=False)
    return doc


def test_shards_replay_to_their_recorded_predictions(trained, attacked):
    store_dir, ckpt_path = trained
    ckpt = load_checkpoint(ckpt_path)
    store = st.Store(store_dir)
    shards = store.adversarial_shards()
    assert {p.name.split("-")[-1] for p in shards} == {"pgd.h5", "deepfool.h5"}
    assert store.verify() == []
    for record in attacked["attacks"]:
        path = Path(record["shard"])
        with h5py.File(path, "r") as f:
            adv = torch.from_numpy(f["adversarial"][:])
            rows = f["clean_index"][:]
            predicted, success, target = f["predicted"][:], f["success"][:], f["target"][:]
            label = f["label"][:]
            norms = {k: f[k][:] for k in ("l1", "l2", "linf", "snr_db")}
            attrs = dict(f.attrs)
        # Attack on the checkpoint's test fold only.
        assert set(store.folds[rows]) == {ckpt.test_fold}
        assert np.array_equal(label, store.labels[rows])
        assert adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            replay = ckpt.model(adv).argmax(1).numpy()
        np.testing.assert_array_equal(replay, predicted)
        if record["targeted"]:
            assert np.all(replay[success] == target[success]) and np.all(target != label)
        else:
            assert np.all(replay[success] != label[success]) and np.all(target == -1)
        # Stored norms equal norms recomputed from the shard and the clean inputs.
        clean = ckpt.view.read(store.reader(), rows)
        again = perturbation_norms(clean, adv)
        for key in ("l1", "l2", "linf"):
            np.testing.assert_allclose(norms[key], again[key], rtol=1e-5, atol=1e-6)
        # The recorded budget is the one the results JSON reports, and it holds.
        assert attrs["budget"] == pytest.approx(record["budget"])
        assert attrs["checkpoint_sha256"] == st.sha256_file(ckpt_path)
        if record["kind"] == "fixed-budget":  # per-clip search: each clip within its minimal ε
            with h5py.File(path, "r") as f:
                within_budget, minimal = f["within_budget"][:], f["minimal_budget"][:]
            assert record["search"] == "per-clip" and np.all(minimal[success] <= record["budget"]) == \
                bool(within_budget[success].all())
            assert np.all(norms[record["norm"]][within_budget] <= record["budget"] * (1 + 1e-4) + 1e-6)
            assert np.all(norms[record["norm"]][success] <= minimal[success] * (1 + 1e-4) + 1e-6)
        fooled = success.sum() / max(1, int(np.asarray(h5py.File(path, "r")["attacked"][:]).sum()))
        assert fooled >= 0.75 or not record["reached"]


def test_results_json_and_store_info_list_the_shards(trained, attacked):
    store_dir, ckpt_path = trained
    results = json.loads(Path(attacked["results_path"]).read_text())
    assert results["checkpoint_sha256"] == st.sha256_file(ckpt_path)
    assert [r["attack"] for r in results["attacks"]] == ["pgd", "deepfool"]
    info = CliRunner().invoke(cli, ["store", "info", str(store_dir), "--json"])
    listed = json.loads(info.output)["adversarial_shards"]
    assert sorted(Path(r["shard"]).name for r in results["attacks"]) == sorted(Path(p).name for p in listed)


def test_limit_and_slices_partition_the_rows():
    rows = np.arange(100, 160)
    picked = choose_rows(rows, limit=13, slice=None)
    assert len(picked) == 13 and picked[0] == 100 and picked[-1] == 159
    parts = [choose_rows(rows, limit=13, slice=(i, 3)) for i in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), picked)


def test_mismatched_store_and_bad_arguments_are_clear_errors(trained, tmp_path, capsys):
    store_dir, ckpt = trained
    other = featurize_store(FeaturizeConfig(dataset="synthetic", dataset_options={**SYNTH, "seed": 9},
                                      features=FeatureConfig(representations=("stft",))),
                            cache=tmp_path, workers=0, progress=False)
    with pytest.raises(StoreError, match="was made from store"):
        attack_stage(AttackStageConfig(attacks=("fgsm",)), checkpoint=ckpt, store=other.store_dir, progress=False)
    with pytest.raises(ParameterError, match="unknown attack"):
        AttackStageConfig(attacks=("pgd", "nope"))
    for argv in (
        ["attack", "--checkpoint", str(ckpt), "--store", str(other.store_dir), "--attacks", "fgsm"],
        ["attack", "--checkpoint", str(ckpt), "--attacks", "fgsm", "--slice", "3/2"],
        ["attack", "--checkpoint", str(tmp_path / "missing.pt")],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err


def test_killed_attack_registers_no_shard(trained, tmp_path):
    store_dir, ckpt = trained
    before = set(st.Store(store_dir).adversarial_shards())
    proc = subprocess.Popen(
        [sys.executable, "-m", "advaudio", "attack", "--checkpoint", str(ckpt), "--attacks", "cw",
         "-p", "cw.steps=100000", "--allow-expensive", "--round", "7", "--out", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    line = ""
    while time.time() < deadline and "attack cw" not in line:
        line = proc.stderr.readline()
    time.sleep(1.0)  # well inside the attack's optimisation
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert "attack cw" in line
    store = st.Store(store_dir)
    assert set(store.adversarial_shards()) == before
    assert not list(tmp_path.glob("attack-round07-*.json"))
    # A temporary left by a writer killed mid-write is never taken as a shard.
    leftover = store_dir / st.ADVERSARIAL_DIR / "round07-test-0000000000-cw.h5.tmp-999"
    leftover.write_bytes(b"partial")
    assert set(store.adversarial_shards()) == before
    leftover.unlink()


@pytest.mark.parametrize(
    "param, message",
    [
        ("pgd.regularization=1", "pgd has no parameter regularization; it takes norm, epsilon, steps, step_size, "
                                 "random_start (and, like every attack, targeted, target_rule, seed)"),
        ("pgd.steps=abc", "pgd.steps must be an integer, got 'abc'"),
        ("pgd.epsilon=-1", "pgd.epsilon must be finite and >= 0, got -1.0"),
        ("pgd.steps=0", "pgd.steps must be >= 1, got 0"),
    ],
)
def test_attack_parameters_are_refused_before_any_work(tmp_path, capsys, param, message):
    # no checkpoint exists: the parameters fail first, as one line, exit status 2
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "--checkpoint", str(tmp_path / "none.pt"), "--attacks", "pgd", "-p", param])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and message in err and len(err.splitlines()) == 1, err
    with pytest.raises(ParameterError, match="pgd has no parameter"):
        AttackStageConfig(attacks=("pgd",), attack_params={"pgd": {"regularization": 1}})
    config = AttackStageConfig(attacks=("pgd", "cw"), seed=4, attack_params={"cw": {"steps": 3, "seed": 5}})
    assert config.attack_config("pgd").seed == 4 and config.attack_config("pgd").params.steps == 40
    assert config.attack_config("cw").seed == 5 and config.attack_config("cw").params.steps == 3


def test_the_stage_shows_the_attacks_progress_lines_only_with_progress(trained, tmp_path, capsys, monkeypatch):
    """Long attacks say how far they are (chunks of clips attacked; cw/ead: constants) on standard
    error while the stage runs with progress; without it, and after it, nothing."""
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)  # every line due: no 30 s wait in a test
    store_dir, ckpt = trained
    cfg = AttackStageConfig(attacks=("deepfool",), threshold=0.5, round=6, batch_size=1, checks=False)
    doc = attack_stage(cfg, checkpoint=ckpt, out_dir=tmp_path / "a", progress=True)
    n = doc["attacks"][0]["n_samples"] - doc["attacks"][0]["n_excluded"]  # the attacked clips
    lines = [line.split(" (")[0] for line in capsys.readouterr().err.splitlines() if line.startswith("deepfool: ")]
    assert n >= 2 and lines == [f"deepfool: {k} of {n} clips attacked" for k in range(1, n + 1)]  # a chunk each
    attack_stage(cfg, checkpoint=ckpt, out_dir=tmp_path / "b", progress=False)
    assert "clips attacked" not in capsys.readouterr().err
    assert not logging.getLogger("advaudio.attacks").handlers


def test_a_shard_described_by_another_results_file_is_not_replaced(trained, tmp_path):
    """`attack --out elsewhere` would replace a shard whose first results file still describes it."""
    store_dir, ckpt = trained
    first = attack_stage(AttackStageConfig(attacks=("deepfool",), threshold=0.5, round=5, limit=4),
                         checkpoint=ckpt, out_dir=tmp_path / "a", progress=False)
    shard = Path(first["attacks"][0]["shard"])
    before = st.sha256_file(shard)
    with pytest.raises(StoreError, match=r"belongs to the results in .*attack-round05-test\.json, made with other"):
        attack_stage(AttackStageConfig(attacks=("deepfool",), threshold=0.5, round=5, limit=2),
                     checkpoint=ckpt, out_dir=tmp_path / "b", progress=False)
    assert st.sha256_file(shard) == before and not (tmp_path / "b" / "attack-round05-test.json").exists()
    again = attack_stage(AttackStageConfig(attacks=("deepfool",), threshold=0.5, round=5, limit=4),
                         checkpoint=ckpt, out_dir=tmp_path / "a", progress=False)  # the same run may redo it
    assert again["attacks"][0]["n_samples"] == 4
    (tmp_path / "a" / "attack-round05-test.json").unlink()  # its results gone: the shard is free again
    attack_stage(AttackStageConfig(attacks=("deepfool",), threshold=0.5, round=5, limit=2),
                 checkpoint=ckpt, out_dir=tmp_path / "b", progress=False)
    assert st.AdversarialShard.open(shard).size == 2
    # the same settings from a third directory rewrite the same clips: allowed
    attack_stage(AttackStageConfig(attacks=("deepfool",), threshold=0.5, round=5, limit=2, batch_size=1),
                 checkpoint=ckpt, out_dir=tmp_path / "c", progress=False)


def test_the_stage_records_its_batch_size_precision_and_per_clip_brackets(trained, attacked):
    """batch_size None: chosen for the device (64 on CPU) and recorded; the per-clip search's
    precision (unsliced: "quantile") and each clip's bracket are in the results and the shard."""
    assert AttackStageConfig().batch_size is None
    assert attacked["batch_size"] == 64 and attacked["config"]["batch_size"] is None
    assert attacked["precision"] == "quantile"
    (pgd,) = [r for r in attacked["attacks"] if r["attack"] == "pgd"]
    tol = pgd["tolerance"]
    assert tol["precision"] == "quantile" and tol["budget_low"] < pgd["budget"]
    assert pgd["budget"] - tol["budget_low"] <= tol["rtol"] * pgd["budget"] * (1 + 1e-9) and pgd["converged"]
    with h5py.File(pgd["shard"], "r") as f:
        lo, hi, att = f["minimal_budget_low"][:], f["minimal_budget"][:], f["attacked"][:]
        assert f.attrs["precision"] == "quantile" and f.attrs["budget_low"] == tol["budget_low"]
    assert np.all(lo[att] < hi[att]) and np.all(np.isnan(lo[~att]))
    k = int(np.ceil(0.75 * att.sum() - 1e-9))
    assert np.sort(lo[att])[k - 1] == tol["budget_low"] and np.sort(hi[att])[k - 1] == pgd["budget"]
    # a slice defaults to "clip" (batch-independent brackets), an explicit precision wins
    assert AttackStageConfig(slice=(0, 2)).search_precision() == "clip"
    assert AttackStageConfig(slice=(0, 2), precision="quantile").search_precision() == "quantile"
    with pytest.raises(ParameterError, match="precision"):
        AttackStageConfig(precision="exact")
    with pytest.raises(ParameterError, match="batch_size"):
        AttackStageConfig(batch_size=0)


def test_cli_batch_size_is_auto_or_a_positive_integer(trained, tmp_path):
    store_dir, ckpt = trained
    runner = CliRunner()
    bad = runner.invoke(cli, ["attack", "--checkpoint", str(ckpt), "--batch-size", "many"])
    assert bad.exit_code == 2 and "neither auto nor an integer" in bad.output
    bad = runner.invoke(cli, ["attack", "--checkpoint", str(ckpt), "--batch-size", "0"])
    assert bad.exit_code == 2 and "must be auto or >= 1" in bad.output
    for value, expected in (("auto", 64), ("5", 5)):
        out = tmp_path / value
        res = runner.invoke(cli, ["attack", "--checkpoint", str(ckpt), "--attacks", "fgsm", "--limit", "6",
                                  "--batch-size", value, "--no-checks", "--no-progress", "--allow-unreached",
                                  "--out", str(out)])
        assert res.exit_code == 0, res.output
        doc = json.loads(next(out.glob("attack-*.json")).read_text())
        assert doc["batch_size"] == expected
