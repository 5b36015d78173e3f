"""Every file a stage trusts is checked: store.h5, manifest.json, metrics.json, attack results.

The files are written by the library itself (a tiny store, a model trained on it, an
attack on it), then damaged for real — a byte flipped on disk, a value edited, a file
replaced, truncated or linked to a device — and every stage that reads them is run
through the CLI: one line on standard error, exit status 2, no traceback; or, where a
stage can do without the file (``report``), a warning that names it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from advaudio import store as st
from advaudio.cli import main
from advaudio.errors import DamagedFileError, StoreError
from advaudio.features import FeatureConfig
from advaudio.stages.featurize import FeaturizeConfig, featurize_store
from advaudio.store.documents import read_attack_results, read_metrics
from advaudio.training import TrainConfig, train

CONFIG = FeaturizeConfig(dataset="synthetic", dataset_options={"clips_per_class": 8, "n_classes": 3, "duration": 0.5},
                         features=FeatureConfig(representations=("stft",)), shard_size=8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A private store, a model trained on it (fold 5 held out) and an FGSM attack on its test fold."""
    base = tmp_path_factory.mktemp("integrity")
    result = featurize_store(CONFIG, cache=base / "cache", workers=0, progress=False)
    run_dir = base / "run"
    train(TrainConfig(store=str(result.store_dir), view="stft", model="resnet18", width=0.125, input_size=(24, 24),
                      test_fold=5, epochs=1, batch_size=8, workers=0, seed=0, device="cpu"),
          out_dir=run_dir, progress=False)
    from advaudio.stages.attack import AttackStageConfig, attack_stage

    attack_stage(AttackStageConfig(attacks=("fgsm",), limit=4, checks=False), checkpoint=run_dir / "checkpoint.pt",
                 device="cpu", progress=False)
    return {"base": base, "store": result.store_dir, "run": run_dir, "checkpoint": run_dir / "checkpoint.pt"}


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit status, stdout, stderr). An uncaught exception (a traceback) fails the test."""
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_refusal(code: int, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("advaudio: error: "), err
    for needle in needles:
        assert needle in lines[0], err


def _flip_dataset_bytes(master: Path, dataset: str, *, value_index: int = 0) -> None:
    """Flip low bits of one value of ``dataset`` in ``master`` on disk (not through HDF5: as a bad sector would)."""
    with h5py.File(master, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_offset() + value_index * ds.dtype.itemsize
    data = bytearray(master.read_bytes())
    data[offset] ^= 0x03  # fold 1 → 2, 2 → 1, …: still a plausible fold
    master.write_bytes(bytes(data))


@pytest.fixture
def restored(run):
    """Whatever a test damages in the module's store and run directory is put back afterwards."""
    saved = {p: p.read_bytes() for p in [run["store"] / st.MASTER_NAME, run["store"] / st.MANIFEST_NAME,
                                          *run["run"].glob("*.json")]}
    yield run
    for p, data in saved.items():
        p.unlink(missing_ok=True)
        p.write_bytes(data)


# --------------------------------------------------------------------------- #
# store.h5: its labels and folds decide which clips are test clips
# --------------------------------------------------------------------------- #
def test_a_flipped_fold_in_store_h5_is_refused_by_train_attack_and_report(restored, tmp_path, capsys):
    run = restored
    master = run["store"] / st.MASTER_NAME
    folds = st.Store(run["store"]).folds.copy()
    _flip_dataset_bytes(master, "meta/fold")
    with h5py.File(master, "r") as f:  # HDF5 itself reads the damaged value without complaint
        assert f["meta/fold"][0] != folds[0]
    mismatch = f"checksum mismatch: {master}"
    code, _, err = _cli(["train", "--store", str(run["store"]), "--view", "stft", "--model", "resnet18",
                         "--width", "0.125", "--input-size", "24", "--epochs", "1", "--out", str(tmp_path / "t"),
                         "--no-progress"], capsys)
    _one_line_refusal(code, err, mismatch)
    assert not (tmp_path / "t" / "checkpoint.pt").exists()
    code, _, err = _cli(["attack", "--checkpoint", str(run["checkpoint"]), "--attacks", "fgsm", "--limit", "2",
                         "--out", str(tmp_path / "a"), "--device", "cpu", "--no-progress"], capsys)
    _one_line_refusal(code, err, mismatch)
    assert not (tmp_path / "a").exists() or not list((tmp_path / "a").glob("*.json"))
    code, _, err = _cli(["report", str(run["run"]), "--out", str(tmp_path / "r"), "--no-listen"], capsys)
    _one_line_refusal(code, err, mismatch)
    # store info --verify opens it anyway to say what is wrong, and exits 1
    code, out, _ = _cli(["store", "info", str(run["store"]), "--verify"], capsys)
    assert code == 1 and "verify       checksum mismatch: store.h5" in out


def test_a_replaced_manifest_is_refused_and_listed_by_verify(restored, capsys):
    run = restored
    manifest = run["store"] / st.MANIFEST_NAME
    manifest.write_text('{"a": NaN, "clips": "x"}')
    code, _, err = _cli(["store", "info", str(run["store"])], capsys)
    _one_line_refusal(code, err, f"checksum mismatch: {manifest}")
    code, out, _ = _cli(["store", "info", str(run["store"]), "--verify"], capsys)
    verify = next(line for line in out.splitlines() if line.startswith("verify"))
    assert code == 1 and "checksum mismatch: manifest.json" in verify and "not readable JSON" in verify
    # A manifest that is valid JSON but not a manifest is refused by its schema too, digest or not.
    manifest.write_text(json.dumps({"fingerprint": "x", "dataset": "synthetic", "clips": 3, "shards": "x"}))
    with pytest.raises(DamagedFileError, match="shards must be a list"):
        st.check_manifest(json.loads(manifest.read_text()), manifest)
    problems = st.Store(run["store"], check=False).verify()
    assert problems[0] == "checksum mismatch: manifest.json" and "shards must be a list" in problems[1]


def test_a_manifest_entry_pointing_outside_the_store_is_refused(tmp_path):
    entry = {"fingerprint": "f", "dataset": "d", "clips": 1,
             "shards": [{"file": "../../etc/passwd", "clips": 1, "sha256": "0" * 64}]}
    with pytest.raises(DamagedFileError, match=r"shards\[0\].file must be a path inside the store"):
        st.check_manifest(entry, tmp_path / "manifest.json")


def test_a_store_of_an_earlier_release_opens_and_featurize_records_its_digests(run, tmp_path, capsys):
    copy = Path(shutil.copytree(run["store"], tmp_path / "cache" / run["store"].name))
    before = st.Store(copy)
    with h5py.File(copy / st.MASTER_NAME, "r+") as f:  # what the previous release wrote: no digests
        del f.attrs[st.DIGEST_KEY]
        del f.attrs["manifest_sha256"]
    old = st.Store(copy)
    assert not old.sealed and (old.folds == before.folds).all()
    code, out, _ = _cli(["store", "info", str(copy), "--verify"], capsys)
    assert code == 0 and "checksums    shards only" in out and "verify       ok" in out
    # Unsealed, a flipped fold would go unnoticed; featurize with the same arguments seals the store.
    featurize_store(CONFIG, cache=tmp_path / "cache", workers=0, progress=True)
    err = capsys.readouterr().err
    assert "recording the checksums of store.h5 and manifest.json" in err
    sealed = st.Store(copy)
    assert sealed.sealed and (sealed.folds == before.folds).all() and (sealed.labels == before.labels).all()
    _flip_dataset_bytes(copy / st.MASTER_NAME, "meta/fold")
    with pytest.raises(DamagedFileError, match="checksum mismatch"):
        st.Store(copy)


def test_relinking_refuses_a_shard_that_differs_from_the_previous_manifest(run, tmp_path):
    """Deleting store.h5 and featurizing again relinks it from the shards — never from a damaged one."""
    copy = Path(shutil.copytree(run["store"], tmp_path / "cache" / run["store"].name))
    (copy / st.MASTER_NAME).unlink()
    assert featurize_store(CONFIG, cache=tmp_path / "cache", workers=0, progress=False).shards_written == 0
    assert st.Store(copy).sealed
    (copy / st.MASTER_NAME).unlink()
    shard = sorted((copy / st.SHARD_DIR).glob("*.h5"))[1]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=f"checksum mismatch: {shard} differs from its sha256"):
        featurize_store(CONFIG, cache=tmp_path / "cache", workers=0, progress=False)


def test_a_shard_linked_to_dev_zero_is_not_called_missing(run, tmp_path, capsys):
    copy = Path(shutil.copytree(run["store"], tmp_path / run["store"].name))
    shard = sorted((copy / st.SHARD_DIR).glob("*.h5"))[0]
    shard.unlink()
    os.symlink("/dev/zero", shard)
    rel = str(shard.relative_to(copy))
    code, _, err = _cli(["store", "info", str(copy)], capsys)
    _one_line_refusal(code, err, f"shard {shard} is not a regular file (it resolves to /dev/zero)")
    assert "missing" not in err
    code, out, _ = _cli(["store", "info", str(copy), "--verify"], capsys)  # and it is not read (forever)
    assert code == 1 and f"not a regular file: {rel}" in out and f"missing: {rel}" not in out


# --------------------------------------------------------------------------- #
# metrics.json and attack results: sealed and schema-checked
# --------------------------------------------------------------------------- #
def test_metrics_and_results_are_sealed_and_their_values_checked(run, tmp_path):
    metrics_path = run["run"] / "metrics.json"
    results_path = run["run"] / "attack-round00-test.json"
    metrics = json.loads(metrics_path.read_text())
    assert len(metrics.pop(st.DIGEST_KEY)) == 64 and read_metrics(metrics_path) == metrics
    assert read_attack_results(results_path).records
    cases = [
        # an edit keeps the old digest: refused as changed after it was written
        ({"test": {**metrics["test"], "accuracy": 0.5}}, True, "checksum mismatch: metrics file"),
        # without the digest (an earlier release, or removed on purpose), the values still face the schema
        ({"test": {**metrics["test"], "accuracy": 7.5}}, False, "test.accuracy must be a number in [0, 1], got 7.5"),
        ({"test": {**metrics["test"], "accuracy": "0.9"}}, False, "test.accuracy must be a number in [0, 1], got '0.9'"),
        ({"test": {**metrics["test"], "accuracy": None}}, False, "test.accuracy is null although"),
        ({"complete": "yes"}, False, "complete must be true or false"),
    ]
    for change, keep_digest, message in cases:
        doc = {**metrics, **change}
        if keep_digest:
            doc[st.DIGEST_KEY] = json.loads(metrics_path.read_text())[st.DIGEST_KEY]
        path = tmp_path / "metrics.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(DamagedFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
            read_metrics(path)
    path.write_text(metrics_path.read_text().replace('"accuracy": ', '"accuracy": NaN, "x": ', 1))
    with pytest.raises(DamagedFileError, match="not readable JSON.*NaN is not a JSON value"):
        read_metrics(path)
    path.write_text(metrics_path.read_text()[:200])  # truncated
    with pytest.raises(DamagedFileError, match="not readable JSON"):
        read_metrics(path)
    results = json.loads(results_path.read_text())
    results.pop(st.DIGEST_KEY)
    for change, message in [({"fooling_rate": "0.9"}, r"attacks\[0\].fooling_rate must be a number in \[0, 1\]"),
                            ({"budget": -1}, r"attacks\[0\].budget must be a number >= 0"),
                            ({"n_attacked": 99}, r"attacks\[0\].n_attacked is 99, more than n_samples"),
                            ({"evaluations": [[0.1, 1.5]]}, r"attacks\[0\].evaluations\[0\].rate must be")]:
        doc = {**results, "attacks": [{**results["attacks"][0], **change}]}
        path = tmp_path / "attack-round00-test.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(DamagedFileError, match=message):
            read_attack_results(path)


def test_report_skips_a_damaged_file_with_a_warning_and_never_shows_its_number(run, tmp_path, capsys):
    copy = Path(shutil.copytree(run["run"], tmp_path / "run"))
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics.pop(st.DIGEST_KEY)
    metrics["test"]["accuracy"] = metrics["test_accuracy"] = 7.5
    (copy / "metrics.json").write_text(json.dumps(metrics))
    results = json.loads((copy / "attack-round00-test.json").read_text())
    results["attacks"][0]["fooling_rate"] = "0.9"  # the digest is kept: changed after it was written
    (copy / "attack-round00-test.json").write_text(json.dumps(results))
    (copy / "intact").mkdir()  # one intact file, so that there is something to report
    shutil.copy(run["run"] / "attack-round00-test.json", copy / "intact" / "attack-round00-test.json")
    code, out, err = _cli(["report", str(copy), "--out", str(tmp_path / "report"), "--no-listen",
                           "--max-clips", "0"], capsys)
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert any(f"metrics file {copy / 'metrics.json'} is damaged: test.accuracy must be a number in [0, 1], "
               "got 7.5" in w for w in warnings), err
    assert any(f"checksum mismatch: attack results file {copy / 'attack-round00-test.json'}" in w
               for w in warnings), err
    report = (tmp_path / "report" / "report.md").read_text()
    values = json.loads((tmp_path / "report" / "report.json").read_text())
    assert "750" not in report and not any(r["value"] == 7.5 for r in values["values"])
    assert str(copy / "metrics.json") not in {r["source"] for r in values["values"]}
    assert any("test.accuracy must be a number" in w for w in values["warnings"])


def test_a_damaged_metrics_file_is_rewritten_from_the_final_checkpoint(run, tmp_path, capsys):
    copy = Path(shutil.copytree(run["run"], tmp_path / "run"))
    good = read_metrics(copy / "metrics.json")
    (copy / "metrics.json").write_text((copy / "metrics.json").read_text()[:-40])
    config = TrainConfig.from_dict(good["config"])
    checkpoint = (copy / "checkpoint.pt").read_bytes()
    again = train(config, out_dir=copy, resume=True, progress=False)
    err = capsys.readouterr().err
    assert f"metrics file {copy / 'metrics.json'} is damaged" in err and "rewritten from the checkpoint" in err
    assert read_metrics(copy / "metrics.json")["test"] == good["test"] == again["test"]
    assert (copy / "checkpoint.pt").read_bytes() == checkpoint  # the run itself is left as it was


# --------------------------------------------------------------------------- #
# Attacks: the cost said before, absurd ones refused; an unreached budget is exit status 1
# --------------------------------------------------------------------------- #
def test_absurd_attack_steps_are_refused_before_any_work_unless_insisted(run):
    from advaudio.attacks.params import MAX_EVALUATIONS_PER_CLIP, AttackConfig
    from advaudio.stages.attack import AttackStageConfig

    # In a process of its own with a time limit: were the guard gone, this attack would run for days.
    proc = subprocess.run([sys.executable, "-m", "advaudio", "attack", "--checkpoint", str(run["checkpoint"]),
                           "--attacks", "pgd", "-p", "pgd.steps=1000000000", "--device", "cpu", "--threads", "1"],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                              filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))))
    _one_line_refusal(proc.returncode, proc.stderr, "pgd would cost about 2e+10 model evaluations per clip "
                                                    "(20 budget probes × steps=1000000000)", "--allow-expensive")
    # Foolbox's research defaults and long but finite runs stay accepted
    for name, params in [("cw", {}), ("cw", {"steps": 10000}), ("pgd", {"steps": 1000}),
                         ("hopskipjump", {"steps": 64, "max_gradient_eval_steps": 10000}), ("boundary", {"steps": 25000})]:
        assert AttackConfig.create(name, **params).evaluations_per_clip() <= MAX_EVALUATIONS_PER_CLIP
        AttackStageConfig(attacks=(name,), attack_params={name: params})
    with pytest.raises(Exception, match="ead would cost about"):
        AttackStageConfig(attacks=("ead",), attack_params={"ead": {"steps": 1000000}})
    insisted = AttackStageConfig(attacks=("pgd",), attack_params={"pgd": {"steps": 10**9}}, allow_expensive=True)
    # a permission, not a setting: nothing recorded, no fingerprint changed
    assert "allow_expensive" not in insisted.to_dict()
    assert AttackStageConfig(allow_expensive=True).to_dict() == AttackStageConfig().to_dict()


def test_attack_exits_1_when_a_budget_never_reached_the_threshold(run, tmp_path, capsys):
    argv = ["attack", "--checkpoint", str(run["checkpoint"]), "--attacks", "fgsm", "--limit", "4",
            "--fooling-rate", "1.0", "--no-checks", "--device", "cpu", "--round", "5", "--out", str(tmp_path)]
    code, out, err = _cli(argv, capsys)
    results = tmp_path / "attack-round05-test.json"
    assert results.is_file(), (code, err)
    record = read_attack_results(results).records[0]
    assert not record.reached, "the tiny model's FGSM was expected to miss a 100 % fooling rate"
    assert code == 1 and out.strip().splitlines()[-1] == str(results)  # its results are written all the same
    assert "advaudio: 1 of 1 attack(s) never reached the fooling-rate threshold 1: fgsm (" in err
    code, _, err = _cli(argv + ["--allow-unreached"], capsys)
    assert code == 0 and "never reached" in err
