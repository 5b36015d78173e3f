"""Dask workers as batch jobs on a SLURM or PBS cluster (through dask-jobqueue).

:func:`make_cluster` submits ``jobs`` batch jobs, each running Dask worker
processes that connect back to a scheduler in this process, waits until the
first worker has joined, and returns the cluster; pass it to
:func:`advaudio.stages.featurize.featurize` as ``cluster=``. Close it (``with`` or
``.close()``) to cancel the jobs.

Everything the workers read and write — the dataset, the cache holding the
store, the Python environment — must be on a file system shared by the nodes,
at the same paths. ``pipeline/README.md`` walks through a real cluster.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advaudio.errors import AdvaudioError, ParameterError
from advaudio.validation import integer

CLUSTER_KINDS = ("slurm", "pbs")
_QUEUE_COMMAND = {"slurm": "squeue", "pbs": "qstat"}
_JOB_NAME = "advaudio-dask"


@dataclass(frozen=True)
class ClusterConfig:
    """Batch jobs running Dask workers.

    Parameters
    ----------
    kind : batch system, ``"slurm"`` or ``"pbs"``
    jobs : number of worker jobs to submit
    cores : CPU cores requested per job
    processes : Dask worker processes per job (None: one single-threaded
        process per core, as the transforms prefer processes to threads)
    memory : memory per job, e.g. ``"4GB"``; split evenly between its processes
    walltime : time limit per job, ``HH:MM:SS``
    queue : SLURM partition or PBS queue (None: the system's default)
    account : account/project charged for the jobs (None: the user's default)
    job_extra_directives : further ``#SBATCH``/``#PBS`` options, e.g.
        ``("--qos=short", "--constraint=skylake")`` for SLURM
    interface : network interface that the scheduler listens on and the
        workers use, e.g. ``"ib0"`` (InfiniBand), ``"eth0"``; ``"lo"`` only
        for a one-machine cluster (None: the host name's address)
    local_directory : node-local scratch directory of the workers (spill
        files), e.g. ``"$TMPDIR"`` or ``"/scratch/$USER"`` (None: Dask's default)
    log_directory : where the jobs' stdout/stderr files go; must be on the
        shared file system (None: ``advaudio-dask-logs`` under the current
        directory). Relative paths are made absolute here.
    python : Python executable on the compute nodes (None: this process's
        ``sys.executable``, right when the environment is on shared storage)
    job_script_prologue : shell lines run in each job before the worker,
        e.g. ``("module load python/3.11", "source ~/venvs/advaudio/bin/activate")``
    dashboard_address : address of the scheduler's dashboard (Dask's ``":8787"``;
        another free port if taken; ``":0"``: any free port; None: off)
    wait_timeout : seconds :func:`make_cluster` waits for the first worker
        (0: do not wait; tasks then wait for workers as long as it takes)
    """

    kind: str = "slurm"
    jobs: int = 1
    cores: int = 1
    processes: int | None = None
    memory: str = "4GB"
    walltime: str = "01:00:00"
    queue: str | None = None
    account: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    python: str | None = None
    job_script_prologue: tuple[str, ...] = ()
    dashboard_address: str | None = ":8787"
    wait_timeout: float = 120.0

    def __post_init__(self):
        # Lists are accepted for convenience; stored as tuples (frozen, hashable).
        for name in ("job_extra_directives", "job_script_prologue"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value or ()))
        if self.kind not in CLUSTER_KINDS:
            raise ParameterError(f"cluster kind must be slurm or pbs, got {self.kind!r}")
        for name in ("jobs", "cores"):
            integer(f"cluster {name}", getattr(self, name))
        if self.processes is not None and not 1 <= self.processes <= self.cores:
            raise ParameterError(
                f"cluster processes must be between 1 and cores ({self.cores}), got {self.processes}"
            )
        try:
            from dask.utils import parse_bytes

            if parse_bytes(self.memory) <= 0:
                raise ValueError
        except (ValueError, TypeError):
            raise ParameterError(f"cluster memory must look like 4GB or 500MiB, got {self.memory!r}") from None
        parts = str(self.walltime).split(":")
        if not (1 <= len(parts) <= 3 and all(p.strip().isdigit() for p in parts[-2:])):
            raise ParameterError(f"cluster walltime must look like HH:MM:SS, got {self.walltime!r}")
        if self.wait_timeout < 0:
            raise ParameterError(f"cluster wait_timeout must be >= 0, got {self.wait_timeout}")

    @property
    def worker_processes(self) -> int:
        return self.processes if self.processes is not None else self.cores


def _jobqueue():
    try:
        import dask_jobqueue
    except ImportError:
        raise AdvaudioError(
            "batch-cluster support needs dask-jobqueue: pip install advaudio[cluster]"
        ) from None
    return dask_jobqueue


def _log_directory(config: ClusterConfig) -> str:
    return os.path.abspath(os.path.expanduser(config.log_directory or "advaudio-dask-logs"))


def _job_kwargs(config: ClusterConfig) -> dict[str, Any]:
    """Keyword arguments shared by dask-jobqueue's Job and Cluster classes."""
    return dict(
        cores=config.cores,
        processes=config.worker_processes,
        memory=config.memory,
        walltime=config.walltime,
        queue=config.queue,
        account=config.account,
        job_extra_directives=list(config.job_extra_directives),
        job_script_prologue=list(config.job_script_prologue),
        interface=config.interface,
        local_directory=config.local_directory,
        log_directory=_log_directory(config),
        python=config.python or sys.executable,
        job_name=_JOB_NAME,
    )


def _classes(config: ClusterConfig):
    jq = _jobqueue()
    if config.kind == "slurm":
        return jq.SLURMCluster, jq.slurm.SLURMJob
    return jq.PBSCluster, jq.pbs.PBSJob


def cluster_job_script(config: ClusterConfig) -> str:
    """The batch script each worker job would run (for display and debugging).

    Starts no scheduler and submits nothing; the scheduler's address is a
    placeholder (it is known only once :func:`make_cluster` runs). Like
    dask-jobqueue, it creates the log directory.
    """
    _, job_cls = _classes(config)
    job = job_cls(scheduler="tcp://<scheduler-address>:8786", name="<worker-name>", **_job_kwargs(config))
    return job.job_script()


def _queued_jobs(kind: str, job_ids: list[str]) -> list[str] | None:
    """The jobs still in the queue, one ``"ID STATE REASON"`` line each.

    ``[]``: none is (they ended or failed); None: unknown (no SLURM answer,
    or PBS, whose ``qstat`` does not list ended jobs reliably).
    """
    command = _QUEUE_COMMAND[kind]
    if not job_ids or shutil.which(command) is None:
        return None
    argv = ([command, "-h", "-j", ",".join(job_ids), "-o", "%i %T %r"] if kind == "slurm"
            else [command, *job_ids])
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [" ".join(line.split()) for line in proc.stdout.splitlines() if line.strip()]
    if kind == "pbs":
        return lines[2:] or None  # qstat's two header lines
    if proc.returncode == 0 or "invalid job id" in proc.stderr.lower():
        return lines
    return None


def _last_error_line(config: ClusterConfig, job_ids: list[str]) -> str:
    """The last line of the first non-empty SLURM job error log, if any."""
    if config.kind != "slurm":
        return ""
    for job_id in job_ids:
        path = Path(_log_directory(config)) / f"{_JOB_NAME}-{job_id}.err"
        try:
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            continue
        if lines:
            return f"; {path.name}: {lines[-1]}"
    return ""


def _check_submission(config: ClusterConfig) -> None:
    """Let SLURM validate one worker job without submitting it (``sbatch --test-only``).

    A wrong partition, or more memory or time than any node offers, fails
    here with SLURM's own words. PBS has no such dry run.
    """
    if config.kind != "slurm":
        return
    if shutil.which("sbatch") is None:
        raise AdvaudioError("--cluster slurm: there is no sbatch here; run from a SLURM login node")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="advaudio-dask-") as script:
        script.write(cluster_job_script(config))
        script.flush()
        try:
            proc = subprocess.run(["sbatch", "--test-only", script.name], capture_output=True,
                                  text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise AdvaudioError(f"sbatch --test-only failed: {exc}") from None
    if proc.returncode != 0:
        why = "; ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())
        raise AdvaudioError(f"slurm refuses the worker job: {why or f'sbatch exit status {proc.returncode}'}")


def make_cluster(config: ClusterConfig):
    """Submit ``config.jobs`` worker jobs and return the dask-jobqueue cluster.

    Waits up to ``config.wait_timeout`` seconds for the first worker to join
    (the others may still be queued), so that a wrong partition, account or
    Python environment fails here with the batch system's own message rather
    than as a run that never progresses.

    Returns a ``dask_jobqueue.SLURMCluster`` or ``PBSCluster``; closing it
    cancels the jobs.
    """
    Path(_log_directory(config)).mkdir(parents=True, exist_ok=True)
    _check_submission(config)
    try:
        cluster_cls, _ = _classes(config)
        # Without a dashboard the scheduler's HTTP server still starts: on any free port.
        scheduler_options = {"dashboard_address": config.dashboard_address or ":0",
                             "dashboard": config.dashboard_address is not None}
        cluster = cluster_cls(scheduler_options=scheduler_options, **_job_kwargs(config))
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"cannot set up the {config.kind} cluster: {exc}") from None
    try:
        _submit(cluster, config)
        if config.wait_timeout:
            _wait_for_first_worker(cluster, config)
    except BaseException:  # errors, Ctrl-C: cancel whatever was submitted
        cluster.close()
        raise
    return cluster


def _submit(cluster, config: ClusterConfig) -> None:
    cluster.scale(jobs=config.jobs)
    # Wait for the submissions (scale() only schedules them): a job without an
    # id was refused, and dask-jobqueue has logged the batch system's message.
    try:
        cluster.sync(cluster._correct_state)
        error = None
    except Exception as exc:  # dask-jobqueue's RuntimeError with sbatch/qsub's output
        error = "; ".join(line.strip() for line in str(exc).splitlines() if "error" in line.lower())
    if error or any(not getattr(job, "job_id", None) for job in cluster.workers.values()):
        raise AdvaudioError(f"{config.kind} refused the worker jobs: "
                            f"{error or 'the submission error is logged above'}")


def _wait_for_first_worker(cluster, config: ClusterConfig) -> None:
    """Return once a worker has joined; raise when none can.

    Fails early when every job has already left the SLURM queue (a worker
    that cannot start: wrong Python, missing module...), else after
    ``config.wait_timeout`` seconds.
    """
    job_ids = [str(job.job_id) for job in cluster.workers.values()]
    deadline = time.monotonic() + config.wait_timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            cluster.wait_for_workers(1, timeout=max(0.1, min(2.0, remaining)))
            return
        except TimeoutError:  # distributed's WorkerStartTimeoutError
            pass
        queued = _queued_jobs(config.kind, job_ids)
        if queued == [] or time.monotonic() >= deadline:
            break
    if queued == []:
        why = f"no Dask worker joined: jobs {', '.join(job_ids)} ended before one connected"
    else:
        why = f"no Dask worker joined within {config.wait_timeout:g} s" + (
            f" (jobs {'; '.join(queued)})" if queued else "")
    raise AdvaudioError(
        f"{why}: check `{_QUEUE_COMMAND[config.kind]}` and the job logs in {_log_directory(config)}"
        + _last_error_line(config, job_ids)
    )
