"""``advaudio attack --domain waveform``: the clip's samples attacked through the view's front end.

A tiny model on the synthetic set (whose clips featurize regenerates from their seed) and on
a folder of WAVs (clips decoded again from their recorded paths).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from advaudio import layout
from advaudio import store as st
from advaudio.attacks.domain import load_clip_waveforms, threshold_snr_db
from advaudio.cli import main
from advaudio.errors import ParameterError, StoreError
from advaudio.features import FeatureConfig
from advaudio.frontend import from_store
from advaudio.stages.attack import AttackStageConfig, attack_stage
from advaudio.stages.featurize import FeaturizeConfig, featurize_store
from advaudio.store.results import read_attack_results
from advaudio.training import TrainConfig, load_checkpoint, train

SYNTH = {"clips_per_class": 10, "n_classes": 4, "duration": 1.0}
#: float32 arithmetic of the front end on another batch composition (measured: ≤ 1.6e-6 between one clip
#: at a time and the stage's batch, stft+chroma; 0 for the same batch)
FEATURE_TOLERANCE = 1e-5
#: The attack runs on u = (w + 1)/2 in float32: near full scale a u-ulp is 6e-8, 1.2e-7 in w. Foolbox's
#: x0 + δ rounds once (≤ 1.2e-7 in w) and the clean clip on that grid is ≤ 6e-8 from the decoded one.
GRID = 2.5e-7


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("wave")
    result = featurize_store(FeaturizeConfig(dataset="synthetic", dataset_options=SYNTH,
                                       features=FeatureConfig(representations=("stft", "chroma"))),
                       cache=base / "cache", workers=0, progress=False)
    train(TrainConfig(store=str(result.store_dir), view="stft", model="resnet18", width=0.125,
                      input_size=(32, 32), epochs=4, workers=0, seed=0), out_dir=base / "run", progress=False)
    return st.Store(result.store_dir), base / "run" / "checkpoint.pt"


@pytest.fixture(scope="module")
def attacked(trained):
    store, ckpt = trained
    config = AttackStageConfig(attacks=("pgd", "deepfool"), threshold=0.75, seed=3, limit=6, domain="waveform",
                               attack_params={"pgd": {"steps": 10}})
    return attack_stage(config, checkpoint=ckpt, device="cpu", progress=False)


def _shard(record) -> tuple[st.AdversarialShard, dict[str, np.ndarray]]:
    shard = st.AdversarialShard.open(record["shard"])
    return shard, shard.read()


def test_waveform_pgd_reaches_the_threshold_within_its_waveform_epsilon(trained, attacked):
    store, _ = trained
    record = next(r for r in attacked["attacks"] if r["attack"] == "pgd")
    assert record["reached"] and record["fooling_rate"] >= 0.75
    assert record["domain"] == "waveform" and attacked["domain"] == "waveform"
    shard, arrays = _shard(record)
    assert shard.attrs.domain == "waveform" and shard.attrs.threat_model == "waveform"
    assert layout.parse_shard_stem(shard.name).domain == "waveform"
    clean = load_clip_waveforms(store, arrays["clean_index"])
    wave = arrays["waveform"]
    assert wave.shape == clean.shape and wave.dtype == np.float32
    assert wave.min() >= -1.0 and wave.max() <= 1.0
    delta = np.abs(wave.astype(np.float64) - clean).max(axis=1)
    within = arrays["within_budget"]
    assert within.sum() >= np.ceil(0.75 * arrays["attacked"].sum())
    # within the waveform ε: the budget, in sample units, up to the attack space's float32 grid
    assert np.all(delta[within] <= record["budget"] + GRID)
    np.testing.assert_allclose(arrays["linf"][arrays["success"]], delta[arrays["success"]], atol=GRID)
    # a clip not attacked (misclassified when clean) stays as it was
    assert np.all(delta[~arrays["attacked"]] <= 6e-8)
    budgets = record["waveform_budgets"]
    assert budgets["reached"] and budgets["linf"] == pytest.approx(record["budget"])
    assert budgets["snr_db"] > 20  # a perturbation far below the clip


def test_shard_features_are_the_front_end_of_its_waveforms(trained, attacked):
    store, ckpt_path = trained
    ckpt = load_checkpoint(ckpt_path)
    front_end = from_store(store, ckpt.view)
    for record in attacked["attacks"]:
        _, arrays = _shard(record)
        with torch.no_grad():
            feats = front_end(torch.from_numpy(arrays["waveform"])).numpy()
            replay = ckpt.model(torch.from_numpy(arrays["adversarial"])).argmax(1).numpy()
        assert np.abs(feats - arrays["adversarial"]).max() <= FEATURE_TOLERANCE
        np.testing.assert_array_equal(replay, arrays["predicted"])
        success = arrays["success"]
        assert np.all(replay[success] != arrays["label"][success]) or record["targeted"]
        if record["targeted"]:
            assert np.all(replay[success] == arrays["target"][success])


def test_snr_per_clip_is_the_numpy_ratio(trained, attacked):
    store, _ = trained
    for record in attacked["attacks"]:
        _, arrays = _shard(record)
        clean = load_clip_waveforms(store, arrays["clean_index"]).astype(np.float64)
        delta = arrays["waveform"].astype(np.float64) - clean
        moved = (delta ** 2).sum(1) > 1e-10
        snr = 10 * np.log10((clean ** 2).sum(1)[moved] / (delta ** 2).sum(1)[moved])
        np.testing.assert_allclose(arrays["snr_db"][moved], snr, atol=1e-3)
        # the threshold's SNR: the largest s with ⌈0.75·n⌉ clips fooled at SNR ≥ s
        att = arrays["attacked"]
        fooled = arrays["success"][att]
        values = np.sort(np.where(fooled, arrays["snr_db"][att], -np.inf))[::-1]
        need = int(np.ceil(0.75 * att.sum()))
        expected = values[need - 1]
        got, reached = threshold_snr_db(arrays["snr_db"][att], fooled, 0.75)
        assert reached == (fooled.sum() >= need)
        if reached:
            assert got == pytest.approx(expected)


def test_threshold_snr_by_hand():
    snr = np.array([40.0, 30.0, 20.0, 10.0])
    assert threshold_snr_db(snr, [True] * 4, 0.5) == (30.0, True)
    assert threshold_snr_db(snr, [True] * 4, 1.0) == (10.0, True)
    value, reached = threshold_snr_db(snr, [True, False, False, True], 0.75)
    assert value == 10.0
    assert not reached


def test_the_domain_is_part_of_the_stage_configuration():
    assert "domain" not in AttackStageConfig(attacks=("pgd",)).to_dict()  # feature runs keep their fingerprints
    assert AttackStageConfig(attacks=("pgd",), domain="waveform").to_dict()["domain"] == "waveform"
    with pytest.raises(ParameterError, match="domain"):
        AttackStageConfig(attacks=("pgd",), domain="spectral")
    assert layout.attack_results_name(round=0, split="test", domain="waveform") == "attack-round00-test-waveform.json"
    assert layout.parse_attack_results_name("attack-round00-test-waveform.json").domain == "waveform"
    assert layout.parse_attack_results_name("attack-round00-test.json").domain == "feature"


def test_results_file_reads_back_typed(attacked):
    results = read_attack_results(attacked["results_path"])
    assert results.threat_model == "waveform" and results.front_end["scale"] == 2.0
    assert results.front_end["contract_max_abs"] <= 1e-3
    assert all(r.threat_model == "waveform" and r.waveform_budgets for r in results.records)


def test_retraining_refuses_mixing_domains(trained, attacked, tmp_path):
    store, ckpt_path = trained
    ckpt = load_checkpoint(ckpt_path)
    waveform = [Path(r["shard"]) for r in attacked["attacks"]]
    # one domain's shards pass the checks: their inputs are the view's, through its front end
    records = st.inspect_shards(waveform, store=store, held_out_folds=set(), view=ckpt.view.to_dict(),
                                require_provenance=False)
    assert {r["domain"] for r in records} == {"waveform"}
    feature = attack_stage(AttackStageConfig(attacks=("deepfool",), threshold=0.75, limit=4, checks=False),
                           checkpoint=ckpt_path, out_dir=tmp_path, device="cpu", progress=False)
    mixed = waveform + [Path(feature["attacks"][0]["shard"])]
    with pytest.raises(StoreError, match="mix threat models"):
        st.inspect_shards(mixed, store=store, held_out_folds=set(), view=ckpt.view.to_dict(),
                          require_provenance=False)


# --------------------------------------------------------------------------- #
# A folder dataset: clips decoded again from their recorded paths
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder")
    root = base / "sounds"
    rng = np.random.default_rng(0)
    sr = 22050
    t = np.arange(sr) / sr
    # the high clips peak above full scale (float WAVs, as a resampled clip normalised to full scale decodes)
    for name, freq, amplitude in [("low", 220.0, 0.3), ("high", 1760.0, 1.05)]:
        for i in range(4):
            y = amplitude * np.sin(2 * np.pi * freq * (1 + 0.05 * i) * t) + 0.02 * rng.standard_normal(sr)
            (root / name).mkdir(parents=True, exist_ok=True)
            sf.write(root / name / f"{name}{i}.wav", y.astype(np.float32), sr, subtype="FLOAT")
    result = featurize_store(FeaturizeConfig(dataset="folder", root=str(root), dataset_options={"n_folds": 2,
                                                                                          "duration": 1.0},
                                       features=FeatureConfig(representations=("stft",))),
                       cache=base / "cache", workers=0, progress=False)
    train(TrainConfig(store=str(result.store_dir), view="stft", model="resnet18", width=0.125,
                      input_size=(32, 32), epochs=2, workers=0, seed=0), out_dir=base / "run", progress=False)
    return root, st.Store(result.store_dir), base / "run" / "checkpoint.pt"


def test_folder_dataset_is_attacked_in_the_waveform_domain(folder_run, tmp_path):
    root, store, ckpt = folder_run
    doc = attack_stage(AttackStageConfig(attacks=("deepfool",), threshold=0.5, domain="waveform", checks=False),
                       checkpoint=ckpt, out_dir=tmp_path, device="cpu", progress=False)
    shard, arrays = _shard(doc["attacks"][0])
    decoded = np.stack([sf.read(root / cid, dtype="float32")[0] for cid in arrays["clip_id"]])
    assert np.abs(load_clip_waveforms(store, arrays["clean_index"]) - decoded).max() <= 1e-6
    # no clean clip is clipped: the attack's box is [-B, B] with B the loudest clip's peak (the stored
    # features came from the unclipped clips; a clipped one would fail the front end's contract)
    bound = float(np.abs(load_clip_waveforms(store, np.flatnonzero(store.folds == store.folds[
        arrays["clean_index"][0]]))).max())
    assert bound > 1.0 and shard.attrs.waveform_scale == pytest.approx(2 * bound, rel=1e-6)
    assert np.abs(arrays["waveform"]).max() <= bound * (1 + 1e-6)
    moved = arrays["success"]
    # unmoved clips are the decoded ones through w ↦ (w + B)/2B ↦ 2B·u − B in float32: four roundings of at most
    # half an ulp at magnitude ≤ 2B (measured 1.8e-7 at B = 1.12; with B = 1 the scaling is exact, 6e-8)
    assert np.all(np.abs(arrays["waveform"][~moved] - decoded[~moved]).max(initial=0.0) <= 4 * 2 * bound * 2**-24)


def _attack_error(ckpt, out, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["attack", "--checkpoint", str(ckpt), "--attacks", "deepfool", "--domain", "waveform",
              "--no-checks", "--out", str(out), "--no-progress", "--round", "7"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


def test_missing_or_changed_audio_is_one_clear_error(folder_run, tmp_path, capsys):
    root, store, ckpt = folder_run
    copy = tmp_path / "sounds"
    shutil.copytree(root, copy)
    test_fold = load_checkpoint(ckpt).test_fold
    victim = next(str(c) for c, f in zip(store.clip_ids, store.folds) if int(f) == int(test_fold))
    try:
        (root / victim).unlink()
        err = _attack_error(ckpt, tmp_path / "a", capsys)
        assert victim in err and "cannot be decoded" in err
        # the audio is back, but another clip's: it no longer matches its stored features
        other = next(p for p in copy.rglob("*.wav") if p.parent.name != Path(victim).parent.name)
        shutil.copy(other, root / victim)
        err = _attack_error(ckpt, tmp_path / "b", capsys)
        assert victim in err and "no longer match" in err
    finally:
        shutil.copy(copy / victim, root / victim)
    assert not list((tmp_path / "a").glob("*.json")) and not list((tmp_path / "b").glob("*.json"))


def test_waveform_runs_are_not_sliced():
    with pytest.raises(ParameterError, match="not sliced"):
        AttackStageConfig(attacks=("pgd",), domain="waveform", slice=(0, 2))


def test_listen_writes_the_shards_exact_waveforms(trained, attacked, tmp_path):
    from advaudio.reporting.listening import listen

    store, _ = trained
    record = next(r for r in attacked["attacks"] if r["attack"] == "pgd")
    _, arrays = _shard(record)
    result = listen(record["shard"], tmp_path, store=store)
    assert result.method == "exact"
    wave, sr = sf.read(result.adversarial_wav, dtype="float32")
    np.testing.assert_array_equal(wave, arrays["waveform"][result.sample])
    clean, _ = sf.read(result.clean_wav, dtype="float32")
    delta = wave.astype(np.float64) - clean
    assert result.snr_db_waveform == pytest.approx(10 * np.log10((clean.astype(np.float64) ** 2).sum()
                                                                 / (delta ** 2).sum()), abs=1e-3)


@pytest.fixture(scope="module")
def chroma_run(tmp_path_factory):
    """A view with a CQT (``stft+chroma``, the chromagram floored as the front end needs) on the synthetic set."""
    base = tmp_path_factory.mktemp("chroma")
    result = featurize_store(FeaturizeConfig(dataset="synthetic", dataset_options={**SYNTH, "clips_per_class": 6},
                                       features=FeatureConfig(representations=("stft", "chroma"),
                                                              chroma_floor_db=80.0)),
                       cache=base / "cache", workers=0, progress=False)
    train(TrainConfig(store=str(result.store_dir), view="stft+chroma", model="resnet18", width=0.125,
                      input_size=(32, 32), epochs=3, workers=0, seed=0), out_dir=base / "run", progress=False)
    return st.Store(result.store_dir), base / "run" / "checkpoint.pt"


def test_cqt_tuning_is_frozen_per_clip_and_kept_in_the_shard(chroma_run):
    store, ckpt_path = chroma_run
    doc = attack_stage(AttackStageConfig(attacks=("pgd",), threshold=0.5, limit=4, domain="waveform", checks=False,
                                         attack_params={"pgd": {"steps": 8}}),
                       checkpoint=ckpt_path, device="cpu", progress=False)
    shard, arrays = _shard(doc["attacks"][0])
    ckpt = load_checkpoint(ckpt_path)
    front_end = from_store(store, ckpt.view)
    clean = load_clip_waveforms(store, arrays["clean_index"])
    # the tuning featurize estimated from each clean clip, not re-estimated on the perturbed one
    np.testing.assert_array_equal(arrays["tuning"], np.asarray(front_end.estimate_tuning(clean), np.float64))
    assert "frozen" in shard.attrs.tuning_rule
    with torch.no_grad():
        feats = front_end(torch.from_numpy(arrays["waveform"]), tuning=list(arrays["tuning"])).numpy()
    assert np.abs(feats - arrays["adversarial"]).max() <= FEATURE_TOLERANCE
    assert doc["front_end"]["contract_max_abs"] <= 1e-2


def test_the_report_never_mixes_waveform_budgets_with_feature_budgets(trained, attacked):
    from advaudio.reporting.discovery import collect_runs

    _, ckpt = trained
    data = collect_runs([ckpt.parent])
    (run,) = data.runs
    assert all(a.document.threat_model == "feature" for a in run.attacks)
    assert any("waveform-domain results" in w and "attack-round00-test-waveform.json" in w for w in run.warnings)


def test_retrain_takes_waveform_shards_and_refuses_a_round_of_both_domains(trained, tmp_path):
    from advaudio.stages.retrain import RetrainConfig, retrain_checkpoint

    store, ckpt = trained
    attack_stage(AttackStageConfig(attacks=("pgd",), split="train", round=4, threshold=0.5, limit=6,
                                   domain="waveform", checks=False, attack_params={"pgd": {"steps": 5}}),
                 checkpoint=ckpt, out_dir=tmp_path / "attacks", device="cpu", progress=False)
    retrain_checkpoint(ckpt, out_dir=tmp_path / "retrained", round=4, config=RetrainConfig(epochs=1), device="cpu",
            progress=False)
    shards = load_checkpoint(tmp_path / "retrained" / "checkpoint.pt").config["provenance"]["shards"]
    assert [s["domain"] for s in shards] == ["waveform"]
    attack_stage(AttackStageConfig(attacks=("deepfool",), split="train", round=4, threshold=0.5, limit=6,
                                   checks=False),
                 checkpoint=ckpt, out_dir=tmp_path / "attacks", device="cpu", progress=False)
    with pytest.raises(StoreError, match="mix threat models"):
        retrain_checkpoint(ckpt, out_dir=tmp_path / "again", round=4, config=RetrainConfig(epochs=1), device="cpu",
                progress=False)
    # asked for one domain, a round of both retrains on that domain's shards alone
    for domain in ("waveform", "feature"):
        retrain_checkpoint(ckpt, out_dir=tmp_path / f"only-{domain}", round=4, config=RetrainConfig(epochs=1),
                           device="cpu", progress=False, domain=domain)
        shards = load_checkpoint(tmp_path / f"only-{domain}" / "checkpoint.pt").config["provenance"]["shards"]
        assert [s.get("domain", "feature") for s in shards] == [domain]


def test_rounds_in_the_waveform_domain_attack_and_retrain_on_waveforms(trained, tmp_path, capsys):
    _, ckpt = trained
    run = tmp_path / "run"
    shutil.copytree(ckpt.parent, run)
    args = ["rounds", str(run), "--rounds", "1", "--attacks", "pgd", "--fooling-rate", "0.5", "--limit", "4",
            "--train-limit", "6", "--epochs", "1", "--no-checks", "-p", "pgd.steps=5", "--no-progress"]
    main([*args, "--domain", "waveform", "--allow-unreached"])
    for k in (0, 1):
        path = layout.attack_results_path(run, round=k, split="test", domain="waveform")
        assert read_attack_results(path).domain == "waveform"
        assert not layout.attack_results_path(run, round=k, split="test").exists()
    shards = load_checkpoint(layout.checkpoint_path(run, round=1)).config["provenance"]["shards"]
    assert shards and all(s["domain"] == "waveform" for s in shards)
    # one domain per run directory: the other is refused, naming the option
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--domain", "feature"])
    assert exit_info.value.code == 2 and "domain: 'waveform' → 'feature'" in capsys.readouterr().err


def test_decision_based_attacks_run_in_the_waveform_domain_within_their_query_budget(trained, tmp_path):
    """Boundary and HopSkipJump see ``classifier ∘ front end`` like any model: their adversarial waveforms
    fool it through the front end, within the query budget per clip (plus the starting points' pool search)."""
    store, ckpt_path = trained
    budget = 60
    doc = attack_stage(AttackStageConfig(attacks=("boundary", "hopskipjump"), threshold=0.5, seed=3, limit=12,
                                         domain="waveform", checks=False, round=5,
                                         attack_params={a: {"max_queries": budget} for a in ("boundary",
                                                                                             "hopskipjump")}),
                       checkpoint=ckpt_path, out_dir=tmp_path, device="cpu", progress=False)
    ckpt = load_checkpoint(ckpt_path)
    front_end = from_store(store, ckpt.view)
    for record in doc["attacks"]:
        assert record["domain"] == "waveform", record
        _, arrays = _shard(record)
        attacked = int(arrays["attacked"].sum())
        # per clip at most the budget; the starting-point pools (the batch's clean clips, the noise draws) are
        # classified once per run, charged to no clip
        (note,) = [n for n in record["notes"] if n["code"] == "query-budget"]
        assert note["most_used"] <= budget
        draws = AttackStageConfig().attack_config(record["attack"]).resolved().params.noise_draws
        assert record["queries"] <= attacked * budget + len(arrays["attacked"]) + draws
        with torch.no_grad():
            feats = front_end(torch.from_numpy(arrays["waveform"]))
            replay = ckpt.model(feats).argmax(1).numpy()
        ok = arrays["success"]
        assert ok.any() and np.all(replay[ok] == arrays["target"][ok])
        assert np.abs(arrays["waveform"]).max() <= 1.0 + 1e-6
