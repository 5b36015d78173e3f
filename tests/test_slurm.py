"""The pipeline on a real (one-node) SLURM: featurize with Dask workers started by
sbatch, featurize.sbatch, and attack.sbatch as a job array merged by merge.sbatch;
plus experiment.sh's chain of jobs, checked against a stand-in sbatch.

The module fixture runs ``pipeline/slurm/start-local-slurm.sh`` (apt-get
install of slurm-wlm + munge on first use, then daemons on 127.0.0.1) and
``stop-local-slurm.sh`` afterwards. It needs root and apt-get; without them
the tests are skipped with a loud reason — except under ``CI=true``, where
they fail, so CI never skips them silently.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from advaudio import store as st
from advaudio.cluster import ClusterConfig, cluster_job_script, make_cluster
from advaudio.errors import AdvaudioError, ParameterError
from advaudio.features import FeatureConfig
from advaudio.stages.featurize import FeaturizeConfig, featurize_store
from advaudio.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "pipeline" / "slurm"
SYNTH = {"clips_per_class": 4, "n_classes": 3, "duration": 1.0}
# The worker jobs import advaudio; in a checkout that is not pip-installed it
# is found through PYTHONPATH, set by the job script's prologue.
PROLOGUE = (f'export PYTHONPATH="{REPO}${{PYTHONPATH:+:$PYTHONPATH}}"',)


def local_cluster_config(tmp_path: Path, **kw) -> ClusterConfig:
    """Worker jobs on the local SLURM: loopback network, logs under tmp_path, no dashboard."""
    base = dict(kind="slurm", interface="lo", log_directory=str(tmp_path / "logs"), dashboard_address=None)
    return ClusterConfig(**{**base, **kw})


def tiny_config() -> FeaturizeConfig:
    return FeaturizeConfig(dataset="synthetic", dataset_options=dict(SYNTH),
                           features=FeatureConfig(representations=("stft", "chroma")), shard_size=4)


def _why_no_local_slurm() -> str | None:
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def _slurm_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def local_slurm():
    """A running one-node SLURM; stopped afterwards if this fixture started it."""
    reason = _why_no_local_slurm()
    if reason:
        message = (f"LOCAL SLURM TESTS NOT RUN: {reason}. pipeline/slurm/start-local-slurm.sh "
                   "needs root and apt-get (Debian/Ubuntu) to install and start slurm-wlm + munge.")
        if os.environ.get("CI") == "true":
            pytest.fail(message + " CI=true: failing instead of skipping.")
        pytest.skip(message)
    was_up = _slurm_up()
    t0 = time.perf_counter()
    proc = subprocess.run(["bash", str(SLURM_DIR / "start-local-slurm.sh")], capture_output=True,
                          text=True, timeout=900)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        pytest.fail(f"start-local-slurm.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    print(f"\nlocal SLURM ready in {seconds:.1f} s (already up: {was_up})", file=sys.stderr)
    yield {"start_seconds": seconds}
    if not was_up:  # leave a SLURM that someone else started running
        subprocess.run(["bash", str(SLURM_DIR / "stop-local-slurm.sh")], timeout=120, check=False)


def assert_same_store(a: Path, b: Path) -> None:
    """Two complete stores hold the same clips, labels and feature values."""
    sa, sb = Store(a), Store(b)
    assert len(sa) == len(sb) > 0
    np.testing.assert_array_equal(sa.clip_ids, sb.clip_ids)
    np.testing.assert_array_equal(sa.labels, sb.labels)
    np.testing.assert_array_equal(sa.folds, sb.folds)
    assert sorted(sa.representations) == sorted(sb.representations)
    for name in sa.representations:
        xa, xb = sa.read(name), sb.read(name)
        assert xa.shape == xb.shape and xa.shape[0] == len(sa)
        np.testing.assert_array_equal(xa, xb, err_msg=name)  # same code, same input: bit-identical
    assert sa.errors == sb.errors == []


def _job_states(job_ids) -> dict[str, str]:
    """State of each job still pending, running or completing (squeue -j)."""
    out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"],
                         capture_output=True, text=True).stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def _wait_for_workers(client, n: int, job_ids, log_dir: Path, *, timeout: float) -> None:
    """``client.wait_for_workers(n)``; on a timeout, fail with each job's state and the end of its log."""
    try:
        client.wait_for_workers(n, timeout=timeout)
    except TimeoutError as exc:
        states = _job_states(job_ids)
        tails = []
        for job in job_ids:
            for log in sorted(log_dir.glob(f"*-{job}.*")):
                tails.append(f"--- {log.name}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
        pytest.fail(f"{exc}; job states {states or 'none left in the queue'}\n" + "\n".join(tails))


# --- without SLURM --------------------------------------------------------------

def test_cluster_config_rejects_bad_values_in_one_line():
    for kwargs, words in [({"kind": "lsf"}, "slurm or pbs"), ({"jobs": 0}, "jobs"),
                          ({"cores": 2, "processes": 3}, "processes"), ({"memory": "lots"}, "memory"),
                          ({"walltime": "soon"}, "walltime")]:
        with pytest.raises(ParameterError, match=words) as info:
            ClusterConfig(**kwargs)
        assert "\n" not in str(info.value)


def test_job_scripts_carry_the_configuration(tmp_path):
    pytest.importorskip("dask_jobqueue")
    config = ClusterConfig(kind="slurm", jobs=3, cores=4, processes=2, memory="8GB", walltime="00:30:00",
                           queue="cpu", account="proj", job_extra_directives=["--qos=short"],
                           interface="ib0", log_directory=str(tmp_path / "logs"),
                           job_script_prologue=["module load python"], python="/opt/venv/bin/python")
    script = cluster_job_script(config)
    for line in ["#SBATCH -p cpu", "#SBATCH -A proj", "#SBATCH --cpus-per-task=4", "#SBATCH -t 00:30:00",
                 "#SBATCH --qos=short", f"#SBATCH -o {tmp_path / 'logs'}/", "module load python",
                 "/opt/venv/bin/python -m distributed.cli.dask_worker", "--nworkers 2", "--nthreads 2",
                 "--interface ib0"]:
        assert line in script, line
    pbs = cluster_job_script(ClusterConfig(kind="pbs", cores=2, queue="workq", account="proj",
                                           log_directory=str(tmp_path / "logs")))
    assert "#PBS -q workq" in pbs and "#PBS -A proj" in pbs and "ncpus=2" in pbs
    # Defaults: one single-threaded worker process per core.
    default = cluster_job_script(ClusterConfig(cores=3, log_directory=str(tmp_path / "logs")))
    assert "--nworkers 3" in default and "--nthreads 1" in default


def test_missing_dask_jobqueue_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # makes the import fail
    with pytest.raises(AdvaudioError, match=r"pip install advaudio\[cluster\]"):
        cluster_job_script(ClusterConfig())


# --- on the local SLURM ---------------------------------------------------------

def test_sbatch_wait_runs_a_trivial_job(local_slurm, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/bash\necho \"hello from job $SLURM_JOB_ID on $SLURM_JOB_NODELIST\"\n")
    out = tmp_path / "hello-%j.out"
    proc = subprocess.run(["sbatch", "--wait", "--parsable", f"--chdir={tmp_path}", f"--output={out}",
                           "--time=00:01:00", str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    assert (tmp_path / f"hello-{job_id}.out").read_text().strip() == f"hello from job {job_id} on localhost"


@pytest.mark.floats
def test_featurize_on_slurm_worker_jobs_matches_local_run(local_slurm, tmp_path):
    t0 = time.perf_counter()
    config = tiny_config()
    cluster_config = local_cluster_config(
        tmp_path, jobs=2, cores=1, memory="2GB", walltime="00:10:00",
        local_directory=str(tmp_path / "scratch"), job_script_prologue=PROLOGUE, wait_timeout=120,
    )
    from distributed import Client

    with make_cluster(cluster_config) as cluster:
        t_first_worker = time.perf_counter() - t0
        job_ids = sorted(str(job.job_id) for job in cluster.workers.values())
        assert len(job_ids) == 2
        with Client(cluster) as client:
            _wait_for_workers(client, 2, job_ids, tmp_path / "logs", timeout=240)
            # Every worker runs inside one of the jobs that sbatch started.
            worker_jobs = client.run(lambda: os.environ.get("SLURM_JOB_ID"))
            assert sorted(worker_jobs.values()) == job_ids
            assert set(_job_states(job_ids).values()) == {"RUNNING"}
        result = featurize_store(config, cache=tmp_path / "slurm", cluster=cluster, progress=False)
        assert (result.clips, result.featurized, result.failed, result.shards_written) == (12, 12, 0, 3)
    t_slurm = time.perf_counter() - t0
    # Closing the cluster cancels the jobs: none is left in the queue.
    deadline = time.time() + 30
    while _job_states(job_ids) and time.time() < deadline:
        time.sleep(0.5)
    assert _job_states(job_ids) == {}
    assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == sorted(
        f"advaudio-dask-{j}.{ext}" for j in job_ids for ext in ("err", "out"))

    local = featurize_store(config, cache=tmp_path / "local", workers=0, progress=False)
    assert local.store_dir.name == result.store_dir.name  # same fingerprint
    assert_same_store(result.store_dir, local.store_dir)
    print(f"\nSLURM featurize: first worker after {t_first_worker:.1f} s, "
          f"cluster+featurize+cancel {t_slurm:.1f} s, whole test {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)


def test_make_cluster_reports_a_refused_partition(local_slurm, tmp_path):
    with pytest.raises(AdvaudioError, match="invalid partition") as info:
        make_cluster(local_cluster_config(tmp_path, queue="no-such-partition"))
    assert "\n" not in str(info.value)


def test_make_cluster_fails_early_when_the_worker_jobs_die(local_slurm, tmp_path):
    config = local_cluster_config(tmp_path, jobs=2, python=str(tmp_path / "no-such-python"), wait_timeout=60)
    t0 = time.perf_counter()
    with pytest.raises(AdvaudioError, match=r"no Dask worker joined: jobs \d+, \d+ ended") as info:
        make_cluster(config)
    assert time.perf_counter() - t0 < 30  # not the whole wait_timeout
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "logs") in message
    assert "no-such-python: No such file or directory" in message  # from the job's error log


def test_make_cluster_times_out_while_jobs_wait_in_the_queue(local_slurm, tmp_path):
    # A job held in the queue never starts: the wait ends after wait_timeout.
    config = local_cluster_config(tmp_path, job_extra_directives=["--hold"], wait_timeout=3)
    with pytest.raises(AdvaudioError, match=r"no Dask worker joined within 3 s \(jobs \d+ PENDING") as info:
        make_cluster(config)
    assert "squeue" in str(info.value)
    job_id = str(info.value).split("(jobs ")[1].split()[0]
    assert _job_states([job_id]) == {}  # closing the cluster cancelled the held job


TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                   "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def sbatch_submit(*args: str, env=None) -> str:
    """Submit a batch job (or job array); returns its id."""
    proc = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def wait_for_job(job_id: str, timeout: float = 300) -> str:
    """Wait until a job, or every task of a job array, has ended; returns the final state
    (the tasks' states joined by ',' when they differ).

    Polls ``scontrol`` every 0.25 s: ``sbatch --wait`` checks after 2, 10,
    42 s..., so an 11 s job would cost 42 s.
    """
    deadline = time.monotonic() + timeout
    while True:
        info = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True,
                              text=True).stdout
        states = re.findall(r"JobState=(\S+)", info)  # one line per array task
        assert states, f"scontrol knows no job {job_id}"
        if all(state in TERMINAL_STATES for state in states):
            return ",".join(sorted(set(states)))
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job_id])
            pytest.fail(f"job {job_id} still {','.join(sorted(set(states)))} after {timeout} s")
        time.sleep(0.25)


def sbatch_and_wait(*args: str, env=None, timeout: float = 300) -> tuple[str, str]:
    """Submit a batch job, wait for its end, return (job id, final state)."""
    job_id = sbatch_submit(*args, env=env)
    return job_id, wait_for_job(job_id, timeout)


def _run_featurize_sbatch(tmp_path: Path, *sbatch_args: str, **variables: str) -> tuple[str, Path]:
    env = dict(os.environ, PYTHON=sys.executable, DATASET="synthetic",
               DATASET_OPTIONS=" ".join(f"{k}={v}" for k, v in SYNTH.items()),
               FEATURES="stft,chroma", SHARD_SIZE="4", CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               **variables)
    job_id, state = sbatch_and_wait(f"--chdir={tmp_path}", "--time=00:10:00", *sbatch_args,
                                    str(SLURM_DIR / "featurize.sbatch"), env=env)
    log = tmp_path / f"advaudio-featurize-{job_id}.out"
    text = log.read_text() if log.is_file() else "(no job output)"
    assert state == "COMPLETED", f"job {job_id} {state}; its output:\n{text}"
    stdout_lines = [line for line in text.splitlines() if line.startswith(str(tmp_path / "cache"))]
    assert stdout_lines, text
    return text, Path(stdout_lines[-1])


def test_featurize_sbatch_script_end_to_end(local_slurm, tmp_path):
    text, store_dir = _run_featurize_sbatch(tmp_path, WORKERS="2")
    assert "featurized 12/12 clips" in text and "0 failed" in text
    local = featurize_store(tiny_config(), cache=tmp_path / "local", workers=0, progress=False)
    assert store_dir.name == local.store_dir.name
    assert_same_store(store_dir, local.store_dir)


def _advaudio(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "advaudio", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_cli_reports_a_refused_cluster_job_in_one_line(local_slurm, tmp_path):
    proc = _advaudio("featurize", "--cache", str(tmp_path / "cache"), "--cluster", "slurm",
                     "--cluster-queue", "no-such-partition", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "invalid partition" in proc.stderr and "Traceback" not in proc.stderr


def test_featurize_sbatch_driver_mode_submits_worker_jobs(local_slurm, tmp_path):
    """WORKER_JOBS>0: the batch job is the Dask driver and its workers are further jobs."""
    text, store_dir = _run_featurize_sbatch(  # the driver takes 1 of the 2 CPUs, its worker job the other
        tmp_path, "--cpus-per-task=1", WORKER_JOBS="1", WORKER_CORES="1", WORKER_MEMORY="1GB", WORKER_WALLTIME="00:10:00",
        INTERFACE="lo", SETUP=PROLOGUE[0])
    assert "featurized 12/12 clips" in text
    assert list((tmp_path / "advaudio-dask-logs").glob("advaudio-dask-*.err")), "no worker job ran"
    local = featurize_store(tiny_config(), cache=tmp_path / "local", workers=0, progress=False)
    assert_same_store(store_dir, local.store_dir)


# --- the attack stage as a job array, merged --------------------------------------

def _tiny_checkpoint(directory: Path) -> tuple[Path, Path]:
    """A real store (3 classes × 6 clips, 3 folds, STFT) and a tiny ResNet-18 on it (a few seconds)."""
    from advaudio.training import TrainConfig, train

    res = featurize_store(FeaturizeConfig(dataset="synthetic",
                                    dataset_options={"clips_per_class": 6, "n_classes": 3, "duration": 1.0,
                                                     "n_folds": 3},
                                    features=FeatureConfig(representations=("stft",))),
                          cache=directory / "cache", workers=0, progress=False)
    train(TrainConfig(store=str(res.store_dir), view="stft", model="resnet18", width=0.125, input_size=(32, 32),
                      batch_size=4, epochs=2, lr=5e-3, time_shift=0.0, workers=0, device="cpu", amp=False),
          out_dir=directory / "run", progress=False)
    return res.store_dir, directory / "run" / "checkpoint.pt"


def _job_env(**variables: str) -> dict[str, str]:
    """The test's environment for jobs (sbatch exports it): this Python, the checkout, one thread."""
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), **variables)


def _shard(path) -> tuple[dict, dict]:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: f[k][:] for k in f}, dict(f.attrs)


@pytest.mark.floats
def test_attack_job_array_and_merge_equal_a_local_run(local_slurm, tmp_path):
    """attack.sbatch as a 2-task job array, merge.sbatch after it (afterok), against one local run."""
    from advaudio.store import find_shards

    t0 = time.perf_counter()
    store_dir, ckpt = _tiny_checkpoint(tmp_path / "slurm")
    local_store = tmp_path / "local" / "cache" / store_dir.name  # same fingerprint, its own shards
    shutil.copytree(store_dir, local_store)
    t_built = time.perf_counter()
    # deepfool (per-sample minimal perturbations) with one clip per attack call: slices and
    # the local run do the same float operations, so the merged set must equal it bit for bit.
    variables = dict(CHECKPOINT=str(ckpt), ATTACKS="deepfool", FOOLING_RATE="0.5", BATCH_SIZE="1", SPLIT="test",
                     ROUND="0")
    env = _job_env(**variables)
    array = sbatch_submit(f"--chdir={tmp_path}", "--time=00:10:00", "--cpus-per-task=1", "--array=0-1",
                          str(SLURM_DIR / "attack.sbatch"), env=env)
    merge = sbatch_submit(f"--chdir={tmp_path}", "--time=00:10:00", f"--dependency=afterok:{array}",
                          "--kill-on-invalid-dep=yes", str(SLURM_DIR / "merge.sbatch"), env=env)
    local = subprocess.run([sys.executable, "-m", "advaudio", "attack", "--checkpoint", str(ckpt), "--store",
                            str(local_store), "--attacks", "deepfool", "--fooling-rate", "0.5", "--batch-size", "1",
                            "--out", str(tmp_path / "local" / "out"), "--no-progress"],
                           capture_output=True, text=True, env=_job_env(), timeout=300)
    assert local.returncode == 0, local.stderr
    array_state, merge_state = wait_for_job(array), wait_for_job(merge)
    t_jobs = time.perf_counter()
    logs = sorted(tmp_path.glob(f"advaudio-attack-{array}_*.out"))
    text = "\n".join(f"== {p.name}\n{p.read_text()}" for p in logs)
    assert array_state == "COMPLETED", text
    assert [p.name for p in logs] == [f"advaudio-attack-{array}_{i}.out" for i in (0, 1)]
    for i, log in enumerate(logs):  # each task attacked its own slice, without HDF5 file locks
        assert f"--slice {i}/2" in log.read_text() and "HDF5_USE_FILE_LOCKING=FALSE" in log.read_text()
    merge_log = (tmp_path / f"advaudio-merge-{merge}.out").read_text()
    assert merge_state == "COMPLETED", merge_log
    results = ckpt.parent / "attack-round00-test.json"
    assert merge_log.strip().splitlines()[-1] == str(results)

    sha = st.sha256_file(ckpt)
    names = sorted(p.name for p in Store(store_dir).adversarial_shards())
    stem = f"round00-test-{sha[:10]}-deepfool"
    assert names == [f"{stem}-slice000of002.h5", f"{stem}-slice001of002.h5", f"{stem}.h5"]
    (merged,) = find_shards(Store(store_dir), checkpoint_sha=sha, round=0, split="test")
    assert merged.name == f"{stem}.h5"  # retraining sees the merged set only
    a, a_attrs = _shard(local_store / "adversarial" / f"{stem}.h5")
    b, b_attrs = _shard(merged)
    assert sorted(a) == sorted(b) and len(b["clean_index"]) == 6
    for key in a:  # adversarial inputs, norms, success, within_budget, rows, labels: value by value
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for key in ("budget", "fooling_rate", "threshold", "kind", "norm", "attack_config", "checkpoint_sha256",
                "store_fingerprint", "view", "slice"):
        assert a_attrs[key] == b_attrs[key], key
    (lrec,) = json.loads((tmp_path / "local" / "out" / "attack-round00-test.json").read_text())["attacks"]
    (mrec,) = json.loads(results.read_text())["attacks"]
    for key in ("budget", "fooling_rate", "success_rate", "reached", "evaluations", "stats", "n_attacked",
                "n_excluded", "n_samples", "queries", "gradient_queries"):
        assert mrec[key] == lrec[key], key
    print(f"\nSLURM attack array + merge: store+model {t_built - t0:.1f} s, jobs (with the local run beside "
          f"them) {t_jobs - t_built:.1f} s, whole test {time.perf_counter() - t0:.1f} s", file=sys.stderr)


# --- the chained experiment (a stand-in sbatch: no SLURM needed) ---------------------

FAKE_SBATCH = """#!/usr/bin/env bash
# Records each submission (arguments and environment) as one JSON line; prints a job id.
n=$(( $(wc -l < "$FAKE_SBATCH_LOG") + 1 ))
"$FAKE_PYTHON" -c 'import json, os, sys; print(json.dumps({"args": sys.argv[1:], "env": dict(os.environ)}))' "$@" \\
    >> "$FAKE_SBATCH_LOG"
echo "$((100 + n));cluster"
"""


def _run_experiment(tmp_path: Path, **variables: str) -> list[dict]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    log = tmp_path / "sbatch.jsonl"
    log.write_text("")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_SBATCH_LOG=str(log),
               FAKE_PYTHON=sys.executable, **variables)
    proc = subprocess.run(["bash", str(SLURM_DIR / "experiment.sh")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == variables["RUN_DIR"]
    jobs = []
    for i, line in enumerate(log.read_text().splitlines()):
        job = json.loads(line)
        args = job["args"]
        job["id"] = str(101 + i)
        job["name"] = next(a.split("=", 1)[1] for a in args if a.startswith("--job-name="))
        deps = [a.split("=", 1)[1] for a in args if a.startswith("--dependency=")]
        job["after"] = deps[0].removeprefix("afterok:").split(":") if deps else []
        job["array"] = next((a.split("=", 1)[1] for a in args if a.startswith("--array=")), None)
        jobs.append(job)
    return jobs


def test_experiment_script_chains_every_stage_with_afterok(tmp_path):
    run_dir = str(tmp_path / "run")
    jobs = _run_experiment(tmp_path, RUN_DIR=run_dir, ATTACKS="deepfool,pgd", ROUNDS="1", ARRAY_SIZE="3",
                           FIXED_BUDGET_ATTACKS="pgd", PARTITION="cpu", ACCOUNT="proj", TRAIN_RESOURCES="-p gpu --gres=gpu:2 -c 8",
                           BATCH_SIZE="16", EPOCHS="5", ATTACK_ARGS="-p pgd.steps=20 -p deepfool.steps=30")
    by_name = {j["name"].removeprefix("advaudio-"): j for j in jobs}
    assert list(by_name) == [
        "featurize", "train",
        "attack-r00-test", "attack-r00-test-whole", "merge-r00-test",
        "attack-r00-train", "attack-r00-train-whole", "merge-r00-train", "retrain-r01",
        "attack-r01-test", "attack-r01-test-whole", "merge-r01-test", "report"]

    def after(name):
        return [next(k for k, j in by_name.items() if j["id"] == i) for i in by_name[name]["after"]]

    assert after("featurize") == [] and after("train") == ["featurize"]
    assert after("attack-r00-test") == after("attack-r00-train") == after("attack-r00-test-whole") == ["train"]
    assert after("merge-r00-test") == ["attack-r00-test", "attack-r00-test-whole"]
    assert after("retrain-r01") == ["merge-r00-train"]
    assert after("attack-r01-test") == ["retrain-r01"] and after("merge-r01-test")[0] == "attack-r01-test"
    assert after("report") == ["merge-r00-test", "merge-r01-test"]
    for job in jobs:
        assert "--partition=cpu" in job["args"] and "--account=proj" in job["args"]
        assert ("--kill-on-invalid-dep=yes" in job["args"]) == bool(job["after"])
    assert "--gres=gpu:2" in by_name["train"]["args"] and "-p" in by_name["train"]["args"]
    # Attacks are sliced over the array; pgd, named in FIXED_BUDGET_ATTACKS, runs whole, as one slice.
    env = {k: j["env"] for k, j in by_name.items()}
    assert by_name["attack-r00-test"]["array"] == "0-2" and env["attack-r00-test"]["SLICES"] == "3"
    assert env["attack-r00-test"]["ATTACKS"] == "deepfool" and env["attack-r00-test-whole"]["ATTACKS"] == "pgd"
    assert by_name["attack-r00-test-whole"]["array"] == "0-0" and env["attack-r00-test-whole"]["SLICES"] == "1"
    # …each with only its own attacks' parameters (advaudio attack refuses the others')
    assert env["attack-r00-test"]["ATTACK_ARGS"] == "-p deepfool.steps=30"
    assert env["attack-r00-test-whole"]["ATTACK_ARGS"] == "-p pgd.steps=20"
    # Each job gets its own variables explicitly: the training batch does not leak into the attacks.
    assert env["train"]["BATCH_SIZE"] == "16" and env["attack-r00-test"]["BATCH_SIZE"] == "64"
    assert env["train"]["STORE_FILE"] == f"{run_dir}/logs/featurize.out"
    assert f"--output={run_dir}/logs/featurize.out" in by_name["featurize"]["args"]
    assert env["retrain-r01"]["CHECKPOINT"] == f"{run_dir}/checkpoint.pt" and env["retrain-r01"]["ROUND"] == "0"
    assert env["retrain-r01"]["OUT"] == f"{run_dir}/round01"
    assert env["attack-r01-test"]["CHECKPOINT"] == f"{run_dir}/round01/checkpoint.pt"
    assert (env["attack-r01-test"]["ROUND"], env["attack-r00-train"]["SPLIT"]) == ("1", "train")
    assert env["report"]["RUN_DIRS"] == run_dir

    # Submitted again after round 0 finished training: no featurize/train job, attacks start at once.
    Path(run_dir, "metrics.json").write_text('{"complete": true, "epochs_done": 12}')
    again = {j["name"].removeprefix("advaudio-"): j for j in _run_experiment(
        tmp_path, RUN_DIR=run_dir, ATTACKS="deepfool", ROUNDS="1", ARRAY_SIZE="2")}
    assert "featurize" not in again and "train" not in again
    assert again["attack-r00-test"]["after"] == [] and "attack-r00-test-whole" not in again


STUDY = """
[study]
name = "slurm-study"
[data.synth]
dataset = "synthetic"
options = { clips_per_class = 6, n_classes = 3, duration = 0.5, n_folds = 3 }
shard_size = 6
[data.synth.features]
representations = ["stft"]
n_fft = 512
hop_length = 256
[grid]
models = ["resnet18"]
views = ["stft"]
widths = [0.125]
input_sizes = ["32x32"]
[train]
epochs = 2
batch_size = 8
[protocol]
cv = [2, 3]
attack_folds = [3]
[attacks]
names = ["deepfool"]
test_clips = 6
checks = false
[attacks.params.deepfool]
steps = 10
[rounds]
count = 0
[run]
out = "slurm.study"
executor = "slurm"
threads = 1
featurize_workers = 0
[run.slurm]
resources = "--time=00:10:00"
"""


@pytest.mark.floats
def test_study_runs_as_a_slurm_job_chain(local_slurm, tmp_path):
    """`advaudio study run` with the slurm executor: featurize → one job per cell → report, all from the file."""
    from advaudio.study.planning import plan_study
    from advaudio.study.spec import read_study

    study_file = tmp_path / "s.toml"
    study_file.write_text(STUDY.replace("[run.slurm]", f'[run.slurm]\npython = "{sys.executable}"'))
    env = _job_env()
    proc = subprocess.run([sys.executable, "-m", "advaudio", "study", "run", str(study_file)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"featurize (\d+), 2 cell\(s\), report (\d+)", proc.stderr)
    assert m, proc.stderr
    assert wait_for_job(m.group(2), timeout=600) == "COMPLETED"
    plan = plan_study(read_study(study_file))
    logs = "\n".join(p.read_text() for p in (tmp_path / "slurm.study" / "slurm-logs").glob("*.out"))
    assert plan.counts()["done"] == 2, logs
    assert (tmp_path / "slurm.study" / "report" / "study.md").is_file(), logs
    attacked = [s.summary for s in plan.statuses if s.cell.attacked]
    assert len(attacked) == 1 and "deepfool" in attacked[0].rounds[0].attacks
    # submitting again resubmits no finished cell
    again = subprocess.run([sys.executable, "-m", "advaudio", "study", "run", str(study_file)], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and ", 0 cell(s)," in again.stderr, again.stderr
