"""The study report: bootstrap intervals, the per-dataset tables and the written files.

Cell summaries with known numbers are written with ``write_cell_summary`` into
temporary cell directories and read back with ``read_cell_summary``; every number
of the tables and files is checked against numpy computed here from the same
arrays.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from advaudio.attacks.tuning import quantile_budget
from advaudio.errors import ParameterError
from advaudio.reporting.bootstrap import budget_interval, mean_std, percentile_interval, ratio_interval


# --------------------------------------------------------------------------- #
# bootstrap: an independent loop over the documented random stream
# --------------------------------------------------------------------------- #
def _loop_stat(pooled: np.ndarray, threshold: float) -> float:
    budget, reached = quantile_budget(pooled, threshold)
    return budget if reached else math.inf


def _loop_interval(stats: list[float], confidence: float) -> tuple[float, float]:
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(stats), [a, 1.0 - a], method="inverted_cdf")
    return float(lo), float(hi)


def _loop_budget(cells, threshold, resamples, confidence, seed):
    gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(cells))]
    stats = []
    for _ in range(resamples):
        pooled = []
        for cell, rng in zip(cells, gens):
            n = len(cell)
            pooled.append(np.asarray(cell)[np.floor(rng.random(n) * n).astype(int)])
        stats.append(_loop_stat(np.concatenate(pooled), threshold))
    return _loop_interval(stats, confidence)


def _loop_ratio(cells, threshold, resamples, confidence, seed):
    """cells: ((rows_b, norms_b), (rows_a, norms_a)); per cell the union of rows is resampled."""
    unions = []
    for (rb, nb), (ra, na) in cells:
        rows = sorted(set(rb) | set(ra))
        unions.append([(dict(zip(rb, nb)).get(r), dict(zip(ra, na)).get(r)) for r in rows])
    gens = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(cells))]
    stats = []
    for _ in range(resamples):
        before, after = [], []
        for clips, rng in zip(unions, gens):
            n = len(clips)
            for i in np.floor(rng.random(n) * n).astype(int):
                if clips[i][0] is not None:
                    before.append(clips[i][0])
                if clips[i][1] is not None:
                    after.append(clips[i][1])
        b = _loop_stat(np.array(before), threshold) if before else math.nan
        a = _loop_stat(np.array(after), threshold) if after else math.nan
        stats.append(a / b if math.isfinite(b) else math.nan)
    defined = [s for s in stats if not math.isnan(s)]
    return _loop_interval(defined, confidence), 1.0 - len(defined) / len(stats)


def test_budget_interval_equals_an_independent_loop():
    rng = np.random.default_rng(7)
    cells = [rng.exponential(0.1, 23), rng.exponential(0.3, 9), rng.exponential(0.2, 14)]
    cells[1][[2, 5]] = np.inf  # never fooled
    got = budget_interval(cells, 0.8, resamples=300, confidence=0.9, seed=3)
    lo, hi = _loop_budget(cells, 0.8, 300, 0.9, 3)
    assert (got.low, got.high) == (lo, hi)
    budget, reached = quantile_budget(np.concatenate(cells), 0.8)
    assert (got.budget, got.reached, got.n, got.cells) == (budget, reached, 46, 3)
    assert got.low <= got.budget <= got.high
    # reproducible with the seed, another seed another stream
    again = budget_interval(cells, 0.8, resamples=300, confidence=0.9, seed=3)
    other = budget_interval(cells, 0.8, resamples=300, confidence=0.9, seed=4)
    assert (again.low, again.high) == (got.low, got.high)
    assert (other.low, other.high) != (got.low, got.high)


def test_budget_interval_blocks_of_resamples_give_the_same_stream(monkeypatch):
    import advaudio.reporting.bootstrap as bs

    rng = np.random.default_rng(2)
    cells = [rng.exponential(1.0, 40), rng.exponential(2.0, 31)]
    whole = budget_interval(cells, 0.9, resamples=257, seed=5)
    monkeypatch.setattr(bs, "_BLOCK_ELEMENTS", 71 * 10)  # 10 resamples per block
    blocked = budget_interval(cells, 0.9, resamples=257, seed=5)
    assert (whole.low, whole.high) == (blocked.low, blocked.high)


def test_budget_interval_covers_a_known_quantile():
    # exponential(1): the 0.9 quantile is ln 10; the 95 % interval should cover it ~95 % of the time
    truth = math.log(10.0)
    rng = np.random.default_rng(11)
    covered = 0
    reps = 400
    for r in range(reps):
        draws = rng.exponential(1.0, 150)
        iv = budget_interval([draws[:70], draws[70:]], 0.9, resamples=300, seed=r)
        covered += iv.low <= truth <= iv.high
    assert 0.88 <= covered / reps <= 0.995


def test_budget_interval_not_reached_is_said_so():
    norms = np.array([0.1, 0.2, 0.3, np.inf, np.inf])  # 60 % fooled
    iv = budget_interval([norms], 0.9, resamples=2000)
    assert not iv.reached and iv.budget == 0.3
    # 0.9 of 5 needs all 5 fooled: a resample reaches only when it draws no never-fooled clip
    assert iv.not_reached == pytest.approx(1.0 - 0.6**5, abs=0.03)
    assert iv.high == math.inf and iv.low == 0.3
    assert budget_interval([[np.inf, np.inf]], 0.5, resamples=50).low == math.inf
    # borderline: 9 of 10 fooled reaches 0.9; resamples with two or more never-fooled clips do not
    border = np.r_[np.linspace(0.1, 0.9, 9), np.inf]
    iv = budget_interval([border], 0.9, resamples=500)
    assert iv.reached and iv.budget == pytest.approx(0.9)
    assert iv.high == math.inf and 0.0 < iv.not_reached < 1.0


def test_budget_interval_tiny_samples_and_errors():
    one = budget_interval([[0.25]], 0.9, resamples=50)
    assert (one.budget, one.low, one.high, one.n) == (0.25, 0.25, 0.25, 1)
    assert budget_interval([[], [0.5, 0.5]], 0.9, resamples=20).cells == 1  # an empty cell is skipped
    with pytest.raises(ParameterError, match="at least one attacked clip"):
        budget_interval([[], []], 0.9)
    with pytest.raises(ParameterError, match="NaN"):
        budget_interval([[0.1, np.nan]], 0.9)
    with pytest.raises(ParameterError, match="threshold"):
        budget_interval([[0.1]], 1.5)
    with pytest.raises(ParameterError, match="resamples"):
        budget_interval([[0.1]], 0.9, resamples=0)
    with pytest.raises(ParameterError, match="confidence"):
        budget_interval([[0.1]], 0.9, confidence=1.0)


def test_ratio_interval_equals_an_independent_loop():
    rng = np.random.default_rng(5)
    cells = []
    for n, shift in ((20, 0), (13, 100)):
        rows = np.arange(shift, shift + n)
        before = (rows[:-3], rng.exponential(0.1, n - 3))  # the rounds attack different clips
        after_rows = rows[2:]
        after_norms = rng.exponential(0.25, n - 2)
        after_norms[0] = np.inf
        cells.append((before, (after_rows, after_norms)))
    got = ratio_interval(cells, 0.75, resamples=250, confidence=0.9, seed=9)
    (lo, hi), undefined = _loop_ratio([((list(b[0]), list(b[1])), (list(a[0]), list(a[1]))) for b, a in cells],
                                      0.75, 250, 0.9, 9)
    assert (got.low, got.high) == pytest.approx((lo, hi), rel=1e-12)
    assert got.undefined == undefined
    b, _ = quantile_budget(np.concatenate([c[0][1] for c in cells]), 0.75)
    a, _ = quantile_budget(np.concatenate([c[1][1] for c in cells]), 0.75)
    assert got.ratio == pytest.approx(a / b)
    assert (got.n, got.n_before, got.n_after) == (33, 27, 29)


def test_ratio_of_identical_rounds_is_exactly_one():
    rng = np.random.default_rng(0)
    cells = [((np.arange(30), norms), (np.arange(30), norms.copy()))
             for norms in (rng.exponential(1.0, 30), np.r_[rng.exponential(1.0, 29), np.inf])]
    iv = ratio_interval(cells, 0.9, resamples=300)
    assert (iv.ratio, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_ratio_when_a_round_does_not_reach():
    rows = np.arange(10)
    before = (rows, np.linspace(0.1, 1.0, 10))
    never = (rows, np.r_[np.linspace(0.5, 2.0, 5), [np.inf] * 5])
    iv = ratio_interval([(before, never)], 0.9, resamples=100)
    b, _ = quantile_budget(before[1], 0.9)
    assert iv.ratio == math.inf and iv.lower_bound == pytest.approx(2.0 / b) and iv.high == math.inf
    undefined = ratio_interval([(never, before)], 0.9, resamples=100)
    assert math.isnan(undefined.ratio) and undefined.undefined == 1.0 and math.isnan(undefined.low)
    with pytest.raises(ParameterError, match="twice"):
        ratio_interval([((np.array([1, 1]), np.array([0.1, 0.2])), before)], 0.9)
    with pytest.raises(ParameterError, match="both rounds"):
        ratio_interval([((rows, before[1]), (np.array([], int), np.array([])))], 0.9)


def test_percentile_interval_and_mean_std():
    stats = np.arange(1.0, 101.0)
    assert percentile_interval(stats, confidence=0.9) == (5.0, 95.0)
    assert percentile_interval([1.0, np.nan, 3.0, np.inf], confidence=0.5) == (1.0, math.inf)
    assert percentile_interval([1.0, np.nan, 3.0, 4.0], confidence=0.5) == (1.0, 4.0)
    assert all(math.isnan(v) for v in percentile_interval([np.nan]))
    v = [0.8, 0.7, 0.95, 0.85]
    assert mean_std(v) == (pytest.approx(np.mean(v)), pytest.approx(np.std(v, ddof=1)), 4)
    m, s, n = mean_std([0.5])
    assert (m, n) == (0.5, 1) and math.isnan(s)
    m, s, n = mean_std([])
    assert n == 0 and math.isnan(m) and math.isnan(s)


# --------------------------------------------------------------------------- #
# a study of known numbers, as cell.json files
# --------------------------------------------------------------------------- #
from advaudio.study.cellfile import AttackOutcome, CellSummary, RoundOutcome, read_cell_summary, write_cell_summary  # noqa: E402
from advaudio.study.figures import ecdf_points, heat_map  # noqa: E402
from advaudio.study.report_writer import write_study_report  # noqa: E402
from advaudio.study.tables import study_tables, tidy_values  # noqa: E402

ATTACK_NORMS = {"pgd": ("linf", "fixed-budget"), "deepfool": ("l2", "minimisation")}
RESAMPLES = 200


def _outcome(name, rows, norms, cell_dir, rnd, *, threshold=0.9, failed=False):
    norm, kind = ATTACK_NORMS[name]
    norms = np.asarray(norms, float)
    budget, reached = quantile_budget(norms, threshold)
    checks = [{"check": "success_at_large_eps", "status": "pass", "text": "fooled at large ε"},
              {"check": "iterative_beats_single_step", "status": "warn" if failed else "pass",
               "text": "PGD needed a larger budget than FGSM" if failed else "ok"}]
    return AttackOutcome(attack=name, kind=kind, norm=norm, search="per-clip", threshold=threshold, budget=budget,
                         reached=reached, fooling_rate=float(np.mean(norms <= budget)), clip_rows=rows,
                         minimal_norms=norms, checks=checks,
                         results=str(cell_dir / "run" / f"round{rnd:02d}" / f"attack-{name}-test.json"))


def _cell(root, rng, *, dataset, model, view, seed, fold, attacked, scale=1.0, never_after=False, failed=False,
          threshold=0.9):
    cell_id = f"{dataset}-{model}-{view.replace('+', '_')}-s{seed}-f{fold}"
    cell_dir = root / "cells" / cell_id
    cell_dir.mkdir(parents=True, exist_ok=True)
    key = {"dataset": dataset, "model": model, "view": view, "width": 0.25, "input_size": 32, "seed": seed,
           "test_fold": fold, "attacked": attacked}
    acc0 = float(rng.uniform(0.5, 0.95))
    rounds = []
    attacks0, attacks1 = {}, {}
    if attacked:
        n = int(rng.integers(12, 25))
        rows0 = np.sort(rng.choice(200, n, replace=False))
        rows1 = np.sort(np.r_[rows0[2:], 300 + np.arange(3)])  # round 1 classifies other clips correctly
        for name in ATTACK_NORMS:
            b = rng.exponential(0.05 * scale, rows0.size)
            a = rng.exponential(0.12 * scale, rows1.size)
            if never_after and name == "deepfool":
                a[: rows1.size // 2] = np.inf
            attacks0[name] = _outcome(name, rows0, b, cell_dir, 0, threshold=threshold)
            attacks1[name] = _outcome(name, rows1, a, cell_dir, 1, threshold=threshold, failed=failed and name == "pgd")
    rounds.append(RoundOutcome(0, "ckpt0.pt", "0" * 64, "metrics0.json", acc0, 40, attacks0))
    if attacked:
        rounds.append(RoundOutcome(1, "ckpt1.pt", "1" * 64, "metrics1.json", acc0 - float(rng.uniform(0, 0.1)),
                                   40, attacks1))
    wall = {"train": float(rng.uniform(5, 9)), "rounds": float(rng.uniform(10, 20)) if attacked else 0.0}
    wall["total"] = wall["train"] + wall["rounds"]
    s = CellSummary(cell_id=cell_id, fingerprint="f" * 16, key=key, config={}, run_dir=str(cell_dir / "run"),
                    rounds=tuple(rounds), wall_time_s=wall)
    write_cell_summary(cell_dir, s)
    return cell_dir


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    rng = np.random.default_rng(123)
    dirs = []
    for model in ("alexnet", "resnet18"):
        for view in ("stft", "dwt+chroma"):
            for fold in (1, 2, 3):
                dirs.append(_cell(root, rng, dataset="synth", model=model, view=view, seed=0, fold=fold,
                                  attacked=fold == 3, never_after=(model, view) == ("resnet18", "stft"),
                                  failed=(model, view) == ("alexnet", "dwt+chroma")))
    for seed in (0, 1):  # a second dataset: two seeds, fold 2 attacked in both (two attacked cells pooled)
        for fold in (1, 2):
            dirs.append(_cell(root, rng, dataset="esc10", model="resnet18", view="stft", seed=seed, fold=fold,
                              attacked=fold == 2, scale=3.0))
    return root, [read_cell_summary(d) for d in dirs]


def _raw(path):
    """A cell.json read as plain JSON (not through cellfile): the numbers the report must equal."""
    d = json.loads(open(path).read())
    for r in d["rounds"]:
        for a in r["attacks"].values():
            a["minimal_norms"] = [math.inf if v is None else v for v in a["minimal_norms"]]
    return d


def _row(tables, dataset, model, view):
    return next(r for r in tables.rows if (r.dataset, r.model, r.view) == (dataset, model, view))


def test_study_tables_numbers_equal_numpy_on_the_cell_files(study):
    _, summaries = study
    tables = study_tables(summaries, resamples=RESAMPLES)
    assert [(r.dataset, r.model, r.view) for r in tables.rows] == sorted(
        {(s.key["dataset"], s.key["model"], s.key["view"]) for s in summaries})
    for row in tables.rows:
        raws = [_raw(p) for p in row.sources]
        before = [d["rounds"][0]["test_accuracy"] for d in raws]
        attacked = [d for d in raws if d["key"]["attacked"]]
        after = [d["rounds"][-1]["test_accuracy"] for d in attacked]
        assert row.before.mean == pytest.approx(np.mean(before)) and row.before.n == len(before)
        assert row.before.std == pytest.approx(np.std(before, ddof=1))
        assert row.after.mean == pytest.approx(np.mean(after)) and row.after.n == len(attacked)
        delta = [d["rounds"][-1]["test_accuracy"] - d["rounds"][0]["test_accuracy"] for d in attacked]
        assert row.change.mean == pytest.approx(np.mean(delta))
        assert set(row.attacks) == set(ATTACK_NORMS)
        for name, a in row.attacks.items():
            pooled_b = np.concatenate([d["rounds"][0]["attacks"][name]["minimal_norms"] for d in attacked])
            pooled_a = np.concatenate([d["rounds"][-1]["attacks"][name]["minimal_norms"] for d in attacked])
            assert (a.before.budget, a.before.reached) == quantile_budget(pooled_b, 0.9)
            assert (a.after.budget, a.after.reached) == quantile_budget(pooled_a, 0.9)
            assert (a.before.n, a.after.n, a.norm) == (pooled_b.size, pooled_a.size, ATTACK_NORMS[name][0])
            assert a.before.low <= a.before.budget <= a.before.high
            results = {d["rounds"][k]["attacks"][name]["results"] for d in attacked for k in (0, -1)}
            attacked_paths = {p for p in row.sources if _raw(p)["key"]["attacked"]}
            assert set(a.sources) == attacked_paths | results
            if a.after.reached:
                assert a.ratio.ratio == pytest.approx(a.after.budget / a.before.budget)
    # the pooled interval over two attacked cells is the stratified bootstrap of the independent loop
    esc = _row(tables, "esc10", "resnet18", "stft")
    cells = [_raw(p) for p in esc.sources if _raw(p)["key"]["attacked"]]
    assert len(cells) == 2
    lo, hi = _loop_budget([np.array(d["rounds"][0]["attacks"]["pgd"]["minimal_norms"]) for d in cells],
                          0.9, RESAMPLES, 0.95, 0)
    assert (esc.attacks["pgd"].before.low, esc.attacks["pgd"].before.high) == (lo, hi)


def test_never_reached_and_failed_checks_are_said(study):
    _, summaries = study
    tables = study_tables(summaries, resamples=RESAMPLES)
    never = _row(tables, "synth", "resnet18", "stft").attacks["deepfool"]
    assert not never.after.reached and never.after.high == math.inf and math.isinf(never.ratio.ratio)
    assert never.ratio.lower_bound == pytest.approx(never.after.budget / never.before.budget)
    assert any("resnet18 · stft" in w and "deepfool" in w and "not reached after retraining" in w
               for w in tables.warnings)
    failed = _row(tables, "synth", "alexnet", "dwt+chroma").attacks["pgd"]
    assert len(failed.failed_checks) == 1 and failed.checks == 4 and not failed.all_passed
    assert "iterative_beats_single_step" in failed.failed_checks[0]
    assert sum("evaluation check" in w for w in tables.warnings) == 1
    assert _row(tables, "synth", "alexnet", "stft").attacks["pgd"].all_passed


def test_write_study_report_files_equal_the_cell_files(study, tmp_path):
    root, summaries = study
    out = tmp_path / "report"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "stale.png").write_bytes(b"old")
    md = write_study_report(summaries, out, title="Test study", protocol={"study file": "s.toml", "cv": "all"},
                            missing=["synth-vgg16-stft-s0-f1 (failed: out of memory)"], resamples=RESAMPLES)
    assert md == out / "study.md"
    text = md.read_text()
    html_text = (out / "study.html").read_text()
    assert not (out / "figures" / "stale.png").exists()
    # CSV and JSON hold the same values, and those equal the cell files' numbers
    with open(out / "study.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    doc = json.loads((out / "study.json").read_text())
    assert len(rows) == len(doc["values"]) > 0
    for c, j in zip(rows, doc["values"]):
        assert c["metric"] == j["metric"] and c["sources"].split(";") == j["sources"]
        assert (c["value"] == "" and j["value"] is None) or float(c["value"]) == pytest.approx(j["value"])
    by = {(r["dataset"], r["model"], r["view"], r["attack"], r["metric"], r["cell"]): r for r in doc["values"]}
    for s in summaries:
        d = _raw(s.path)
        k = (d["key"]["dataset"], d["key"]["model"], d["key"]["view"])
        assert by[k + ("", "cell_accuracy_before", d["cell_id"])]["value"] == d["rounds"][0]["test_accuracy"]
        assert by[k + ("", "cell_wall_time_s", d["cell_id"])]["value"] == pytest.approx(d["wall_time_s"]["total"])
        for r in d["rounds"]:
            for name, a in r["attacks"].items():
                got = by[k + (name, f"cell_budget_round{r['round']}", d["cell_id"])]
                assert got["value"] == a["budget"] and got["sources"] == [s.path, a["results"]]
    for (dataset, model, view) in {(s.key["dataset"], s.key["model"], s.key["view"]) for s in summaries}:
        raws = [_raw(s.path) for s in summaries if (s.key["dataset"], s.key["model"], s.key["view"])
                == (dataset, model, view)]
        acc = by[(dataset, model, view, "", "accuracy_before", "")]
        assert acc["value"] == pytest.approx(np.mean([d["rounds"][0]["test_accuracy"] for d in raws]))
        assert sorted(acc["sources"]) == sorted(s.path for s in summaries if s.key["dataset"] == dataset
                                                and (s.key["model"], s.key["view"]) == (model, view))
        attacked = [d for d in raws if d["key"]["attacked"]]
        for name in ATTACK_NORMS:
            pooled = np.concatenate([d["rounds"][-1]["attacks"][name]["minimal_norms"] for d in attacked])
            budget, reached = quantile_budget(pooled, 0.9)
            row = by[(dataset, model, view, name, "budget_after", "")]
            assert row["value"] == pytest.approx(budget) and row["n"] == pooled.size
            assert ("threshold not reached" in row["note"]) == (not reached)
            change = by[(dataset, model, view, "", "accuracy_change", "")]
            assert change["value"] == pytest.approx(np.mean([d["rounds"][-1]["test_accuracy"]
                                                             - d["rounds"][0]["test_accuracy"] for d in attacked]))
    # figures: heat maps per dataset (accuracy, change, one per attack's ratio) and curves per attacked cell
    heat = sorted(p for p in doc["figures"] if "heat-" in p)
    assert len(heat) == 2 * (2 + len(ATTACK_NORMS))
    assert sum("fooling_rate-" in p for p in doc["figures"]) == sum(bool(s.key["attacked"]) for s in summaries)
    import matplotlib.image as mpimg

    for p in doc["figures"]:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        img = mpimg.imread(out / p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert f"({p})" in text and f'src="{p}"' in html_text
    # the Markdown has every row, the protocol, the warnings
    for s in summaries:
        assert f"| {s.key['model']} | {s.key['view']} | 0.25 | 32 |" in text
    assert "## Dataset synth" in text and "## Dataset esc10" in text
    assert "study file: s.toml" in text and f"95 %, {RESAMPLES} resamples, seed 0" in text
    assert "cell not finished: synth-vgg16-stft-s0-f1 (failed: out of memory)" in text
    assert "iterative_beats_single_step" in text and "1 of 4 warn" in text
    assert "not reached (>" in text and "(after not reached)" in text
    assert doc["warnings"][0].startswith("cell not finished") and doc["protocol"]["cv"] == "all"
    total = sum(s.wall_time_s["total"] for s in summaries)
    assert f"measured wall time: {total:.1f} s over {len(summaries)} cells" in text
    assert "synth-alexnet-stft-s0-f1" in html_text


def test_a_missing_fold_and_a_counted_once_cell_are_warned(study, tmp_path):
    root, summaries = study
    keep = [s for s in summaries if not (s.key["model"] == "alexnet" and s.key["view"] == "stft"
                                         and s.key["test_fold"] == 1)]
    tables = study_tables(keep, resamples=20)
    assert any("alexnet · stft" in w and "seed 0 fold 1" in w for w in tables.warnings)
    assert _row(tables, "synth", "alexnet", "stft").before.n == 2
    # the attacked fold also present unattacked: its clean accuracy counts once (the attacked cell's)
    rng = np.random.default_rng(0)
    extra = read_cell_summary(_cell(tmp_path, rng, dataset="synth", model="alexnet", view="stft", seed=0, fold=3,
                                    attacked=False))
    tables = study_tables(summaries + [extra], resamples=20)
    row = _row(tables, "synth", "alexnet", "stft")
    attacked = next(s for s in row.cells if s.key["attacked"])
    assert row.before.n == 3 and attacked.round(0).test_accuracy in row.before.values
    assert extra.round(0).test_accuracy not in row.before.values
    assert any("counts once" in w for w in tables.warnings)


def test_study_tables_errors(study, tmp_path):
    _, summaries = study
    with pytest.raises(ParameterError, match="at least one finished cell"):
        study_tables([])
    with pytest.raises(ParameterError, match="same key"):
        study_tables([summaries[0], summaries[0]])
    rng = np.random.default_rng(1)
    other = read_cell_summary(_cell(tmp_path, rng, dataset="synth", model="alexnet", view="stft", seed=1, fold=3,
                                    attacked=True, threshold=0.5))
    with pytest.raises(ParameterError, match="different fooling-rate thresholds for (pgd|deepfool)"):
        study_tables(summaries + [other], resamples=20)


def test_tidy_values_carry_intervals_and_notes(study):
    _, summaries = study
    tables = study_tables(summaries, resamples=RESAMPLES)
    values = tidy_values(tables)
    for v in values:
        assert v["sources"] and all(isinstance(p, str) for p in v["sources"])
        if v["value"] is not None:
            assert math.isfinite(v["value"])
    ratio = next(v for v in values if v["metric"] == "budget_ratio" and v["model"] == "resnet18"
                 and v["view"] == "stft" and v["attack"] == "deepfool" and v["dataset"] == "synth")
    assert ratio["value"] is None and "ratio >" in ratio["note"] and "ci_high not reached" in ratio["note"]
    pgd = _row(tables, "synth", "alexnet", "stft").attacks["pgd"]
    row = next(v for v in values if v["metric"] == "budget_before" and v["model"] == "alexnet"
               and v["view"] == "stft" and v["attack"] == "pgd" and v["dataset"] == "synth")
    assert (row["value"], row["ci_low"], row["ci_high"]) == (pgd.before.budget, pgd.before.low, pgd.before.high)


def test_heat_map_and_ecdf(tmp_path):
    norms = np.array([0.3, 0.1, np.inf, 0.1, 0.2])
    assert ecdf_points(norms) == [(0.1, 0.4), (0.2, 0.6), (0.3, 0.8)]
    assert ecdf_points([]) == []
    p = heat_map([[1.5, np.nan], [np.inf, 0.5]], ["a", "b"], ["x", "y"], tmp_path / "h.png", log=True, center=1.0)
    assert p.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="do not fit"):
        heat_map([[1.0, 2.0]], ["a", "b"], ["x", "y"], tmp_path / "bad.png")


def test_ratio_with_a_zero_budget_before():
    rows = np.arange(4)
    zero = (rows, np.zeros(4))  # every clip fooled without perturbation (possible for decision attacks)
    iv = ratio_interval([(zero, (rows, np.full(4, 0.5)))], 0.5, resamples=20)
    assert iv.ratio == math.inf and iv.high == math.inf
    same = ratio_interval([(zero, zero)], 0.5, resamples=20)
    assert math.isnan(same.ratio) and same.undefined == 1.0
