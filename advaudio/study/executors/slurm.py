"""The ``slurm`` executor: a study as a chain of batch jobs, driven from the study file.

    featurize job  (advaudio study run FILE --featurize-only)
      ├─► one job per cell not done (advaudio study run FILE --cell ID), afterok:featurize
      └─► report job (advaudio study report FILE), afterany:every cell job

Each job runs the same command a user runs on a laptop, so a job that is killed
or fails is resumed by submitting again (finished cells are not resubmitted).
The study file, the datasets, the study directory and the Python environment must
be on a file system the nodes share. Options come from ``[run.slurm]``:
``partition``, ``account``, ``resources`` (sbatch options of each cell job, e.g.
``"--gres=gpu:1 -c 8 --mem=32G --time=04:00:00"``), ``featurize_resources``,
``report_resources``, ``setup`` (shell lines run first in each job), ``python``.
Job logs: ``STUDY_DIR/slurm-logs/``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from advaudio.errors import AdvaudioError
from advaudio.study.cells import Cell
from advaudio.study.planning import StudyPlan
from advaudio.study.spec import StudySpec


def _sbatch(args: list[str], command: str) -> str:
    proc = subprocess.run(["sbatch", "--parsable", *args, "--wrap", command], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        reason = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()[-1]
        raise AdvaudioError(f"sbatch refused the study's job: {reason}")
    return proc.stdout.strip().split(";")[0]


def job_commands(spec: StudySpec, cell_ids: list[str]) -> list[tuple[str, str]]:
    """(job name, shell command) of the featurize job, each cell's job and the report job."""
    options = spec.run.slurm
    python = options.get("python") or sys.executable
    setup = options.get("setup") or ""
    study = shlex.quote(str(spec.path))

    def command(args: str) -> str:
        run = f"{shlex.quote(python)} -m advaudio study {args}"
        return f"{setup}\n{run}" if setup else run

    jobs = [("featurize", command(f"run {study} --featurize-only"))]
    jobs += [(f"cell-{cid}", command(f"run {study} --executor local --cell {shlex.quote(cid)} --echo"))
             for cid in cell_ids]
    jobs.append(("report", command(f"report {study}")))
    return jobs


def log_directory(spec: StudySpec) -> Path:
    """Where the study's job logs go."""
    return spec.directory / "slurm-logs"


def run(plan: StudyPlan, todo: list[Cell], *, progress: bool, echo: bool, keep_going: bool) -> None:
    """Submit the chain for ``todo`` (a featurize job first: this executor featurizes on the cluster)."""
    submit_study(plan.spec, [c.cell_id for c in todo], progress=progress)


def submit_study(spec: StudySpec, todo: list[str], *, progress: bool = True) -> dict[str, str]:
    """Submit the featurize job, a job per cell of ``todo`` (ids) and the report job; job name → job id."""
    if shutil.which("sbatch") is None:
        raise AdvaudioError("executor 'slurm' needs sbatch, which is not on PATH (not a SLURM login node?)")
    options = spec.run.slurm
    logs = log_directory(spec)
    logs.mkdir(parents=True, exist_ok=True)
    common = [f"--chdir={spec.directory}", "--kill-on-invalid-dep=yes"]
    for key, flag in (("partition", "--partition"), ("account", "--account")):
        if options.get(key):
            common.append(f"{flag}={options[key]}")

    def resources(key: str) -> list[str]:
        return shlex.split(options.get(key) or "")

    ids: dict[str, str] = {}
    jobs = job_commands(spec, todo)
    name, command = jobs[0]
    ids[name] = _sbatch([*common, f"--job-name=advaudio-study-{name}", f"--output={logs}/{name}-%j.out",
                         *resources("featurize_resources")], command)
    for name, command in jobs[1:-1]:
        ids[name] = _sbatch([*common, f"--job-name=advaudio-{name}"[:120], f"--output={logs}/{name}-%j.out",
                             f"--dependency=afterok:{ids['featurize']}", *resources("resources")], command)
    name, command = jobs[-1]
    cell_jobs = [ids[n] for n, _ in jobs[1:-1]] or [ids["featurize"]]
    ids[name] = _sbatch([*common, f"--job-name=advaudio-study-{name}", f"--output={logs}/{name}-%j.out",
                         f"--dependency=afterany:{':'.join(cell_jobs)}", *resources("report_resources")], command)
    if progress:
        print(f"submitted {len(ids)} jobs: featurize {ids['featurize']}, {len(todo)} cell(s), report "
              f"{ids['report']}; logs: {logs}", file=sys.stderr)
    return ids

