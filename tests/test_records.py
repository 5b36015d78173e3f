"""The typed on-disk records: attack results files and adversarial shard attributes.

Files as today's writer makes them read back exactly; files as earlier releases wrote
them (written here by hand, key by key) open with defaults, or are refused with one
line naming the file and the key; a newer writer's keys pass through.
"""

from __future__ import annotations

import copy
import json
import math

import h5py
import numpy as np
import pytest

from advaudio import store as st
from advaudio.attacks.results import TuningResult
from advaudio.errors import DamagedFileError
from advaudio.reporting import analyse, collect_runs
from advaudio.stages.attack import AttackStageConfig, check_warnings, format_table
from advaudio.store.results import AttackRecord, AttackResults

SHA = "ab" * 32

# A results file as the previous release wrote it (advaudio/adversarial.py before the seal and
# the threshold rename: unsealed, no batch_size, precision or plugins, the stage config's
# threshold under "fooling_rate").
PREVIOUS_RECORD = {
    "attack": "pgd", "kind": "fixed-budget", "norm": "linf", "threshold": 0.9, "budget": 0.031,
    "fooling_rate": 0.92, "success_rate": 1.0, "reached": True, "reason": None,
    "evaluations": [[0.01, 0.2], [0.031, 0.92], [0.05, 1.0]],
    "stats": {"l1": {"mean": 9.0, "median": 8.5}, "l2": {"mean": 0.5, "median": 0.4},
              "linf": {"mean": 0.03, "median": 0.03}, "snr_db": {"mean": 31.0, "median": 30.5}},
    "n_attacked": 25, "n_excluded": 3, "queries": 1200, "gradient_queries": 1000, "wall_time_s": 3.5,
    "tolerance": {"rtol": 0.05, "atol": 0.0, "precision": "quantile", "budget_low": 0.029}, "converged": True,
    "notes": [{"code": "excluded-misclassified", "count": 3, "of": 28,
               "text": "3 of 28 sample(s) misclassified when clean: not attacked, excluded from the rates"}],
    "search": "per-clip",
    "checks": [{"check": "success-at-large-eps", "status": "pass", "attacks": ["pgd"],
                "text": "pgd: success rate 1.000 over every ε tried (≥ 0.99)", "success_rate": 1.0},
               {"check": "more-steps-no-gain", "status": "warn", "attacks": ["pgd"], "text": "gain 5 pp",
                "epsilon": 0.031, "steps": 10, "rate": 0.9, "rate_doubled": 0.95, "clips": 16}],
    "config": {"name": "pgd", "steps": 10, "epsilon": 0.031, "seed": 0}, "targeted": True,
    "shard": "/runs/cache/store/adversarial/round00-test-abababab01-pgd.h5", "n_samples": 28, "split": "test",
    "round": 0, "slice": None,
}
PREVIOUS_DOCUMENT = {
    "checkpoint": "/runs/run/checkpoint.pt", "checkpoint_sha256": SHA,
    "model": {"name": "resnet18", "width": 0.25, "in_channels": 1, "num_classes": 4}, "view": "stft",
    "store": "/runs/cache/store", "store_fingerprint": "f00d", "clean_test_accuracy": 0.875,
    "config": {"attacks": ["pgd"], "fooling_rate": 0.9, "split": "test", "limit": None, "batch_size": None,
               "round": 0, "seed": 0, "target_rule": "random", "slice": None, "attack_params": {}, "rtol": 0.05,
               "search": "per-clip", "checks": True, "precision": None},
    "device": "cpu", "wall_time_s": 5.0, "attacks": [PREVIOUS_RECORD],
    "evaluation": {"checks": PREVIOUS_RECORD["checks"],
                   "robust_accuracy": {"linf": {"attacks": ["pgd"], "epsilons": [0.0039, 0.0078],
                                                "accuracy": [0.5, 0.25], "accuracy_low": [0.5, 0.25]}}},
}
# A record of the first release: no search, checks, config, placement; notes were plain strings.
FIRST_RECORD = {
    "attack": "deepfool", "kind": "minimisation", "norm": "l2", "threshold": 0.9, "budget": None,
    "fooling_rate": 0.5, "success_rate": 0.5, "reached": False,
    "reason": "success rate 0.500 < 0.9: 2 of 4 sample(s) not fooled at any l2 norm",
    "evaluations": [[0.2, 0.25], [0.4, 0.5]], "stats": {"l2": {"mean": 0.3, "median": 0.3}},
    "n_attacked": 4, "n_excluded": 1, "queries": 40, "gradient_queries": 40, "wall_time_s": 0.5,
    "tolerance": None, "converged": True,
    "notes": ["1 of 5 sample(s) misclassified when clean: not attacked, excluded from the rates",
              "deepfool is untargeted"],
}


def _write(path, document, *, sealed=False):
    if sealed:
        st.write_sealed_json(path, document)
    else:  # as releases before the seal wrote it
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def test_previous_release_results_open_and_read_back_unchanged(tmp_path):
    path = _write(tmp_path / "attack-round00-test.json", PREVIOUS_DOCUMENT)
    results = AttackResults.read(path)
    (r,) = results.records
    assert (r.attack, r.kind, r.norm, r.threshold, r.budget, r.fooling_rate, r.reached) == \
        ("pgd", "fixed-budget", "linf", 0.9, 0.031, 0.92, True)
    assert r.evaluations == ((0.01, 0.2), (0.031, 0.92), (0.05, 1.0)) and r.stat("l2") == 0.4
    assert r.notes[0].code == "excluded-misclassified" and r.notes[0].counts == {"count": 3, "of": 28}
    assert [c.passed for c in r.checks] == [True, False] and r.checks[1].values["rate_doubled"] == 0.95
    assert r.slice is None and r.slice_label is None and r.gradient_steps == 40.0
    # keys the previous release did not write: defaults, remembered as absent
    assert results.batch_size is None and results.precision is None and results.plugins is None
    assert {"batch_size", "precision", "plugins", "merged_from"} <= results.absent
    assert "merged_from" in r.absent and r.merged_from is None
    assert [c.check for c in results.failed_checks] == ["more-steps-no-gain"]
    # the threshold under its old name in the stage config, read with today's name
    assert AttackStageConfig.upgrade_dict(dict(results.config))["threshold"] == 0.9
    # read and written again (as a merge rewrites what it read), the file keeps its keys and values
    assert results.to_json() == PREVIOUS_DOCUMENT
    again = results.write(tmp_path / "again.json")
    assert again == PREVIOUS_DOCUMENT and "sha256" in json.loads((tmp_path / "again.json").read_text())
    # readers take it as they take today's files
    data = collect_runs(tmp_path)
    (entry,) = [a for a in data.runs[0].attacks if a.path == path]
    assert entry.record == r and entry.round == 0 and entry.split == "test"
    values = {row["metric"]: row["value"] for row in analyse(data)["values"] if row["attack"] == "pgd"}
    assert values["budget"] == 0.031 and values["threshold"] == 0.9 and values["l2_median"] == 0.4
    assert check_warnings(PREVIOUS_DOCUMENT) == ["warning: evaluation check more-steps-no-gain failed: gain 5 pp"]
    assert format_table(results).splitlines()[2].split()[:4] == ["pgd", "linf", "0.031", "0.92"]


def test_first_release_record_opens_with_defaults(tmp_path):
    path = _write(tmp_path / "attack-round02-train.json", {"attacks": [FIRST_RECORD], "config": {"split": "train"}})
    (r,) = AttackResults.read(path).records
    assert r.budget is None and not r.reached and r.search is None and r.checks == () and r.shard is None
    assert r.round is None and r.split is None and r.config is None and r.targeted is None
    # plain-string notes: the one a merge must recognise gets its code back, the others are "note"s
    assert [n.code for n in r.notes] == ["excluded-misclassified", "note"]
    assert r.notes[0].counts == {"count": 1, "of": 5} and r.notes[1].text == "deepfool is untargeted"
    (entry,) = collect_runs(tmp_path).runs[0].attacks
    assert (entry.round, entry.split, entry.attack) == (2, "train", "deepfool")  # from the file name and config
    assert format_table({"attacks": [FIRST_RECORD]}).splitlines()[2].split()[:3] == ["deepfool", "l2", "-"]


@pytest.mark.parametrize("key", AttackRecord.REQUIRED)
def test_a_record_without_a_key_every_release_wrote_is_refused_in_one_line(tmp_path, key):
    document = copy.deepcopy(PREVIOUS_DOCUMENT)
    del document["attacks"][0][key]
    path = _write(tmp_path / "attack-round00-test.json", document)
    with pytest.raises(DamagedFileError) as info:
        AttackResults.read(path)
    assert str(info.value) == f"attack results file {path} is damaged: attacks[0].{key} is missing"
    (tmp_path / "intact").mkdir()  # the report skips the file, saying why, and shows the others
    _write(tmp_path / "intact" / "attack-round00-test.json", PREVIOUS_DOCUMENT)
    data = collect_runs(tmp_path)
    assert data.warnings == [f"skipped: {info.value}"] and len(data.runs[0].attacks) == 1


def test_a_mistyped_value_is_refused_naming_the_key(tmp_path):
    for change, message in [({"threshold": "0.9"}, "attacks[0].threshold must be a number in [0, 1], got '0.9'"),
                            ({"kind": "clever"}, "attacks[0].kind must be one of fixed-budget, minimisation"),
                            ({"notes": "a note"}, "attacks[0].notes must be a list"),
                            ({"checks": [{"status": "pass"}]}, "attacks[0].checks[0].check is missing"),
                            ({"slice": [2, 2]}, r"attacks[0].slice must be [I, N] with 0 <= I < N")]:
        document = copy.deepcopy(PREVIOUS_DOCUMENT)
        document["attacks"][0].update(change)
        path = _write(tmp_path / "attack-round00-test.json", document, sealed=True)
        with pytest.raises(DamagedFileError) as info:
            AttackResults.read(path)
        assert str(info.value).startswith(f"attack results file {path} is damaged: ") and message in str(info.value)
        assert "\n" not in str(info.value)


def test_a_newer_writers_keys_pass_through(tmp_path):
    document = copy.deepcopy(PREVIOUS_DOCUMENT)
    document["attacks"][0]["ood_score"] = {"auroc": 0.7}
    document["attacks"][0]["checks"][0]["new_number"] = 3
    document["evaluation"]["autoattack"] = {"linf": 0.4}
    document["hostname"] = "node17"
    results = AttackResults.read(_write(tmp_path / "attack-round00-test.json", document, sealed=True))
    (r,) = results.records
    assert r.extra == {"ood_score": {"auroc": 0.7}} and results.extra == {"hostname": "node17"}
    assert r.checks[0].values["new_number"] == 3 and results.evaluation.extra == {"autoattack": {"linf": 0.4}}
    assert results.to_json() == document
    merged = r.with_values(budget=0.05, merged_from={"budget_source": "x", "slices": []})
    assert merged.to_json()["ood_score"] == {"auroc": 0.7} and merged.to_json()["merged_from"]["budget_source"] == "x"


def test_a_fresh_record_has_todays_keys():
    """What the attack stage writes for one attack (the keys of the release before the typed records)."""
    tuning = TuningResult(
        attack="pgd", kind="fixed-budget", norm="linf", threshold=0.9, budget=math.nan, fooling_rate=math.nan,
        success_rate=0.0, reached=False, reason="never", evaluations=[(0.1, 0.0)], stats={}, n_attacked=0,
        n_excluded=4, queries=0, gradient_queries=0, wall_time_s=0.1, tolerance=None, converged=False,
        result=None, within_budget=None, search="per-clip")
    record = tuning.to_record(shard=None, n_samples=4, split="test", round=0, slice=(1, 2))
    assert set(record.to_json()) == set(PREVIOUS_RECORD)  # no merged_from: not a merge
    assert record.to_json()["slice"] == [1, 2] and record.slice_label == "1/2"
    assert set(tuning.to_dict()) == set(PREVIOUS_RECORD) - {"shard", "n_samples", "split", "round", "slice"}
    document = AttackResults(records=(record,), batch_size=64, precision="quantile", plugins=[])
    written = json.loads(json.dumps(st.jsonable(document.to_json())))
    assert set(written) == set(PREVIOUS_DOCUMENT) | {"batch_size", "precision", "plugins"}
    assert written["attacks"][0]["budget"] is None  # NaN never reaches a file


# --------------------------------------------------------------------------- shards


# A shard's attributes as the previous release wrote them (no precision, budget_low).
PREVIOUS_SHARD_ATTRS = {
    "attack": "pgd", "attack_config": {"name": "pgd", "steps": 10, "epsilon": 0.031}, "kind": "fixed-budget",
    "norm": "linf", "budget": 0.031, "fooling_rate": 0.92, "threshold": 0.9, "targeted": True, "round": 0,
    "split": "train", "slice": [0, 1], "checkpoint": "/runs/run/checkpoint.pt", "checkpoint_sha256": SHA,
    "store_fingerprint": "f00d", "view": {"name": "stft", "output_shape": [1, 6, 5]}, "test_fold": 3, "seed": 0,
    "versions": {"advaudio": "0.1.0", "torch": "2.4.0"},
    "notes": [{"code": "targets-given", "text": "targets given"}], "search": "per-clip",
    "results": "/runs/run/attack-round00-train.json",
}


def _old_shard(directory, name, attrs, n=3):
    """An adversarial shard as the previous release wrote it: attributes JSON-encoded by hand, checksum beside."""
    path = directory / st.ADVERSARIAL_DIR / f"{name}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", track_order=True) as f:
        for key, value in attrs.items():
            f.attrs[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
        f["adversarial"] = np.full((n, 1, 6, 5), 0.5, np.float32)
        f["clean_index"] = np.arange(n, dtype=np.int64)
        f["fold"] = np.full(n, 1, np.int64)
        f["success"] = np.ones(n, bool)
    path.with_suffix(".sha256").write_text(st.sha256_file(path) + "\n")
    return path


class _Store:  # what find_shards and inspect_shards read of a store
    def __init__(self, directory):
        self.directory, self.fingerprint = directory, "f00d"

    def adversarial_shards(self):
        return st.shard_paths(self.directory)


def test_previous_release_shard_opens_and_enters_training(tmp_path):
    path = _old_shard(tmp_path, f"round00-train-{SHA[:10]}-pgd", PREVIOUS_SHARD_ATTRS)
    attrs = st.AdversarialShard.open(path).attrs
    assert (attrs.attack, attrs.budget, attrs.threshold, attrs.round, attrs.slice) == ("pgd", 0.031, 0.9, 0, (0, 1))
    assert attrs.precision is None and attrs.budget_low is None and not attrs.merged and not attrs.sliced
    assert attrs.notes[0].code == "targets-given"
    assert attrs.to_attrs() == PREVIOUS_SHARD_ATTRS  # read and written again: the same attributes
    store = _Store(tmp_path)
    assert st.find_shards(store, checkpoint_sha=SHA, round=0, split="train") == [path]
    (info,) = st.inspect_shards([path], store=store, held_out_folds={3}, checkpoint_sha=SHA)
    assert (info["attack"], info["budget"], info["fooling_rate"], info["round"]) == ("pgd", 0.031, 0.92, 0)


def test_older_shard_attributes_default_and_newer_ones_pass_through(tmp_path):
    older = {k: PREVIOUS_SHARD_ATTRS[k] for k in ("attack", "norm", "budget", "fooling_rate", "round", "split")}
    older["notes"] = ["a plain note"]
    older["made_by"] = "a newer advaudio"
    path = _old_shard(tmp_path, "older", older)
    attrs = st.AdversarialShard.open(path).attrs
    assert attrs.search is None and attrs.slice is None and attrs.view is None and not attrs.sliced
    assert attrs.notes[0].text == "a plain note" and attrs.extra == {"made_by": "a newer advaudio"}
    # the writer keeps the unknown attribute and writes notes in today's form
    again = st.write_adversarial_shard(tmp_path, "again", arrays=st.AdversarialShard.open(path).read(), attrs=attrs)
    with h5py.File(again, "r") as f:
        assert f.attrs["made_by"] == "a newer advaudio"
        assert json.loads(f.attrs["notes"]) == [{"code": "note", "text": "a plain note"}]
    # NaN: no budget found (a shard attribute can say it; a results file says null)
    nan = st.write_adversarial_shard(tmp_path, "nan", arrays={"adversarial": np.zeros((1, 1, 2, 2), np.float32)},
                                     attrs=st.ShardAttrs(budget=math.nan, budget_low=math.nan))
    assert math.isnan(st.AdversarialShard.open(nan).attrs.budget)


@pytest.mark.parametrize("key, value, message", [
    ("round", "one", "round must be an integer >= 0, got 'one'"),
    ("budget", -0.5, "budget must be a number >= 0, got -0.5"),
    ("slice", [3, 2], "slice must be [I, N] with 0 <= I < N, got [3, 2]"),
    ("view", [1, 2], "view must be a JSON object, got [1, 2]"),
    ("split", "validation", "split must be one of test, train, got 'validation'"),
])
def test_a_mistyped_shard_attribute_is_refused_in_one_line(tmp_path, key, value, message):
    path = _old_shard(tmp_path, "bad", {**PREVIOUS_SHARD_ATTRS, key: value})
    with pytest.raises(DamagedFileError) as info:
        st.AdversarialShard.open(path)
    assert str(info.value) == f"adversarial shard {path} is damaged: {message}"
