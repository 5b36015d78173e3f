"""The thread count: explicit setting > SLURM_CPUS_PER_TASK > affinity mask / cgroup quota; torchrun ranks split."""

import os
import subprocess
import sys
import time

import pytest

from advaudio.errors import ParameterError
from advaudio.threads import busy_cpus, cgroup_cpu_limit, choose_threads


def test_each_rule_wins_in_the_stated_order():
    env = {"OMP_NUM_THREADS": "3", "SLURM_CPUS_PER_TASK": "5"}
    assert choose_threads(2, environ=env, affinity=8).threads == 2  # --threads beats everything
    assert choose_threads(None, environ=env, affinity=8).to_dict() == {"threads": 3, "source": "OMP_NUM_THREADS"}
    del env["OMP_NUM_THREADS"]
    assert choose_threads(None, environ=env, affinity=8).to_dict() == {"threads": 5, "source": "SLURM_CPUS_PER_TASK"}
    assert choose_threads(None, environ={}, affinity=6, cgroup_limit=None, others_busy=0.2).to_dict() == {
        "threads": 6, "source": "affinity mask"}
    # a container's quota of 1.5 CPUs: two threads, not the six the mask allows
    assert choose_threads(None, environ={}, affinity=6, cgroup_limit=1.5, others_busy=0.0).to_dict() == {
        "threads": 2, "source": "cgroup CPU quota"}
    assert choose_threads(None, environ={}, affinity=2, cgroup_limit=4.0, others_busy=0).threads == 2
    # other processes keeping CPUs busy leave them alone (never below one thread)
    assert choose_threads(None, environ={}, affinity=2, cgroup_limit=None, others_busy=0.9).to_dict() == {
        "threads": 1, "source": "affinity mask less 1 CPU(s) busy with other processes"}
    assert choose_threads(None, environ={}, affinity=2, cgroup_limit=None, others_busy=3.0).threads == 1
    # ... but an explicit setting or a SLURM allocation is taken as it is
    assert choose_threads(None, environ={"SLURM_CPUS_PER_TASK": "2"}, others_busy=2.0).threads == 2


def test_torchrun_ranks_split_the_cpus_unless_told():
    assert choose_threads(None, environ={"LOCAL_WORLD_SIZE": "2"}, affinity=8, cgroup_limit=None,
                          others_busy=0).to_dict() == {
        "threads": 4, "source": "affinity mask / 2 torchrun ranks"}
    assert choose_threads(None, environ={"LOCAL_WORLD_SIZE": "4", "SLURM_CPUS_PER_TASK": "2"}, affinity=8).threads == 1
    assert choose_threads(None, environ={"LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "3"}, affinity=8).threads == 3


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_settings_are_a_parameter_error(bad):
    with pytest.raises(ParameterError, match="OMP_NUM_THREADS must be a positive integer"):
        choose_threads(None, environ={"OMP_NUM_THREADS": bad})
    with pytest.raises(ParameterError, match="SLURM_CPUS_PER_TASK"):
        choose_threads(None, environ={"SLURM_CPUS_PER_TASK": bad})


def test_cgroup_files_are_parsed(tmp_path):
    v2 = tmp_path / "cpu.max"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_limit(cpu_max=v2, v1=(tmp_path / "none", tmp_path / "none")) == 1.5
    v2.write_text("max 100000\n")
    assert cgroup_cpu_limit(cpu_max=v2, v1=(tmp_path / "none", tmp_path / "none")) is None
    quota, period = tmp_path / "q", tmp_path / "p"
    quota.write_text("200000\n"), period.write_text("100000\n")
    assert cgroup_cpu_limit(cpu_max=tmp_path / "missing", v1=(quota, period)) == 2.0
    quota.write_text("-1\n")
    assert cgroup_cpu_limit(cpu_max=tmp_path / "missing", v1=(quota, period)) is None


def test_a_busy_process_is_measured():
    """A real busy process beside this one shows as about one busy CPU."""
    if not os.path.exists("/proc/stat"):
        pytest.skip("needs Linux's /proc/stat")
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cpus(window=0.5) >= 0.6
    finally:
        hog.kill()
        hog.wait()


def test_the_cli_sets_torch_threads_from_the_affinity_mask():
    """A real process pinned to one CPU (taskset) computes with one torch thread; --threads overrides it."""
    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs affinity masks and at least 2 CPUs")
    code = ("import os, sys, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
            "from advaudio.threads import configure_threads;"
            "c = configure_threads(int(sys.argv[1]) if len(sys.argv) > 1 else None);"
            "print(c.threads, c.source, torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    pinned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert pinned.returncode == 0, pinned.stderr
    threads, *_, torch_threads = pinned.stdout.split()
    assert (threads, torch_threads) == ("1", "1") and "affinity mask" in pinned.stdout
    explicit = subprocess.run([sys.executable, "-c", code, "2"], capture_output=True, text=True, env=env, timeout=120)
    assert explicit.stdout.split() == ["2", "--threads", "2"]


def test_more_threads_than_cpus_are_warned_about():
    """Issue 18: --threads 999 on 2 CPUs ran at 0.8 samples/s against 295, silently."""
    over = choose_threads(999, environ={}, affinity=2, cgroup_limit=None)
    assert over.threads == 999 and "--threads 999 is more than the 2 CPU(s)" in over.warning
    assert choose_threads(2, environ={}, affinity=2, cgroup_limit=None).warning is None
    assert "more than the 1 CPU(s)" in choose_threads(2, environ={}, affinity=4, cgroup_limit=0.5).warning
    code = ("import os, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
            "from advaudio.threads import configure_threads; configure_threads(3)")
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs affinity masks")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 and "warning: --threads 3 is more than the 1 CPU(s)" in result.stderr, result.stderr
