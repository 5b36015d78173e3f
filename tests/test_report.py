"""The report stage on a real (tiny) run: featurize → train → attack → retrain → attack → report.

One run directory is built once per module with the library itself: a synthetic
store (3 classes × 8 one-second clips, STFT only, 3 folds), a ResNet-18 at width
0.125 on 32×32 inputs, FGSM and DeepFool tuned to a 50 % fooling rate on round 0's
test and training folds, a round-1 model fine-tuned with the training-fold shards
(``round01/``), and the same attacks on it with ``round=1``. The report written from
it is checked against the files it was made from: every number, the CSV, the
figures, the HTML and the WAV files.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch

from advaudio.errors import ParameterError
from advaudio.reporting import (
    VALUE_COLUMNS,
    Link,
    collect_runs,
    figures,
    fmt_num,
    fmt_pct,
    fooling_rate_at,
    render_html,
    render_markdown,
    resolve_pointer,
    write_report,
)
from advaudio.reporting.listening import (
    clean_audio,
    db_to_magnitude,
    listen,
    model_input_to_db,
    resynthesize,
    spectrogram_snr_db,
    waveform_snr_db,
)
from advaudio.store import Store, write_sealed_json
from advaudio.views import View, fit_view

ATTACKS = ("fgsm", "deepfool")


def _snr(ref: np.ndarray, test: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    test = np.asarray(test, np.float64)
    return float(10.0 * np.log10(np.sum(ref**2) / np.sum((test - ref) ** 2)))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real two-round run directory, its store, and the report written from it."""
    from advaudio.features import FeatureConfig
    from advaudio.stages.attack import AttackStageConfig, attack_stage
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store
    from advaudio.training import TrainConfig, train

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("report")
    res = featurize_store(
        FeaturizeConfig(dataset="synthetic",
                        dataset_options={"clips_per_class": 8, "n_classes": 3, "duration": 1.0, "n_folds": 3},
                        features=FeatureConfig(representations=("stft",))),
        cache=tmp / "cache", workers=0, progress=False,
    )
    run_dir = tmp / "run"
    # The paper recipe: the report's figures, not the training recipe, are under test.
    common = dict(store=str(res.store_dir), view="stft", model="resnet18", width=0.125, input_size=(32, 32),
                  batch_size=4, workers=0, device="cpu", time_shift=0.0, amp=False, recipe="paper")
    train(TrainConfig(epochs=3, lr=5e-3, **common), out_dir=run_dir, progress=False)
    stage = dict(attacks=ATTACKS, threshold=0.5, limit=8)
    attack_stage(AttackStageConfig(**stage), checkpoint=run_dir / "checkpoint.pt", device="cpu", progress=False)
    made = attack_stage(AttackStageConfig(split="train", **stage), checkpoint=run_dir / "checkpoint.pt",
                        device="cpu", progress=False)
    shards = tuple(r["shard"] for r in made["attacks"] if r["shard"])
    assert shards, "round 0's training-fold attacks wrote no shard to retrain with"
    train(TrainConfig(epochs=2, lr=2e-3, init_checkpoint=str(run_dir / "checkpoint.pt"), extra_sources=shards,
                      mix=0.5, provenance={"round": 1}, **common), out_dir=run_dir / "round01", progress=False)
    attack_stage(AttackStageConfig(round=1, **stage), checkpoint=run_dir / "round01" / "checkpoint.pt",
                 device="cpu", progress=False)
    out = tmp / "report"
    md = write_report([run_dir], out, max_clips=2)
    return {"run_dir": run_dir, "store": Store(res.store_dir), "out": out, "md": md,
            "json": json.loads((out / "report.json").read_text())}


# --------------------------------------------------------------------------- #
# Collection
# --------------------------------------------------------------------------- #
def test_collect_runs_groups_files_by_round(run):
    data = collect_runs([run["run_dir"]])
    (r,) = data.runs
    assert r.rounds == [0, 1]
    assert r.metrics[0].path == run["run_dir"] / "metrics.json"
    assert r.metrics[1].path == run["run_dir"] / "round01" / "metrics.json"
    # train.py writes the round its configuration's provenance names (retrain sets it)
    assert r.metrics[1].round_from == "metrics.json"
    assert {(a.round, a.split, a.attack) for a in r.attacks} == {
        (0, "test", "fgsm"), (0, "test", "deepfool"), (0, "train", "fgsm"), (0, "train", "deepfool"),
        (1, "test", "fgsm"), (1, "test", "deepfool")}
    assert r.model["name"] == "resnet18" and r.view == "stft" and r.test_fold == 3


def test_top_level_round_in_metrics_wins(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run["run_dir"], copy, ignore=shutil.ignore_patterns("*.pt"))
    m = json.loads((copy / "round01" / "metrics.json").read_text())
    m["round"] = 3
    write_sealed_json(copy / "round01" / "metrics.json", m)  # as the library writes it (a plain edit is refused)
    r = collect_runs(copy).runs[0]
    assert sorted(r.metrics) == [0, 3] and r.metrics[3].round_from == "metrics.json"
    with pytest.raises(ParameterError):
        collect_runs([tmp_path / "missing"])


# --------------------------------------------------------------------------- #
# Numbers
# --------------------------------------------------------------------------- #
def test_every_number_equals_its_source(run):
    rows = run["json"]["values"]
    assert {r["metric"] for r in rows} >= {"clean_test_accuracy", "budget", "fooling_rate", "budget_ratio",
                                           "fooling_rate_at_fixed_budget", "snr_db_waveform"}
    checked = 0
    for row in rows:
        if row["source"] == "derived":
            continue
        source = json.loads(Path(row["source"]).read_text())
        assert resolve_pointer(source, row["pointer"]) == row["value"], row
        checked += 1
    assert checked >= 2 + 2 * 3 * 8  # 2 accuracies, ≥ 8 numbers per attack record

    # the headline numbers, read independently from the files train.py and attack_stage wrote
    d = run["run_dir"]
    acc0 = json.loads((d / "metrics.json").read_text())["test"]["accuracy"]
    acc1 = json.loads((d / "round01" / "metrics.json").read_text())["test"]["accuracy"]
    att0 = {a["attack"]: a for a in json.loads((d / "attack-round00-test.json").read_text())["attacks"]}
    att1 = {a["attack"]: a for a in json.loads((d / "round01" / "attack-round01-test.json").read_text())["attacks"]}

    def value(metric, round, attack=""):
        (hit,) = [r for r in rows if r["metric"] == metric and r["round"] == round and r["attack"] == attack
                  and r["split"] in ("test", "")]
        return hit["value"]

    assert value("clean_test_accuracy", 0) == acc0
    assert value("clean_test_accuracy", 1) == acc1
    assert value("clean_test_accuracy_change", 1) == pytest.approx(acc1 - acc0)
    for name in ATTACKS:
        a0, a1 = att0[name], att1[name]
        assert value("budget", 0, name) == a0["budget"] and value("budget", 1, name) == a1["budget"]
        assert value("fooling_rate", 0, name) == a0["fooling_rate"]
        assert value("fooling_rate", 1, name) == a1["fooling_rate"]
        ratio = value("budget_ratio", 1, name)
        if a0["reached"] and a1["reached"]:
            assert ratio == pytest.approx(a1["budget"] / a0["budget"])
        else:
            assert ratio is None
        # fooling rate of round 1 at round 0's budget, recomputed here from the raw evaluations
        if a0["reached"]:
            eps = a0["budget"]
            pts = sorted(map(tuple, a1["evaluations"]))
            if a1["kind"] == "minimisation":
                expected = max([r for e, r in pts if e <= eps], default=0.0)
            else:
                xs, ys = zip(*([(0.0, 0.0)] + pts))
                expected = float(np.interp(eps, xs, ys))
            assert value("fooling_rate_at_fixed_budget", 1, name) == pytest.approx(expected)
            assert value("fixed_budget_epsilon", 1, name) == eps


def test_csv_matches_json(run):
    with open(run["out"] / "report.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == VALUE_COLUMNS
        rows = list(reader)
    expected = run["json"]["values"]
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected):
        for key in VALUE_COLUMNS:
            if key == "value":
                assert (None if got[key] == "" else float(got[key])) == (
                    None if want[key] is None else float(want[key]))
            else:
                assert got[key] == str(want[key]), key


def test_markdown_shows_the_numbers(run):
    md = run["md"].read_text()
    for section in ("Summary: clean test accuracy", "Budget at the fooling-rate threshold",
                    "Fooling rate at a fixed budget", "Fooling rate against ε", "Fig. 1", "Listening",
                    "How to read", "Retraining data"):
        assert section in md
    for row in run["json"]["values"]:
        if row["metric"] == "clean_test_accuracy":
            assert fmt_pct(row["value"]) in md
        if row["metric"] == "budget" and row["split"] == "test":
            text = fmt_num(row["value"]) if not row["note"] else row["note"]
            assert text in md, row


def test_html_is_self_contained_with_tables_figures_and_audio(run):
    text = (run["out"] / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<table>") >= 4
    assert "<style>" in text and "http" not in text.split("<body>")[0]
    for rel in run["json"]["figures"]:
        assert f'src="{rel}"' in text
    assert "<audio controls" in text
    page = render_html([("p", "a <b> & c"), ("table", ["x<y"], [[Link("f&g", "audio/a b.wav", audio=True)]])],
                       title="t<")
    assert "a &lt;b&gt; &amp; c" in page and "x&lt;y" in page and "<title>t&lt;</title>" in page
    assert 'src="audio/a b.wav"' in page and ">f&amp;g</a>" in page
    assert "[f&g](<audio/a b.wav>)" in render_markdown([("table", ["h"], [[Link("f&g", "audio/a b.wav")]])])


def test_figures_are_valid_pngs(run):
    import matplotlib.image as mpimg

    rels = run["json"]["figures"]
    names = {Path(r).name for r in rels}
    assert {"accuracy_by_round.png", "budget_by_round.png", "fooling_rate-run.png",
            "examples-run-round00.png", "examples-run-round01.png"} <= names
    for rel in rels:
        path = run["out"] / rel
        assert path.stat().st_size > 5000
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and img.shape[2] in (3, 4)
        assert float(img[..., :3].std()) > 0.01  # not a blank canvas


# --------------------------------------------------------------------------- #
# Listening
# --------------------------------------------------------------------------- #
def test_wavs_and_their_snr(run):
    items = [i for r in run["json"]["runs"] for ex in r["examples"] for i in ex["listening"]]
    assert items, "no listening entries although the view is stft"
    store = run["store"]
    fz = store.config["featurize"]["features"]
    for item in items:
        waves = {}
        for key in ("clean_wav", "clean_resynth_wav", "adversarial_wav"):
            path = run["out"] / item[key]
            info = sf.info(path)
            assert info.samplerate == fz["sr"] == item["sr"]
            assert info.frames / info.samplerate == pytest.approx(1.0)
            waves[key], _ = sf.read(path, dtype="float64")
        assert item["snr_db_waveform"] == pytest.approx(_snr(waves["clean_resynth_wav"], waves["adversarial_wav"]),
                                                        rel=1e-9)
        assert item["clean_resynth_snr_db"] == pytest.approx(_snr(waves["clean_wav"], waves["clean_resynth_wav"]),
                                                             rel=1e-9)
        # the clean WAV is the clip as featurized (gain 1 unless a resynthesis clipped)
        y, _ = clean_audio(store, item["store_row"])
        np.testing.assert_allclose(waves["clean_wav"], y * item["gain"], atol=1e-6)
        # spectrogram-domain SNR: the shard's model-space input against the store's clean one
        with h5py.File(item["shard"], "r") as f:
            adv = f["adversarial"][item["sample"]]
            view = View.from_dict(json.loads(f.attrs["view"]))
            shard_snr = float(f["snr_db"][item["sample"]])
        clean = view.read(store.reader(), [item["store_row"]]).numpy()[0]
        assert item["snr_db_spectrogram"] == pytest.approx(_snr(clean, adv), rel=1e-9)
        assert item["snr_db_spectrogram"] == pytest.approx(shard_snr, rel=1e-5)
    listed = [r for r in run["json"]["values"] if r["metric"] == "snr_db_waveform"]
    assert [r["value"] for r in listed] == [i["snr_db_waveform"] for i in items]
    assert len(run["json"]["audio"]) == 3 * len(items)


def test_spectrogram_snr_db_is_the_energy_ratio():
    rng = np.random.default_rng(0)
    x = rng.random((1, 32, 32))
    a = x + 0.01 * rng.standard_normal(x.shape)
    assert spectrogram_snr_db(x, a) == pytest.approx(10 * np.log10((x**2).sum() / ((a - x) ** 2).sum()))
    assert spectrogram_snr_db(x, x) == math.inf
    assert waveform_snr_db(x[0, 0], 2 * x[0, 0]) == pytest.approx(0.0)
    with pytest.raises(ParameterError):
        spectrogram_snr_db(x, x[0])


def test_clean_stft_input_inverts_to_the_clean_audio(run):
    store = run["store"]
    cfg = store.config["featurize"]["features"]
    rows = store.select(folds=[1, 2])
    # a native-size view with the full range: the only losses left are top_db and float32
    full = fit_view(store, "stft", rows=rows, input_size=None, percentiles=(0.0, 100.0))
    for row in (0, 9, 20):
        y, sr = clean_audio(store, row)
        x = full.read(store.reader(), [row]).numpy()[0]
        db = model_input_to_db(x, full)
        np.testing.assert_allclose(db, store.read("stft", [row])[0], atol=2e-3 * (full.high[0] - full.low[0]))
        np.testing.assert_allclose(db_to_magnitude(db), 10 ** (db / 20))
        assert _snr(y, resynthesize(x, full, cfg, clean_audio=y)) > 20.0
    # the model's resized view: back to (bands, frames), and Griffin-Lim gives audio of the right length
    resized = fit_view(store, "stft", rows=rows, input_size=(32, 32))
    x = resized.read(store.reader(), [0]).numpy()[0]
    assert model_input_to_db(x, resized).shape == tuple(resized.shapes[0])
    y, _ = clean_audio(store, 0)
    g = resynthesize(x, resized, cfg, n_samples=len(y), method="griffinlim", n_iter=4)
    assert g.shape == y.shape and np.isfinite(g).all()
    with pytest.raises(ParameterError):
        model_input_to_db(x, View(("dwt",), ((128, 44),), None, (0.0,), (1.0,)))


def test_listen_writes_three_wavs(run, tmp_path):
    shard = next(Path(run["store"].directory / "adversarial").glob("round00-test-*-deepfool.h5"))
    res = listen(shard, tmp_path, method="phase")
    assert res.attack == "deepfool" and res.round == 0 and res.split == "test"
    for p in (res.clean_wav, res.clean_resynth_wav, res.adversarial_wav):
        assert Path(p).is_file()
    with pytest.raises(ParameterError):
        listen(shard, tmp_path, method="vocoder")


# --------------------------------------------------------------------------- #
# Missing parts and pure helpers
# --------------------------------------------------------------------------- #
def test_one_round_and_unreached_threshold_render(run, tmp_path):
    """No retrain round yet, and an attack whose threshold was not reached (budget null)."""
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run["run_dir"] / "metrics.json", copy / "metrics.json")
    doc = json.loads((run["run_dir"] / "attack-round00-test.json").read_text())
    doc["attacks"][0].update(budget=None, reached=False, reason="success rate 0.2 < 0.9: 4 of 5 not fooled")
    write_sealed_json(copy / "attack-round00-test.json", doc)
    out = tmp_path / "out"
    md = write_report([copy], out, listen=False, max_clips=1).read_text()
    assert "not reached: success rate 0.2 < 0.9: 4 of 5 not fooled" in md
    assert "Only one round so far" in md and "No later round attacked yet" in md
    report = json.loads((out / "report.json").read_text())
    (budget,) = [r for r in report["values"] if r["metric"] == "budget" and r["attack"] == doc["attacks"][0]["attack"]]
    assert budget["value"] is None and budget["note"].startswith("not reached")
    assert not report["audio"] and "disabled" in md
    for rel in report["figures"]:
        assert (out / rel).stat().st_size > 0


def test_fooling_rate_at():
    cdf = [[0.1, 0.25], [0.2, 0.5], [0.4, 1.0]]
    assert fooling_rate_at(cdf, 0.05, "minimisation")["value"] == 0.0
    assert fooling_rate_at(cdf, 0.2, "minimisation")["value"] == 0.5
    assert fooling_rate_at(cdf, 0.3, "minimisation")["value"] == 0.5
    probes = [[1.0, 1.0], [0.5, 0.8], [0.25, 0.4]]  # bisection order
    assert fooling_rate_at(probes, 0.5, "fixed-budget")["value"] == 0.8
    assert fooling_rate_at(probes, 0.375, "fixed-budget")["value"] == pytest.approx(0.6)
    assert fooling_rate_at(probes, 0.125, "fixed-budget")["value"] == pytest.approx(0.2)  # (0, 0) anchor
    assert fooling_rate_at(probes, 2.0, "fixed-budget")["value"] == 1.0
    assert fooling_rate_at([], 0.1, "fixed-budget")["value"] is None
    assert fooling_rate_at(probes, None, "fixed-budget")["value"] is None


def test_figure_functions_take_missing_values(tmp_path):
    p = figures.budget_by_round({"pgd": {"a": [(0, None), (1, None)]}}, tmp_path / "b.png")
    assert p.stat().st_size > 0
    p = figures.accuracy_by_round({}, tmp_path / "a.png")
    assert p.stat().st_size > 0
    with pytest.raises(ValueError):
        figures.adversarial_grid(np.zeros((2, 8, 8)), {"x": np.zeros((2, 8, 9))}, tmp_path / "g.png")


def test_evaluation_checks_and_robust_accuracy_are_shown_per_round(run):
    (r,) = run["json"]["runs"]
    tests = [ev for ev in r["evaluation"] if ev["split"] == "test"]
    assert [ev["round"] for ev in tests] == [0, 1]
    md = Path(run["md"]).read_text()
    assert "## Evaluation checks" in md and "## Robust accuracy at fixed ε" in md
    for ev in tests:
        doc = json.loads(Path(ev["source"]).read_text())
        assert ev["checks"] == doc["evaluation"]["checks"] and ev["checks"]
        for c in ev["checks"]:  # every check recorded in the results is a PASS / WARN row
            status = "PASS" if c["status"] == "pass" else "WARN"
            assert f"| {c['check']} | {', '.join(c['attacks'])} | {status} |" in md
        assert set(ev["robust_accuracy"]) == {"linf", "l2"}  # fgsm: linf, deepfool: l2
