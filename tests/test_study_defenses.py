"""The study's defense axis: ``[grid] defenses`` (none, shards, on-the-fly defenses), per-defense options,
AutoAttack on the attacked cells, and the report's defense table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from advaudio.errors import ParameterError
from advaudio.study.cells import expand_cells
from advaudio.study.spec import read_study
from tests.test_study import TINY, _advaudio, _write

BASE = (TINY.replace("n_classes = 3", "n_classes = 4")
        .replace('models = ["resnet18", "googlenet"]', 'models = ["resnet18"]')
        .replace('views = ["stft", "dwt+chroma"]', 'views = ["stft"]')
        .replace('names = ["pgd", "deepfool"]', 'names = ["pgd"]')
        .replace("[attacks.params.deepfool]\nsteps = 10\n", ""))
AXIS = BASE.replace('seeds = [0]', 'seeds = [0]\ndefenses = ["none", "shards", "fast-at"]')


def _cells(tmp_path: Path, text: str, name: str = "s.toml"):
    return expand_cells(read_study(_write(tmp_path, text, name)))


def test_the_defense_axis_expands_to_clean_and_defended_cells(tmp_path):
    legacy = {c.cell_id: c for c in _cells(tmp_path, BASE, "legacy.toml")}
    cells = _cells(tmp_path, AXIS)
    by = {(c.defense, c.test_fold): c for c in cells}
    assert sorted(by) == [("fast-at", 2), ("fast-at", 3), ("none", 2), ("none", 3)]
    # the clean cells are the study's cells without the axis (same ids: their results are reused),
    # and the attacked one runs the [rounds]: the shards defense
    assert {by["none", f].cell_id for f in (2, 3)} == set(legacy)
    assert by["none", 3].rounds == 1 and by["none", 2].rounds == 0 and by["none", 3].key["defense"] == "none"
    # an on-the-fly defense is trained with it, attacked, never retrained on shards
    assert by["fast-at", 3].rounds == 0 and by["fast-at", 3].attacked and "-fast-at-" in by["fast-at", 3].cell_id
    # without shards on the axis, the clean cell is not retrained
    no_shards = {c.defense: c for c in _cells(tmp_path, AXIS.replace('"shards", ', ""), "b.toml") if c.test_fold == 3}
    assert no_shards["none"].rounds == 0 and no_shards["none"].fingerprint != by["none", 3].fingerprint
    # a defense option changes that defense's cells only
    tuned = {(c.defense, c.test_fold): c for c in _cells(tmp_path, AXIS + "\n[defenses.fast-at]\nepsilon = 0.05\n",
                                                           "c.toml")}
    assert tuned["fast-at", 3].fingerprint != by["fast-at", 3].fingerprint
    assert tuned["none", 3].fingerprint == by["none", 3].fingerprint


def test_autoattack_is_evaluated_without_changing_the_cells(tmp_path):
    plain = {c.cell_id: c for c in _cells(tmp_path, AXIS)}
    text = AXIS.replace('names = ["pgd"]', 'names = ["pgd"]\nautoattack = ["linf:8/255", "l2:0.5"]')
    spec = read_study(_write(tmp_path, text, "aa.toml"))
    assert spec.autoattack == (("linf", 8 / 255), ("l2", 0.5))
    cells = expand_cells(spec)
    assert {c.cell_id for c in cells} == set(plain)  # same fingerprints: nothing retrains
    assert all(c.autoattack == spec.autoattack for c in cells if c.attacked)
    assert all(c.autoattack == () for c in cells if not c.attacked)


@pytest.mark.parametrize("change, message", [
    (('defenses = ["none", "shards", "fast-at"]', 'defenses = ["none", "madry"]'), "unknown defense 'madry'"),
    (("[train]", "[defenses.trades]\nbeta = 1.0\n\n[train]"), "not among [grid] defenses"),
    (("[train]", "[defenses.fast-at]\nepsilon = 3.0\n\n[train]"), "epsilon"),
    (("[train]", "[defenses.fast-at]\nsteps = 3\n\n[train]"), "no option"),
    (("[train]\n", '[train]\ndefense = "pgd-at"\n'), "set per cell by [grid] defenses"),
    (('names = ["pgd"]', 'names = ["pgd"]\nautoattack = "linf:big"'), "autoattack"),
])
def test_bad_defense_settings_fail_before_anything_runs(tmp_path, change, message):
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_study(_write(tmp_path, AXIS.replace(*change)))


@pytest.mark.slow
def test_a_defense_study_runs_and_reports_its_table(tmp_path):
    pytest.importorskip("pyautoattack", reason="pip install 'advaudio[autoattack]'")
    text = (AXIS.replace("cv = [2, 3]", "cv = [3]").replace("epochs = 3", "epochs = 1")
            .replace('names = ["pgd"]', 'names = ["pgd"]\nautoattack = "linf:8/255"'))
    study = _write(tmp_path, text)
    run = _advaudio("study", "run", str(study), cwd=tmp_path, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    report = _advaudio("study", "report", str(study), cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    out = tmp_path / "tiny.study" / "report"
    md = (out / "study.md").read_text()
    assert "## Defenses" in md and (out / "figures" / "defenses-tradeoff.png").is_file()
    # the fast-at cell counts among the finished cells and has its row in the wall-time table
    assert "from 2 finished cells (1 of them with an on-the-fly defense: see Defenses)" in md
    assert re.search(r"\| 3 \| fast-at \| yes \|", md) and re.search(r"\| 3 \| none \| yes \|", md)
    rows = {r["defense"]: r for r in json.loads((out / "study.json").read_text())["defenses"]}
    assert set(rows) == {"none", "shards", "fast-at"}
    for name, r in rows.items():
        (aa,) = r["autoattack"]
        assert aa["norm"] == "linf" and aa["n"] > 0 and aa["ci_low"] <= aa["robust_accuracy"] <= aa["ci_high"]
        assert r["attacks"]["pgd"]["budget"] is not None
        assert (r["attacks"]["pgd"]["ratio_to_none"] is None) == (name == "none")
    assert rows["none"]["train_cost_vs_none"] == pytest.approx(1.0)
    assert rows["fast-at"]["train_seconds_per_cell"] > 0
