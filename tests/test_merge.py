"""Merging the slices of a job-array attack (``attack --slice I/N`` + ``store merge``).

A tiny real store (3 classes × 6 one-second clips, 3 folds, STFT) and a tiny
ResNet-18 are made once; every test copies the store and the checkpoint into
its own directory (same fingerprint, same checkpoint sha256), so runs do not
see each other's shards or results files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from advaudio import store as st
from advaudio.cli import main
from advaudio.errors import StoreError
from advaudio.features import FeatureConfig
from advaudio.reporting import collect_runs
from advaudio.stages.attack import AttackStageConfig, attack_stage
from advaudio.stages.featurize import FeaturizeConfig, featurize_store
from advaudio.stages.merge import merge_results
from advaudio.store import find_shards
from advaudio.training import TrainConfig, train

pytestmark = pytest.mark.floats  # compares runs: also run under other CPU kernels (.ci/run)

SYNTH = {"clips_per_class": 6, "n_classes": 3, "duration": 1.0, "n_folds": 3}
FLOAT_KEYS = ("adversarial", "l1", "l2", "linf", "snr_db")


def merged_shards(doc):
    """The shards written by a merge, from its results document."""
    return [Path(r["shard"]) for r in doc["attacks"] if r["attack"] in doc["merged"] and r.get("shard")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("merge")
    res = featurize_store(FeaturizeConfig(dataset="synthetic", dataset_options=SYNTH,
                                    features=FeatureConfig(representations=("stft",))),
                          cache=base / "cache", workers=0, progress=False)
    train(TrainConfig(store=str(res.store_dir), view="stft", model="resnet18", width=0.125, input_size=(32, 32),
                      batch_size=4, epochs=2, lr=5e-3, time_shift=0.0, workers=0, device="cpu", amp=False, recipe="paper"),
          out_dir=base / "run", progress=False)
    return res.store_dir, base / "run" / "checkpoint.pt"


def workspace(trained, directory: Path) -> tuple[Path, Path]:
    """A copy of the store and of the checkpoint (results go beside it)."""
    store_dir, ckpt = trained
    store = directory / "cache" / store_dir.name
    shutil.copytree(store_dir, store)
    (directory / "run").mkdir(parents=True)
    shutil.copy2(ckpt, directory / "run" / "checkpoint.pt")
    return store, directory / "run" / "checkpoint.pt"


def attack(store: Path, ckpt: Path, **kw) -> dict:
    config = AttackStageConfig(**{"attacks": ("deepfool",), "threshold": 0.5, **kw})
    return attack_stage(config, checkpoint=ckpt, store=store, device="cpu", progress=False)


def read_shard(path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


def same_arrays(a: dict, b: dict, *, exact: bool = True) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if key in FLOAT_KEYS and not exact:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


RECORD_KEYS = ("attack", "kind", "norm", "threshold", "budget", "fooling_rate", "success_rate", "reached", "reason",
               "evaluations", "stats", "n_attacked", "n_excluded", "n_samples", "targeted", "config", "split",
               "round", "tolerance", "converged")


@pytest.fixture(scope="module")
def merged(trained, tmp_path_factory):
    """deepfool on the test fold: one unsliced run (A) and two slices + merge (B), batch size 1."""
    base = tmp_path_factory.mktemp("deepfool")
    store_a, ckpt_a = workspace(trained, base / "A")
    store_b, ckpt_b = workspace(trained, base / "B")
    local = attack(store_a, ckpt_a, batch_size=1)
    for i in range(2):
        attack(store_b, ckpt_b, batch_size=1, slice=(i, 2))
    doc = merge_results(store_b, round=0, split="test")
    return {"local": local, "doc": doc, "store": store_b, "ckpt": ckpt_b, "base": base}


def test_sliced_deepfool_merges_into_the_unsliced_run_value_by_value(merged):
    local, doc = merged["local"], merged["doc"]
    (lrec,), (mrec,) = local["attacks"], doc["attacks"]
    assert Path(mrec["shard"]).name == Path(lrec["shard"]).name  # the unsliced name
    a_arrays, a_attrs = read_shard(lrec["shard"])
    b_arrays, b_attrs = read_shard(mrec["shard"])
    same_arrays(a_arrays, b_arrays)  # adversarial, norms, success, within_budget, rows… bit for bit
    for key in ("attack", "attack_config", "kind", "norm", "budget", "fooling_rate", "threshold", "targeted",
                "round", "split", "slice", "checkpoint_sha256", "store_fingerprint", "view", "test_fold", "seed"):
        assert a_attrs[key] == b_attrs[key], key
    merged_from = json.loads(b_attrs["merged_from"])
    assert [m["slice"] for m in merged_from] == [[0, 2], [1, 2]] and sum(m["n_samples"] for m in merged_from) == 6
    # The results record is the one an unsliced run writes (same budget from the union's norms,
    # same CDF, statistics and counts; per-sample work summed over the slices).
    for key in RECORD_KEYS + ("queries", "gradient_queries"):
        assert mrec[key] == lrec[key], key
    assert mrec["notes"][:-1] == lrec["notes"] and mrec["notes"][-1]["text"] == "merged from 2 slices (advaudio store merge)"
    assert {r["budget"] for r in mrec["merged_from"]["slices"]} != {mrec["budget"]}  # slices tuned their own
    results = Path(doc["results_path"])
    assert results == merged["ckpt"].parent / "attack-round00-test.json"
    assert json.loads(results.read_text())["config"]["slice"] is None


def test_merged_set_is_registered_once_for_retraining_and_reports(merged):
    store = st.Store(merged["store"])
    sha = st.sha256_file(merged["ckpt"])
    (shard,) = find_shards(store, checkpoint_sha=sha, round=0, split="test")
    assert shard.name == f"round00-test-{sha[:10]}-deepfool.h5"  # the slices are not training data
    assert store.verify() == []
    run = collect_runs(merged["ckpt"].parent).runs[0]
    (entry,) = [a for a in run.attacks if a.slice is None]
    assert entry.path.name == "attack-round00-test.json"
    assert entry.record.budget == merged["doc"]["attacks"][0]["budget"]


def test_results_files_and_shards_read_back_as_written(merged):
    """The typed records are the only readers and writers: what they read from a real run's files
    (slices, merge) is, written again, the files' content key for key, value for value."""
    files = sorted(merged["ckpt"].parent.glob("attack-round00-test*.json"))
    assert len(files) == 3  # two slices and the merge
    for path in files:
        raw = json.loads(path.read_text())
        raw.pop(st.DIGEST_KEY)
        results = st.AttackResults.read(path)
        assert results.to_json() == raw, path.name
        assert (results.merged_from is not None) == path.name.endswith("-test.json")
        assert all(r.attack == "deepfool" and r.kind == "minimisation" for r in results.records)
    for path in st.shard_paths(merged["store"]):
        _, attrs = read_shard(path)
        decoded = {k: st.decode_attr(v) for k, v in attrs.items()}
        typed = st.AdversarialShard.open(path).attrs
        assert typed.to_attrs() == decoded and list(typed.to_attrs()) == list(decoded)  # values and order
        assert typed.merged == ("slice" not in path.stem) and typed.sliced == ("slice" in path.stem)


def test_merging_again_changes_nothing(merged, capsys):
    shard = Path(merged["doc"]["attacks"][0]["shard"])
    before = (st.sha256_file(shard), Path(merged["doc"]["results_path"]).read_bytes())
    main(["store", "merge", str(merged["store"]), "--round", "0", "--split", "test"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == merged["doc"]["results_path"] and "already merged, unchanged" in out[-2]
    assert (st.sha256_file(shard), Path(merged["doc"]["results_path"]).read_bytes()) == before


def test_a_slice_run_twice_adds_no_samples(merged, tmp_path):
    store = tmp_path / "cache" / merged["store"].name
    shutil.copytree(merged["store"], store)
    shutil.copytree(merged["ckpt"].parent, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    attack(store, ckpt, batch_size=1, slice=(0, 2))  # again, after the merge
    attack(store, ckpt, batch_size=1, slice=(0, 2))  # and once more
    # slice 1's shard still names the copied-from checkpoint: say where the results are
    (path,) = merged_shards(merge_results(store, round=0, split="test", results_dir=tmp_path / "run"))
    arrays, _ = read_shard(path)
    same_arrays(arrays, read_shard(merged["doc"]["attacks"][0]["shard"])[0])
    assert len(np.unique(arrays["clean_index"])) == len(arrays["clean_index"]) == 6


def test_a_damaged_slice_results_file_is_named_not_called_missing(merged, tmp_path, capsys):
    """Issue 18: a truncated slice JSON made the merge say a present slice was missing."""
    store = tmp_path / "cache" / merged["store"].name
    shutil.copytree(merged["store"], store)
    shutil.copytree(merged["ckpt"].parent, tmp_path / "run")
    damaged = tmp_path / "run" / "attack-round00-test-slice001of002.json"
    damaged.write_text(damaged.read_text()[:500])
    with pytest.raises(StoreError, match=rf"attack results file {damaged} is damaged: not readable JSON .*; "
                                         r"rerun slice 1/2") as info:
        merge_results(store, round=0, split="test", results_dir=tmp_path / "run")
    assert "missing" not in str(info.value)
    with pytest.raises(SystemExit) as exit_info:  # a --results-dir that does not exist is said to be missing
        main(["store", "merge", str(store), "--round", "0", "--split", "test", "--results-dir",
              str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"no results directory at {tmp_path / 'nowhere'}" in err
    assert err.count("\n") == 1


def test_incomplete_or_inconsistent_sets_are_refused(trained, tmp_path, capsys):
    store, ckpt = workspace(trained, tmp_path)
    attack(store, ckpt, slice=(0, 3))
    attack(store, ckpt, slice=(2, 3))
    sha10 = st.sha256_file(ckpt)[:10]
    missing = rf"missing slice\(s\) 1/3 of 3 \(round00-test-{sha10}-deepfool-slice001of003.h5"
    with pytest.raises(StoreError, match=missing):
        merged_shards(merge_results(store, round=0, split="test"))
    with pytest.raises(SystemExit) as info:  # the CLI says the same in one line
        main(["store", "merge", str(store), "--round", "0", "--split", "test"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "missing slice(s) 1/3" in err and err.count("\n") == 1
    attack(store, ckpt, slice=(1, 3), threshold=0.8)  # complete, but run with another threshold
    with pytest.raises(StoreError, match=r"differ in threshold: slice 0/3 has 0\.5, slice 1/3 has 0\.8"):
        merged_shards(merge_results(store, round=0, split="test"))
    assert not (store / "adversarial" / f"round00-test-{sha10}-deepfool.h5").exists()
    with pytest.raises(StoreError, match="no slice shards"):
        merged_shards(merge_results(store, round=1, split="test"))


def test_an_unsliced_runs_files_are_kept_unless_forced(trained, tmp_path):
    store, ckpt = workspace(trained, tmp_path)
    local = attack(store, ckpt)
    for i in range(2):
        attack(store, ckpt, slice=(i, 2))
    with pytest.raises(StoreError, match="written by an unsliced attack run"):
        merged_shards(merge_results(store, round=0, split="test"))
    (path,) = merged_shards(merge_results(store, round=0, split="test", force=True))
    assert path == Path(local["attacks"][0]["shard"]) and "merged_from" in read_shard(path)[1]


def test_default_batches_merge_to_float32_rounding(trained, tmp_path):
    """With batches of several clips, kernels may round differently per batch: equal to float32 precision."""
    store_a, ckpt_a = workspace(trained, tmp_path / "A")
    store_b, ckpt_b = workspace(trained, tmp_path / "B")
    local = attack(store_a, ckpt_a, split="train")
    for i in range(3):
        attack(store_b, ckpt_b, split="train", slice=(i, 3))
    (path,) = merged_shards(merge_results(store_b, round=0, split="train"))
    a_arrays, a_attrs = read_shard(local["attacks"][0]["shard"])
    b_arrays, b_attrs = read_shard(path)
    same_arrays(a_arrays, b_arrays, exact=False)
    assert b_attrs["budget"] == pytest.approx(a_attrs["budget"], rel=1e-5)
    assert b_attrs["fooling_rate"] == a_attrs["fooling_rate"]


def test_fixed_budget_slices_with_different_budgets_need_consent(trained, tmp_path):
    store, ckpt = workspace(trained, tmp_path)
    docs = [attack(store, ckpt, attacks=("pgd",), attack_params={"pgd": {"steps": 10}}, rtol=0.2, split="train",
                   slice=(i, 2), search="bisection", checks=False) for i in range(2)]
    budgets = [d["attacks"][0]["budget"] for d in docs]
    assert budgets[0] != budgets[1]  # each slice bisected its own ε
    with pytest.raises(StoreError, match=r"fixed-budget attack and its slices tuned different linf budgets"):
        merged_shards(merge_results(store, round=0, split="train"))
    doc = merge_results(store, round=0, split="train", allow_mixed_budgets=True)
    (rec,) = doc["attacks"]
    arrays, attrs = read_shard(rec["shard"])
    assert rec["budget"] == attrs["budget"] == max(budgets)
    assert json.loads(attrs["slice_budgets"]) == budgets and json.loads(attrs["attack_config"])["epsilon"] is None
    assert any("merged with mixed budgets" in n["text"] for n in rec["notes"])
    parts = [read_shard(d["attacks"][0]["shard"])[0] for d in docs]
    np.testing.assert_array_equal(arrays["within_budget"], np.concatenate([p["within_budget"] for p in parts]))
    # The union's fooling rate at every ε both slices probed: the attacked-weighted mean of theirs.
    n = [d["attacks"][0]["n_attacked"] for d in docs]
    curves = [dict(map(tuple, d["attacks"][0]["evaluations"])) for d in docs]
    common = [e for e, _ in docs[0]["attacks"][0]["evaluations"] if e in curves[1]]
    assert [e for e, _ in rec["evaluations"]] == common and common
    for e, rate in rec["evaluations"]:
        assert rate == pytest.approx((n[0] * curves[0][e] + n[1] * curves[1][e]) / sum(n))


def test_per_clip_search_slices_of_3_merge_to_the_unsliced_run_exactly(trained, tmp_path):
    """pgd with the per-clip ε search: a clip's probes and random start are its own, so 3 slices merged
    hold the unsliced run's minimal budgets, budget, CDF and within-budget flags exactly."""
    kw = dict(attacks=("pgd",), attack_params={"pgd": {"steps": 10}}, threshold=0.8, split="train",
              limit=24, checks=False, precision="clip")
    store_a, ckpt_a = workspace(trained, tmp_path / "a")
    (whole,) = attack(store_a, ckpt_a, **kw)["attacks"]
    store_b, ckpt_b = workspace(trained, tmp_path / "b")
    for i in range(3):
        attack(store_b, ckpt_b, slice=(i, 3), **kw)
    (rec,) = merge_results(store_b, round=0, split="train")["attacks"]
    a, _ = read_shard(whole["shard"])
    b, attrs = read_shard(rec["shard"])
    for key in ("minimal_budget", "minimal_budget_low", "within_budget", "success", "clean_index", "target",
                "predicted"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.testing.assert_allclose(a["adversarial"], b["adversarial"], atol=1e-6)
    assert rec["budget"] == whole["budget"] and rec["evaluations"] == whole["evaluations"]
    assert rec["fooling_rate"] == whole["fooling_rate"] and whole["search"] == "per-clip"
    assert rec["tolerance"] == whole["tolerance"] and rec["converged"] == whole["converged"]
    assert attrs["budget_source"] == "quantile of the union's per-clip minimal budgets"


def test_quantile_precision_slices_merge_to_an_honest_bracket(trained, tmp_path):
    """Slices searched with precision "quantile" refined only the clips near their own quantile:
    the merge's bracket (budget_low, budget] comes from the union's per-clip lower bounds and
    holds the quantile of a run that refined every clip; a bracket wider than the tolerance
    is reported, never passed off as converged."""
    kw = dict(attacks=("bim",), attack_params={"bim": {"steps": 5}}, threshold=0.8, split="train",
              limit=24, checks=False)
    store_a, ckpt_a = workspace(trained, tmp_path / "a")
    (exact,) = attack(store_a, ckpt_a, precision="clip", **kw)["attacks"]
    store_b, ckpt_b = workspace(trained, tmp_path / "b")
    for i in range(3):
        doc = attack(store_b, ckpt_b, slice=(i, 3), precision="quantile", **kw)
        assert doc["precision"] == "quantile" and doc["attacks"][0]["tolerance"]["precision"] == "quantile"
    (rec,) = merge_results(store_b, round=0, split="train")["attacks"]
    b, attrs = read_shard(rec["shard"])
    lo, hi = b["minimal_budget_low"], b["minimal_budget"]
    att = b["attacked"].astype(bool)
    assert np.all(lo[att] < hi[att]) and np.all(np.isnan(lo[~att]))
    low, budget, rtol = rec["tolerance"]["budget_low"], rec["budget"], rec["tolerance"]["rtol"]
    k = int(np.ceil(0.8 * att.sum() - 1e-9))
    assert budget == np.sort(hi[att])[k - 1] and low == np.sort(lo[att])[k - 1]
    # The run that refined every clip: BIM's success is not always monotone in ε, so a few clips'
    # budgets fall outside their bracket (1-2 of 8 here). With d such clips the k-th smallest budget lies above the
    # (k-d)-th lower bound and at or below the (k+d)-th upper bound; at least half must agree.
    e, _ = read_shard(exact["shard"])
    assert np.array_equal(e["attacked"], b["attacked"])
    e_hi = e["minimal_budget"][att]
    outside = int(np.sum(~((lo[att] < e_hi) & (e_hi <= hi[att] * (1 + rtol)))))
    n = int(att.sum())
    print(f"quantile run vs per-clip run: {outside} of {n} clips outside their bracket")
    assert outside <= n // 2
    lower = np.sort(lo[att])[k - outside - 1] if k - outside >= 1 else -np.inf
    upper = np.sort(hi[att])[k + outside - 1] * (1 + rtol) if k + outside <= n else np.inf
    assert lower < exact["budget"] <= upper
    wide = budget - low > rtol * budget
    assert rec["converged"] == (not wide) and rec["tolerance"]["precision"] == "quantile"
    assert any(n["code"] == "merged-precision" for n in rec["notes"]) == wide


def test_slices_that_attack_no_clip_are_rebuilt_from_the_store(merged, trained, tmp_path):
    """One clip per slice: a misclassified clip makes a slice that writes no shard, only its results."""
    store, ckpt = workspace(trained, tmp_path)
    docs = [attack(store, ckpt, batch_size=1, slice=(i, 6)) for i in range(6)]
    empty = [i for i, d in enumerate(docs) if d["attacks"][0]["shard"] is None]
    assert empty and all(docs[i]["attacks"][0]["n_attacked"] == 0 for i in empty)
    doc = merge_results(store, round=0, split="test")
    (mrec,) = doc["attacks"]
    (lrec,) = merged["local"]["attacks"]
    same_arrays(read_shard(lrec["shard"])[0], read_shard(mrec["shard"])[0])  # the rebuilt rows too
    for key in RECORD_KEYS:
        assert mrec[key] == lrec[key], key
    assert [s["file"] is None for s in mrec["merged_from"]["slices"]] == [i in empty for i in range(6)]
    # Issue 18: the results file is such a slice's only trace; truncated, it is named, the slice not called missing
    damaged = Path(docs[empty[0]]["results_path"])
    damaged.write_text(damaged.read_text()[:300])
    with pytest.raises(StoreError, match=rf"{damaged} is damaged: not readable JSON .*rerun slice {empty[0]}/6"):
        merge_results(store, round=0, split="test")


def test_slice_notes_union_reads_structured_and_old_plain_string_notes():
    from advaudio.attacks.merging import union_notes
    from advaudio.attacks.results import Note, excluded_note
    from advaudio.store.results import notes_of  # how a results record reads its notes

    pool = Note("starting-points", "boundary starting points (misclassified): 3 nearest from the pool",
                {"pool": 3, "noise": 0, "noise_draws": 256, "none": 0})
    slices = [(0, 2), (1, 2)]
    per_slice = [notes_of([excluded_note(1, 3).to_json(), pool.to_json()]),
                 notes_of([excluded_note(2, 3).to_json(), pool.to_json(),
                           Note("targets-given", "targets given by the caller").to_json()])]
    notes = union_notes(per_slice, slices, n_excluded=3, n=6)
    assert notes[0] == excluded_note(3, 6)  # recomputed for the union, the slices' own dropped
    assert notes[1] == pool  # every slice has it: once
    assert notes[2].code == "targets-given" and notes[2].text == "slice 1/2: targets given by the caller"
    assert notes[2].counts == {"slice": [1, 2]} and len(notes) == 3
    # Results files written before notes had codes hold plain strings; the exclusion note is still recognised.
    old = [notes_of([n.text for n in (excluded_note(1, 3), pool)]) for _ in slices]
    notes = union_notes(old, slices, n_excluded=2, n=6)
    assert [n.text for n in notes] == [excluded_note(2, 6).text, pool.text]
