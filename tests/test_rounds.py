"""Retraining with adversarial shards, the round loop, and the report on top of it."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advaudio import store as st
from advaudio.cli import main
from advaudio.errors import StoreError
from advaudio.features import FeatureConfig
from advaudio.stages.attack import AttackStageConfig, attack_stage
from advaudio.stages.featurize import FeaturizeConfig, featurize_store
from advaudio.stages.retrain import RetrainConfig, retrain_checkpoint
from advaudio.training import TrainConfig, load_checkpoint, train

SYNTH = {"clips_per_class": 8, "n_classes": 3, "duration": 1.0}
# --allow-unreached: on these tiny models an attack may stop short of the threshold (exit status 1 otherwise)
ROUND_ARGS = ["--attacks", "fgsm,deepfool", "--fooling-rate", "0.6", "--limit", "6", "--train-limit", "12",
              "--epochs", "1", "--no-progress", "--allow-unreached"]


def _base_run(directory: Path, store_dir: Path) -> Path:
    train(TrainConfig(store=str(store_dir), view="stft", model="resnet18", width=0.125, input_size=(32, 32),
                      epochs=3, workers=0, seed=0), out_dir=directory, progress=False)
    return directory


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    result = featurize_store(FeaturizeConfig(dataset="synthetic", dataset_options=SYNTH,
                                       features=FeatureConfig(representations=("stft",))),
                             cache=tmp_path_factory.mktemp("cache"), workers=0, progress=False)
    return result.store_dir


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advaudio", *args], capture_output=True, text=True, timeout=600)


def test_retrain_records_its_shards_and_refuses_test_fold_shards(store_dir, tmp_path, capsys):
    run = _base_run(tmp_path / "run", store_dir)
    ckpt = run / "checkpoint.pt"
    config = AttackStageConfig(attacks=("fgsm", "deepfool"), threshold=0.5, limit=12)
    test_doc = attack_stage(config, checkpoint=ckpt, progress=False)
    train_doc = attack_stage(AttackStageConfig(attacks=("fgsm", "deepfool"), threshold=0.5, split="train"),
                             checkpoint=ckpt, progress=False)

    test_shard = test_doc["attacks"][0]["shard"]
    with pytest.raises(StoreError, match="held-out fold"):
        retrain_checkpoint(ckpt, out_dir=tmp_path / "leak", shards=[test_shard], progress=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["retrain", "--checkpoint", str(ckpt), "--shards", test_shard, "--out", str(tmp_path / "leak2")])
    assert exit_info.value.code == 2 and "held-out fold" in capsys.readouterr().err

    metrics = retrain_checkpoint(ckpt, out_dir=tmp_path / "round01", config=RetrainConfig(epochs=1, mix=0.5), progress=False)
    assert metrics["round"] == 1 and metrics["complete"]
    new = load_checkpoint(tmp_path / "round01" / "checkpoint.pt")
    provenance = new.config["provenance"]
    used = {r["attack"]: r for r in provenance["shards"]}
    assert set(used) == {"fgsm", "deepfool"}
    for record in train_doc["attacks"]:
        assert used[record["attack"]]["path"] == str(Path(record["shard"]).resolve())
        assert used[record["attack"]]["budget"] == pytest.approx(record["budget"])
        assert used[record["attack"]]["sha256"] == st.sha256_file(record["shard"])
    assert provenance["parent_sha256"] == st.sha256_file(ckpt)
    assert new.config["mix"] == 0.5 and len(new.config["extra_sources"]) == 2


def test_two_rounds_through_the_cli_and_the_report_agrees(store_dir, tmp_path):
    run = _base_run(tmp_path / "run", store_dir)
    done = _cli("rounds", str(run), "--rounds", "2", *ROUND_ARGS)
    assert done.returncode == 0, done.stderr
    expected = [run / "attack-round00-test.json", run / "attack-round00-train.json",
                run / "round01" / "checkpoint.pt", run / "round01" / "attack-round01-test.json",
                run / "round01" / "attack-round01-train.json", run / "round02" / "checkpoint.pt",
                run / "round02" / "attack-round02-test.json"]
    assert all(p.is_file() for p in expected), [str(p) for p in expected if not p.is_file()]
    assert load_checkpoint(run / "round02" / "checkpoint.pt").config["provenance"]["round"] == 2

    out = tmp_path / "report"
    rep = _cli("report", str(run), "--out", str(out), "--max-clips", "1")
    assert rep.returncode == 0, rep.stderr
    assert rep.stdout.strip().splitlines()[-1] == str(out / "report.md")
    values = json.loads((out / "report.json").read_text())["values"]

    def reported(metric, round, attack=""):
        hits = [v for v in values if v["metric"] == metric and v["round"] == round and (v["attack"] or "") == attack
                and v.get("split", "test") in ("test", "", None)]
        assert hits, (metric, round, attack)
        return hits[0]["value"]

    for k, directory in enumerate([run, run / "round01", run / "round02"]):
        metrics = json.loads((directory / "metrics.json").read_text())
        assert reported("clean_test_accuracy", k) == pytest.approx(metrics["test_accuracy"])
        attacks = json.loads((directory / f"attack-round{k:02d}-test.json").read_text())["attacks"]
        for record in attacks:
            if record["budget"] is not None:
                assert reported("budget", k, record["attack"]) == pytest.approx(record["budget"])
            assert reported("fooling_rate", k, record["attack"]) == pytest.approx(record["fooling_rate"])


@pytest.mark.floats
def test_rounds_resume_after_a_kill(store_dir, tmp_path):
    run = _base_run(tmp_path / "run", store_dir)
    proc = subprocess.Popen([sys.executable, "-m", "advaudio", "rounds", str(run), "--rounds", "1",
                             *ROUND_ARGS], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = run / "attack-round00-test.json"
    deadline = time.time() + 300
    while time.time() < deadline and not first.is_file():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.is_file(), "the first step did not finish in time"
    mtime = first.stat().st_mtime_ns
    assert not (run / "round01" / "attack-round01-test.json").exists()

    resumed = _cli("rounds", str(run), "--rounds", "1", *ROUND_ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert re.search(r"round 0 attack-test +skipped", resumed.stdout), resumed.stdout
    assert first.stat().st_mtime_ns == mtime
    assert (run / "round01" / "attack-round01-test.json").is_file()
    assert json.loads((run / "round01" / "metrics.json").read_text())["complete"]


@pytest.mark.floats
def test_resuming_a_finished_run_leaves_its_checkpoint_unchanged(store_dir, tmp_path):
    run = _base_run(tmp_path / "run", store_dir)
    digest = st.sha256_file(run / "checkpoint.pt")
    again = _cli("train", "--store", str(store_dir), "--view", "stft", "--model", "resnet18", "--width", "0.125",
                 "--input-size", "32x32", "--epochs", "3", "--workers", "0", "--out", str(run), "--resume",
                 "--no-progress")
    assert again.returncode == 0, again.stderr
    # Shards and results are keyed by the checkpoint's sha256: it must not change.
    assert st.sha256_file(run / "checkpoint.pt") == digest


def test_demo_runs_the_whole_loop_and_resumes(tmp_path):
    from advaudio.stages.demo import DemoConfig, run_demo

    config = DemoConfig(clips_per_class=6, features=("stft", "chroma"), width=0.125, input_size=(32, 32),
                        epochs=2, attacks=("fgsm", "deepfool"), threshold=0.6, test_limit=8, train_limit=16,
                        retrain_epochs=1, workers=0)
    report = run_demo(config, out=tmp_path, progress=False)
    assert report == tmp_path / "report" / "report.md" and report.is_file()
    run = tmp_path / "runs" / "synthetic-resnet18-stft"
    for name in ("checkpoint.pt", "attack-round00-test.json", "attack-round00-train.json",
                 "round01/checkpoint.pt", "round01/attack-round01-test.json"):
        assert (run / name).is_file(), name
    values = json.loads((tmp_path / "report" / "report.json").read_text())["values"]
    assert {v["round"] for v in values if v["metric"] == "clean_test_accuracy"} == {0, 1}
    # A second call finds every step done and changes no checkpoint.
    digest = st.sha256_file(run / "round01" / "checkpoint.pt")
    run_demo(config, out=tmp_path, progress=False)
    assert st.sha256_file(run / "round01" / "checkpoint.pt") == digest
