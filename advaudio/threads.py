"""CPU threads: how many this process may use, and one place that sets them.

torch (OpenMP), numpy's BLAS and numba each start one thread per *core of the
machine* unless told otherwise. On a cluster node, in a container or beside
another job that is more than this process may use, and two processes that
each take every core run several times slower than one after the other
(OpenMP's threads spin-wait for each other). So every computing stage asks
:func:`configure_threads` once, before its work starts.

The number of threads is, in this order:

1. an explicit setting: the ``threads`` argument (``--threads``; more than the
   CPUs of 3. below is warned about: spin-waiting threads on too few cores run
   many times slower), else the ``OMP_NUM_THREADS`` environment
   variable (set by the user, or to 1 by Dask for its worker processes and by
   torchrun for its ranks);
2. ``SLURM_CPUS_PER_TASK`` inside a SLURM job;
3. the CPUs this process may run on: its affinity mask
   (:func:`os.sched_getaffinity`, e.g. ``taskset``), further limited by a cgroup
   CPU quota (a container's ``--cpus``), less the CPUs that other processes keep
   busy when the stage starts (measured over 0.2 s: beside one busy process on
   2 cores, one thread runs 2× faster than two, see ``benchmarks/bench_threads.py``);

and, inside a torchrun job without an explicit setting, 2. or 3. divided among
the node's ``LOCAL_WORLD_SIZE`` ranks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from advaudio.errors import ParameterError

_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads, and which rule chose them (for logs and results)."""

    threads: int
    source: str
    #: set when the choice differs from what was asked (more threads than CPUs): said on stderr
    warning: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"threads": self.threads, "source": self.source}


def _positive(value: object, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ParameterError(f"{what} must be a positive integer, got {value!r}") from None
    if n < 1:
        raise ParameterError(f"{what} must be a positive integer, got {value!r}")
    return n


def cgroup_cpu_limit(*, cpu_max: Path = _CGROUP_V2, v1: tuple[Path, Path] = _CGROUP_V1) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when there is none."""
    try:
        quota, period = cpu_max.read_text().split()[:2]  # "max 100000" or "150000 100000"
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us, period_us = (int(p.read_text()) for p in v1)
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (all of the machine's where the OS has no masks)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cpus(*, window: float = 0.2, stat: Path = Path("/proc/stat")) -> float:
    """CPUs of this process's affinity mask kept busy by *other* processes, averaged over ``window`` seconds.

    From the kernel's per-CPU time counters (``/proc/stat``) less this process's own
    CPU time in the window; 0.0 where the counters cannot be read (not Linux).
    """
    import time

    try:
        cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    except (AttributeError, OSError):
        cpus = None

    def busy_seconds() -> float:
        total = 0
        for line in stat.read_text().splitlines():
            name, *fields = line.split()
            if name.startswith("cpu") and name != "cpu" and (cpus is None or name in cpus):
                ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(ticks) - ticks[3] - ticks[4]
        return total / os.sysconf("SC_CLK_TCK")

    def own_seconds() -> float:
        t = os.times()
        return t.user + t.system

    try:
        b0, o0, t0 = busy_seconds(), own_seconds(), time.monotonic()
        time.sleep(window)
        b1, o1, t1 = busy_seconds(), own_seconds(), time.monotonic()
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, (b1 - b0) - (o1 - o0)) / max(t1 - t0, 1e-9)


def choose_threads(threads: int | None = None, *, environ: dict[str, str] | None = None,
                   affinity: int | None = None, cgroup_limit: float | None | bool = False,
                   others_busy: float | None = None) -> ThreadChoice:
    """The number of threads this process should use, by the rules of the module docstring.

    Parameters
    ----------
    threads : an explicit number (``--threads``); None: follow the environment
    environ : the environment to read (default: ``os.environ``)
    affinity : CPUs in the affinity mask (default: :func:`affinity_cpus`)
    cgroup_limit : the cgroup quota in CPUs, None for none (default: :func:`cgroup_cpu_limit`)
    others_busy : CPUs busy with other processes (default: :func:`busy_cpus`, measured
        only when neither an explicit setting nor SLURM decides)
    """
    env = os.environ if environ is None else environ
    if threads is not None:
        n = _positive(threads, "--threads")
        cpus = affinity_cpus() if affinity is None else affinity
        quota = cgroup_cpu_limit() if cgroup_limit is False else cgroup_limit
        if quota is not None:
            cpus = min(cpus, max(1, math.ceil(quota)))
        if n > cpus:  # an explicit setting wins, but never silently: spin-waiting threads run many times slower
            return ThreadChoice(n, "--threads",
                                warning=f"--threads {n} is more than the {cpus} CPU(s) this process may use: "
                                        f"its threads wait on each other and run many times slower than with "
                                        f"--threads {cpus}")
        return ThreadChoice(n, "--threads")
    if env.get("OMP_NUM_THREADS", "").strip():
        return ThreadChoice(_positive(env["OMP_NUM_THREADS"], "OMP_NUM_THREADS"), "OMP_NUM_THREADS")
    if env.get("SLURM_CPUS_PER_TASK", "").strip():
        n = _positive(env["SLURM_CPUS_PER_TASK"], "SLURM_CPUS_PER_TASK")
        source = "SLURM_CPUS_PER_TASK"
    else:
        n = affinity_cpus() if affinity is None else affinity
        source = "affinity mask"
        quota = cgroup_cpu_limit() if cgroup_limit is False else cgroup_limit
        if quota is not None and math.ceil(quota) < n:
            n, source = max(1, math.ceil(quota)), "cgroup CPU quota"
        taken = round(busy_cpus() if others_busy is None else others_busy)
        if taken >= 1 and n > 1:
            n, source = max(1, n - taken), f"{source} less {taken} CPU(s) busy with other processes"
    ranks = env.get("LOCAL_WORLD_SIZE", "").strip()
    if ranks and int(ranks) > 1:
        n, source = max(1, n // int(ranks)), f"{source} / {int(ranks)} torchrun ranks"
    return ThreadChoice(n, source)


def configure_threads(threads: int | None = None) -> ThreadChoice:
    """Set torch's intra-op threads (and numpy's BLAS pools, through threadpoolctl) to
    :func:`choose_threads`; returns the choice. Idempotent; safe to call once per stage.

    Denormal floats are left alone: measured (``benchmarks/bench_threads.py``), flushing
    them changes no step time here, and the demo's fine-tuned weights hold none.
    """
    import torch
    from threadpoolctl import threadpool_limits

    choice = choose_threads(threads)
    if choice.warning:
        import sys

        print(f"warning: {choice.warning}", file=sys.stderr, flush=True)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    threadpool_limits(limits=choice.threads, user_api="blas")
    return choice
