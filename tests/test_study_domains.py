"""The study's threat-model axis: ``[attacks] domains = ["feature", "waveform"]``, the cells it makes,
their shared round-0 training, each domain's own retraining, and the report's threat-model table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from advaudio import layout
from advaudio import store as st
from advaudio.attacks.domain import threshold_snr_db
from advaudio.attacks.tuning import quantile_budget
from advaudio.errors import ParameterError
from advaudio.study.cells import expand_cells, training_twin
from advaudio.study.domain_table import snr_interval
from advaudio.study.spec import read_study
from tests.test_study import TINY, _advaudio, _summaries, _write

BASE = (TINY.replace('models = ["resnet18", "googlenet"]', 'models = ["resnet18"]')
        .replace('views = ["stft", "dwt+chroma"]', 'views = ["stft"]')
        .replace('names = ["pgd", "deepfool"]', 'names = ["pgd"]')
        .replace("[attacks.params.deepfool]\nsteps = 10\n", ""))
AXIS = BASE.replace('names = ["pgd"]', 'names = ["pgd"]\ndomains = ["feature", "waveform"]')


def _cells(tmp_path: Path, text: str, name: str = "s.toml"):
    spec = read_study(_write(tmp_path, text, name))
    return spec, expand_cells(spec)


def test_the_domain_axis_adds_a_waveform_cell_per_attacked_grid_point(tmp_path):
    _, legacy = _cells(tmp_path, BASE, "legacy.toml")
    spec, cells = _cells(tmp_path, AXIS)
    by = {(c.domain, c.test_fold): c for c in cells}
    # fold 2 is only trained (no domain), fold 3 is attacked in both domains
    assert sorted(by) == [("", 2), ("feature", 3), ("waveform", 3)]
    # the feature-domain cells are the study's cells without the axis: same ids, their results are reused
    assert {c.cell_id for c in cells if c.domain != "waveform"} == {c.cell_id for c in legacy}
    wave = by["waveform", 3]
    assert "-waveform-" in wave.cell_id and wave.key["domain"] == "waveform" and wave.rounds == 1
    assert wave.fingerprint != by["feature", 3].fingerprint
    # its training is the feature cell's: the twin it copies round 0 from
    assert training_twin(spec, wave).cell_id == by["feature", 3].cell_id
    assert training_twin(spec, by["feature", 3]) is None
    from advaudio.study.cells import attack_config

    assert attack_config(spec, wave).domain == "waveform" and attack_config(spec, by["feature", 3]).domain == "feature"


@pytest.mark.parametrize("change, message", [
    ('domains = ["feature", "waveform"]', None),
    ('domains = ["feature", "spectral"]', "unknown domain 'spectral'"),
    ('domains = ["waveform", "waveform"]', "lists a domain twice"),
    ('domains = []', "must not be empty"),
    ('domains = ["waveform"]\ndomain = "feature"', "either domain"),
])
def test_bad_domain_settings_fail_before_anything_runs(tmp_path, change, message):
    text = BASE.replace('names = ["pgd"]', f'names = ["pgd"]\n{change}')
    if message is None:
        assert read_study(_write(tmp_path, text)).domains == ("feature", "waveform")
        return
    with pytest.raises(ParameterError, match=message):
        read_study(_write(tmp_path, text))


def test_the_snr_at_the_threshold_is_the_attack_stages_figure_and_its_change_is_exact():
    rng = np.random.default_rng(3)
    snr = rng.uniform(10.0, 60.0, 40)
    snr[[3, 17]] = -np.inf  # two clips never fooled
    iv = snr_interval([snr[:25], snr[25:]], 0.9, resamples=500, seed=1)
    # the point: the attack stage's own definition, and by hand the ⌈0.9·n⌉-th largest SNR
    assert iv.snr_db == pytest.approx(threshold_snr_db(snr, np.isfinite(snr), 0.9)[0], abs=1e-9)
    assert iv.snr_db == pytest.approx(np.sort(snr)[::-1][math.ceil(0.9 * 40) - 1], abs=1e-9)
    assert iv.reached and iv.low <= iv.snr_db <= iv.high and iv.n == 40
    # ... and the same as the budget of the amplitude ratios, in dB
    amp = 10.0 ** (-snr / 20.0)
    assert iv.snr_db == pytest.approx(-20 * np.log10(quantile_budget(amp, 0.9)[0]), abs=1e-9)
    # a perturbation twice as loud on every clip is 20·log10(2) dB less, the interval of the change a point
    from advaudio.study.cellfile import AttackOutcome, RoundOutcome
    from advaudio.study.domain_table import _snr

    def outcome(k, s):
        o = AttackOutcome(attack="pgd", kind="fixed", norm="linf", search="clip", threshold=0.9, budget=0.1,
                          reached=True, fooling_rate=0.9, clip_rows=np.arange(len(s)),
                          minimal_norms=np.ones(len(s)), domain="waveform", clip_snr_db=s)
        return RoundOutcome(round=k, checkpoint="c", checkpoint_sha256="0" * 64, metrics="m", test_accuracy=0.5,
                            test_clips=len(s), attacks={"pgd": o})

    class S:  # what the table reads of a CellSummary: its rounds
        def __init__(self, before, after):
            self.rounds = (outcome(0, before), outcome(1, after))
            self.last_round = self.rounds[-1]

        def round(self, k):
            return self.rounds[k]

    cells = [S(snr[:25], snr[:25] - 20 * np.log10(2.0)), S(snr[25:], snr[25:] - 20 * np.log10(2.0))]
    before, after, change = _snr("pgd", cells, 0.9, resamples=300, confidence=0.95, seed=0)
    assert before.snr_db - after.snr_db == pytest.approx(20 * np.log10(2.0), abs=1e-9)
    assert change == pytest.approx((-20 * np.log10(2.0),) * 3, abs=1e-9)
    # not reached: fewer than ⌈0.9·n⌉ clips fooled
    low = snr_interval([np.where(np.arange(40) < 30, snr, -np.inf)], 0.9, resamples=100)
    assert not low.reached


@pytest.mark.slow
def test_a_study_with_both_domains_runs_and_reports_the_snr_at_the_threshold(tmp_path):
    text = (AXIS.replace("cv = [2, 3]", "cv = [3]").replace("epochs = 3", "epochs = 1"))
    study = _write(tmp_path, text)
    run = _advaudio("study", "run", str(study), cwd=tmp_path, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    summaries = {s.key.get("domain"): s for s in _summaries(study).values()}
    feature, wave = summaries["feature"], summaries["waveform"]
    # one training: the waveform cell attacked the feature cell's round-0 model, copied
    assert wave.round(0).checkpoint_sha256 == feature.round(0).checkpoint_sha256
    assert wave.round(0).checkpoint != feature.round(0).checkpoint
    # copied, not trained again (a second training would record its own wall time)
    assert Path(wave.round(0).metrics).read_bytes() == Path(feature.round(0).metrics).read_bytes()
    run_dir = Path(wave.run_dir)
    for k in (0, 1):
        assert layout.attack_results_path(run_dir, round=k, split="test", domain="waveform").is_file()
        assert not layout.attack_results_path(run_dir, round=k, split="test").exists()
    # each domain's round 1 retrained on its own domain's shards only
    from advaudio.training import load_checkpoint

    for s, domain in ((feature, "feature"), (wave, "waveform")):
        used = load_checkpoint(Path(s.round(1).checkpoint)).config["provenance"]["shards"]
        assert used and all(r.get("domain", "feature") == domain for r in used)
    # the outcome's SNRs are the shard's, for the clips the attack fooled within its budget
    outcome = wave.round(0).attacks["pgd"]
    shard = st.AdversarialShard.open(outcome.shard)
    a = shard.read(["attacked", "success", "snr_db"])
    att = np.asarray(a["attacked"], bool)
    expect = np.where(np.asarray(a["success"], bool), np.asarray(a["snr_db"], np.float64), -np.inf)[att]
    np.testing.assert_array_equal(outcome.clip_snr_db, expect)
    assert feature.round(0).attacks["pgd"].clip_snr_db is None

    report = _advaudio("study", "report", str(study), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp_path / "tiny.study" / "report"
    md = (out / "study.md").read_text()
    assert "## Threat models: feature vs waveform domain" in md
    assert "(1 of them attacked in the waveform domain: see Threat models)" in md
    doc = json.loads((out / "study.json").read_text())
    (row,) = doc["domains"]
    assert row["attack"] == "pgd" and row["feature"]["norm"] == row["waveform"]["norm"] == "linf"
    # the report's SNR at the threshold before retraining is the attack stage's own, recomputed here
    want, reached = threshold_snr_db(np.asarray(a["snr_db"], np.float64)[att],
                                     np.asarray(a["success"], bool)[att], outcome.threshold)
    if reached:
        assert row["snr_db_before"]["value"] == pytest.approx(want, abs=1e-9)
    # the feature rows of the paper's table are the feature cells only (the waveform budget is not pooled in)
    (paper_row,) = doc["rows"]
    assert feature.cell_id in paper_row["cells"] and wave.cell_id not in paper_row["cells"]


def test_the_plan_counts_the_front_end_in_every_waveform_step(tmp_path):
    from advaudio.study.cells import plan_stores
    from advaudio.study.costs import WAVEFORM_STEP_COST, waveform_step_cost, work

    spec, cells = _cells(tmp_path, AXIS)
    store = plan_stores(spec)["synth"]
    by = {c.domain: c for c in cells if c.attacked}
    feature, wave = work(spec, store, by["feature"]), work(spec, store, by["waveform"])
    assert wave.train_samples == feature.train_samples and wave.attack_clips == feature.attack_clips
    assert wave.gradient_steps == pytest.approx(feature.gradient_steps * WAVEFORM_STEP_COST["stft"])
    assert wave.forwards == pytest.approx(feature.forwards * WAVEFORM_STEP_COST["stft"])
    # a view not measured: the dearest measured one of its kind
    assert waveform_step_cost("tonnetz") == max(WAVEFORM_STEP_COST["stft+chroma"], WAVEFORM_STEP_COST["dwt+chroma"])
    assert waveform_step_cost("stft+dwt") == max(WAVEFORM_STEP_COST["stft"], WAVEFORM_STEP_COST["dwt"])
