"""``advaudio study``: the study file, its cells, running them (killed and resumed), executors, the report.

One tiny study (synthetic, 2 models × 2 views × 2 attacks × 1 round, 2 CV folds, tiny
widths) is run once through the CLI in a subprocess, SIGKILLed mid-way and resumed;
the other tests read what it wrote, or run a copy of it with one thing changed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from advaudio import layout
from advaudio.attacks import quantile_budget
from advaudio.errors import ParameterError
from advaudio.study import cellfile
from advaudio.study.examples import EXAMPLES, example_study
from advaudio.study.planning import plan_study
from advaudio.study.spec import read_study
from advaudio.training import load_checkpoint

REPO = Path(__file__).resolve().parents[1]

TINY = """
[study]
name = "tiny"

[data.synth]
dataset = "synthetic"
options = { clips_per_class = 6, n_classes = 3, duration = 0.5, n_folds = 3 }
shard_size = 6
[data.synth.features]
representations = ["stft", "dwt", "chroma"]
n_fft = 512
hop_length = 256

[grid]
models = ["resnet18", "googlenet"]
views = ["stft", "dwt+chroma"]
widths = [0.125]
input_sizes = ["32x32"]
seeds = [0]

[train]
epochs = 3
batch_size = 8
lr = 3e-3

[protocol]
cv = [2, 3]
attack_folds = [3]

[attacks]
names = ["pgd", "deepfool"]
test_clips = 6
train_clips = 8
checks = false
[attacks.params.pgd]
steps = 5
[attacks.params.deepfool]
steps = 10

[rounds]
count = 1
epochs = 1

[run]
out = "tiny.study"
threads = 1
featurize_workers = 0
workers = 2
"""


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def _advaudio(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "advaudio", *args], capture_output=True, text=True, env=_env(),
                          cwd=cwd, timeout=timeout)


def _write(directory: Path, text: str = TINY, name: str = "tiny.toml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def _summaries(study_file: Path) -> dict[str, cellfile.CellSummary]:
    plan = plan_study(read_study(study_file))
    return {s.cell.cell_id: s.summary for s in plan.statuses if s.summary is not None}


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The tiny study run through the CLI: SIGKILLed while its second cell trains, then resumed."""
    directory = tmp_path_factory.mktemp("study")
    study_file = _write(directory)
    spec = read_study(study_file)
    proc = subprocess.Popen([sys.executable, "-m", "advaudio", "study", "run", str(study_file)], env=_env(),
                            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed_cell = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            done = [d for d in layout.study_cell_dirs(spec.directory) if cellfile.summary_path(d).is_file()]
            started = [d for d in layout.study_cell_dirs(spec.directory)
                       if not cellfile.summary_path(d).is_file() and layout.checkpoint_path(layout.cell_run_dir(d)).is_file()]
            if done and started:  # a cell finished, the next has a checkpoint of its first epoch(s)
                killed_cell = started[0]
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        proc.wait(timeout=60)
    assert killed_cell is not None, f"the run ended before it could be killed:\n{proc.stdout.read()}"
    status_killed = _advaudio("study", "status", str(study_file), cwd=directory)
    resumed = _advaudio("study", "run", str(study_file), cwd=directory)
    assert resumed.returncode == 0, resumed.stderr
    return {"file": study_file, "dir": directory, "spec": spec, "killed": killed_cell,
            "status_killed": status_killed.stdout, "resumed": resumed}


# --------------------------------------------------------------------------- #
# The study file
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("change, message", [
    (("[grid]", "[grid]\nmodls = ['resnet18']"), "[grid] modls: unknown key"),
    (('views = ["stft", "dwt+chroma"]', 'views = ["stft", "tonnetz"]'), "needs tonnetz"),
    (("cv = [2, 3]", "cv = [3, 7]"), "has no fold 7"),
    (('input_sizes = ["32x32"]', 'input_sizes = ["32x32"]\n'), None),
    (('models = ["resnet18", "googlenet"]', 'models = ["alexnet"]'), "alexnet needs inputs of at least 63x63"),
    (("attack_folds = [3]", "attack_folds = [1]"), "not among the cv folds"),
    (('names = ["pgd", "deepfool"]', 'names = ["pgd", "nosuch"]'), "unknown attack"),
    (("epochs = 3", "epochs = 0"), "epochs"),
    (("[train]", "[train]\nview = 'stft'"), "[train] view: is set per cell"),
    (("[study]", "[studdy]"), "unknown key"),
    (("count = 1", "count = -1"), "[rounds] count"),
    # issue 18: found by `study plan`, not by `study run` after featurizing
    (("[run]", "[run]\ndevice = 'tpu'"), "[run] device: device must be auto, cpu or cuda[:N], got 'tpu'"),
    (("n_classes = 3", "n_classes = 1"), "[data.synth]: dataset 'synthetic' has clips of 1 class"),
    (('out = "tiny.study"', 'out = ""'), "[run] out: must be the study directory's path"),
    (('out = "tiny.study"', 'out = "tiny.toml"'), "exists and is not a directory"),
    (("checks = false", 'checks = false\nthreshold = "0.9"'), "threshold must be a number, got '0.9'"),
    (("[attacks.params.pgd]\nsteps = 5", "[attacks.params.pgd]\nsteps = 1000000000"),
     "pgd would cost about 2e+10 model evaluations per clip"),
    (("checks = false\n[attacks.params.pgd]\nsteps = 5",
      "checks = false\nallow_expensive = true\n[attacks.params.pgd]\nsteps = 1000000000"), None),  # insisted
])
def test_bad_study_files_fail_in_one_line_before_anything_runs(tmp_path, change, message):
    study_file = _write(tmp_path, TINY.replace(*change))
    result = _advaudio("study", "plan", str(study_file), "--no-probe", cwd=tmp_path, timeout=120)
    if message is None:  # the control: the unchanged study plans fine; no probe, no finished cell: no estimate
        assert result.returncode == 0, result.stderr
        last = result.stdout.strip().splitlines()[-1]
        assert "0 done, 8 to run; time to go unknown" in last and "0 s" not in last, last
        return
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advaudio: error: ") and message in lines[0], result.stderr
    assert str(study_file) in lines[0]
    assert not (tmp_path / "tiny.study" / "cells").exists()


def test_not_toml_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ParameterError, match="no such study file"):
        read_study(tmp_path / "absent.toml")
    with pytest.raises(ParameterError, match="not valid TOML"):
        read_study(_write(tmp_path, "[grid\nmodels = 1"))


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_init_writes_every_example_as_a_valid_study(tmp_path, name):
    result = _advaudio("study", "init", "s.toml", "--example", name, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    spec = read_study(tmp_path / "s.toml")
    assert spec.directory == tmp_path / "s.study"
    if name == "synthetic":  # the shape: 2 models × 2 views × 2 attacks × 1 round, 2 folds
        assert len(spec.grid.models) == 2 and len(spec.grid.views) == 2 and len(spec.attack.attacks) == 2
        assert spec.rounds == 1 and len(spec.protocol.cv) == 2
        assert len(plan_study(spec).cells) == 8
    again = _advaudio("study", "init", "s.toml", cwd=tmp_path, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr


# --------------------------------------------------------------------------- #
# Running: killed, resumed, the report
# --------------------------------------------------------------------------- #
@pytest.mark.floats
def test_a_killed_study_resumes_and_finishes_every_cell(tiny_study):
    assert "interrupted" in tiny_study["status_killed"]  # its process died without finishing
    summaries = _summaries(tiny_study["file"])
    assert len(summaries) == 8
    killed = cellfile.read_cell_summary(tiny_study["killed"])
    assert killed is not None
    log = cellfile.log_path(tiny_study["killed"]).read_text()
    assert log.count("== cell ") >= 3  # started, killed, started again, done
    # the resumed training continued from the checkpoint left by the kill
    metrics = json.loads(Path(killed.rounds[0].metrics).read_text())
    assert metrics["complete"] and metrics["epochs_done"] == 3
    status = _advaudio("study", "status", str(tiny_study["file"]), cwd=tiny_study["dir"])
    assert status.returncode == 0 and "8 done" in status.stdout


def test_cell_files_hold_the_runs_numbers(tiny_study):
    for summary in _summaries(tiny_study["file"]).values():
        run_dir = Path(summary.run_dir)
        assert summary.key["attacked"] == (summary.key["test_fold"] == 3)
        assert [r.round for r in summary.rounds] == ([0, 1] if summary.key["attacked"] else [0])
        for r in summary.rounds:
            metrics = json.loads(layout.metrics_path(run_dir, round=r.round).read_text())
            assert r.test_accuracy == metrics["test_accuracy"]
            if not summary.key["attacked"]:
                continue
            results = json.loads(layout.attack_results_path(run_dir, round=r.round, split="test").read_text())
            for record in results["attacks"]:
                outcome = r.attacks[record["attack"]]
                assert outcome.budget == pytest.approx(record["budget"])
                if record["reached"]:  # the budget is the quantile of the per-clip minimal norms
                    assert quantile_budget(outcome.minimal_norms, outcome.threshold)[0] == pytest.approx(record["budget"])
                assert len(outcome.clip_rows) == record["n_attacked"]


def test_report_numbers_equal_the_cell_files(tiny_study):
    result = _advaudio("study", "report", str(tiny_study["file"]), "--resamples", "200", cwd=tiny_study["dir"])
    assert result.returncode == 0, result.stderr
    report_dir = layout.study_report_dir(tiny_study["spec"].directory)
    md = (report_dir / "study.md").read_text()
    assert "resnet18" in md and "googlenet" in md and "dwt+chroma" in md
    summaries = list(_summaries(tiny_study["file"]).values())
    rows = list(csv.DictReader(open(report_dir / "study.csv")))
    document = json.loads((report_dir / "study.json").read_text())
    assert document and rows
    for model in ("resnet18", "googlenet"):
        for view in ("stft", "dwt+chroma"):
            cells = [s for s in summaries if s.key["model"] == model and s.key["view"] == view]
            before = [s.rounds[0].test_accuracy for s in cells]
            mine = [r for r in rows if r["model"] == model and r["view"] == view]
            accuracy = [r for r in mine if r["metric"] == "accuracy_before" and not r.get("cell")]
            assert len(accuracy) == 1 and float(accuracy[0]["value"]) == pytest.approx(np.mean(before))
            attacked = [s for s in cells if s.key["attacked"]]
            for name in ("pgd", "deepfool"):
                norms = np.concatenate([s.rounds[0].attacks[name].minimal_norms for s in attacked])
                budget, reached = quantile_budget(norms, 0.9)
                got = [r for r in mine if r["attack"] == name and r["metric"] == "budget_before" and not r.get("cell")]
                assert len(got) == 1
                if reached:
                    assert float(got[0]["value"]) == pytest.approx(budget)
                assert all(str(s.path) in got[0]["sources"] for s in attacked)
    for figure in ("heat-synth-accuracy.png", "heat-synth-change.png", "heat-synth-ratio-pgd.png"):
        assert (report_dir / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_changed_parameter_reruns_only_the_cells_it_touches(tiny_study, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(tiny_study["dir"], copy)
    study_file = copy / "tiny.toml"
    before = _summaries(study_file)
    # an attack parameter: only the attacked cells (fold 3) become new cells
    changed = _write(copy, TINY.replace("[attacks.params.pgd]\nsteps = 5", "[attacks.params.pgd]\nsteps = 6"))
    plan = plan_study(read_study(changed))
    pending = {s.cell.cell_id for s in plan.statuses if s.status == "pending"}
    assert {c.cell_id for c in plan.cells if c.attacked} == pending and len(pending) == 4
    # one more CV fold, not attacked: four new cells run; the others are not touched
    _write(copy, TINY.replace("cv = [2, 3]", "cv = [1, 2, 3]"))
    mtimes = {cid: Path(s.path).stat().st_mtime_ns for cid, s in before.items()}
    result = _advaudio("study", "run", str(study_file), cwd=copy)
    assert result.returncode == 0, result.stderr
    after = _summaries(study_file)
    assert len(after) == 12 and set(before) < set(after)
    assert {after[c].key["test_fold"] for c in set(after) - set(before)} == {1}
    assert all(Path(after[c].path).stat().st_mtime_ns == mtimes[c] for c in before)


def test_a_damaged_cell_summary_is_set_aside_and_recomputed(tiny_study, tmp_path):
    """Issue 18: a truncated or edited cell.json no longer fails every later `study run` on its cell."""
    copy = tmp_path / "study"
    shutil.copytree(tiny_study["dir"], copy)
    study_file = copy / "tiny.toml"
    before = _summaries(study_file)
    plain = sorted(cid for cid, s in before.items() if not s.key["attacked"])
    truncated, edited = (Path(before[cid].path) for cid in plain[:2])
    truncated.write_text(truncated.read_text()[:300])
    doc = json.loads(edited.read_text())
    doc.pop("sha256")  # an edit that also drops the digest still meets the schema check
    doc["rounds"][0]["test_accuracy"] = 7.5
    edited.write_text(json.dumps(doc))
    untouched = {cid: Path(s.path).stat().st_mtime_ns for cid, s in before.items() if cid not in plain[:2]}
    checkpoints = {cid: Path(before[cid].rounds[0].checkpoint.replace(str(tiny_study["dir"]), str(copy)))
                   for cid in plain[:2]}
    trained = {cid: p.stat().st_mtime_ns for cid, p in checkpoints.items()}
    status = _advaudio("study", "status", str(study_file), cwd=copy)
    assert status.returncode == 1 and status.stdout.count("sets it aside and recomputes") == 2, status.stdout
    result = _advaudio("study", "run", str(study_file), cwd=copy)
    assert result.returncode == 0, result.stderr
    for path, why in ((truncated, "not readable JSON"), (edited, "test_accuracy must be a number in [0, 1], got 7.5")):
        assert why in result.stderr and f"set aside as {path.name}.damaged-" in result.stderr, result.stderr
        (aside,) = path.parent.glob(f"{path.name}.damaged-*")  # kept for a look
        assert aside.read_text().startswith("{")
    after = _summaries(study_file)
    assert set(after) == set(before)
    for cid in plain[:2]:  # recomputed from the run directory: the same numbers, and no training again
        assert [r.test_accuracy for r in after[cid].rounds] == [r.test_accuracy for r in before[cid].rounds]
        assert after[cid].rounds[0].checkpoint_sha256 == before[cid].rounds[0].checkpoint_sha256
        assert checkpoints[cid].stat().st_mtime_ns == trained[cid]
    assert all(Path(after[cid].path).stat().st_mtime_ns == t for cid, t in untouched.items())


@pytest.mark.floats
def test_dask_executor_gives_the_local_results_value_by_value(tiny_study, tmp_path):
    study_file = _write(tmp_path, TINY.replace('out = "tiny.study"', 'out = "dask.study"\nexecutor = "dask"'))
    # the same store (same fingerprint) is reused instead of featurizing again
    shutil.copytree(layout.study_stores_dir(tiny_study["spec"].directory), layout.study_stores_dir(tmp_path / "dask.study"))
    result = _advaudio("study", "run", str(study_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    local, dask = _summaries(tiny_study["file"]), _summaries(study_file)
    assert set(local) == set(dask)
    for cid, a in local.items():
        b = dask[cid]
        assert [r.test_accuracy for r in a.rounds] == [r.test_accuracy for r in b.rounds]
        for ra, rb in zip(a.rounds, b.rounds):  # the files differ in paths and times, the weights must not
            wa, wb = (load_checkpoint(r.checkpoint).model.state_dict() for r in (ra, rb))
            assert all(torch.equal(wa[k], wb[k]) for k in wa), cid
        for ra, rb in zip(a.rounds, b.rounds):
            assert set(ra.attacks) == set(rb.attacks)
            for name in ra.attacks:
                np.testing.assert_array_equal(ra.attacks[name].minimal_norms, rb.attacks[name].minimal_norms)
                assert ra.attacks[name].budget == rb.attacks[name].budget or (
                    math.isnan(ra.attacks[name].budget) and math.isnan(rb.attacks[name].budget))


def test_a_failed_cell_is_reported_with_its_reason_and_log(tmp_path, tiny_study):
    shutil.copytree(layout.study_stores_dir(tiny_study["spec"].directory), tmp_path / "tiny.study" / "stores")
    study_file = _write(tmp_path, TINY.replace("lr = 3e-3", "lr = 3e-3\nmodel_options = { nosuch = 1 }")
                        .replace('models = ["resnet18", "googlenet"]', 'models = ["resnet18"]')
                        .replace('views = ["stft", "dwt+chroma"]', 'views = ["stft"]').replace("cv = [2, 3]", "cv = [2]")
                        .replace("attack_folds = [3]", 'attack_folds = "none"'))
    result = _advaudio("study", "run", str(study_file), cwd=tmp_path)
    assert result.returncode == 2 and "not done" in result.stderr
    status = _advaudio("study", "status", str(study_file), cwd=tmp_path)
    assert status.returncode == 1
    assert "failed" in status.stdout and "nosuch" in status.stdout and "log: " in status.stdout


def test_example_text_names_its_file():
    assert "advaudio study run my.toml" in example_study("synthetic", file="my.toml")


def test_a_cell_another_process_runs_is_left_to_it(tmp_path):
    from advaudio import store as st
    from advaudio.errors import StoreError
    from advaudio.study.cells import expand_cells, run_cell

    spec = read_study(_write(tmp_path))
    cell = expand_cells(spec)[0]
    directory = cell.directory(spec)
    directory.mkdir(parents=True)
    with st.exclusive_lock(directory / layout.CELL_LOCK_NAME, what="the test's cell"):
        with pytest.raises(StoreError, match="another run"):
            run_cell(spec, cell, echo=False)
    assert cellfile.read_cell_state(directory) is None  # not marked failed: it is not this run's to mark
