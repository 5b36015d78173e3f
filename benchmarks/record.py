"""Where a benchmark's figures are kept: ``benchmarks/results/NAME-DATE.json``.

Every figure the README quotes comes from such a file, written by the run that measured it,
with what a reader needs to trace and rerun it: the commit (and whether the tree had
uncommitted changes), the command line, the CPU model and its SIMD capability as torch
dispatches it, the CPUs and threads used, the GPU if any, and the versions of the libraries
that compute. ``record(name, doc)`` is called once at the end of a benchmark.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine and software a figure was measured with."""
    import numpy
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for env in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"):
        if os.environ.get(env):
            info[env] = os.environ[env]
    return info


def record(name: str, doc: dict[str, Any], *, directory: str | os.PathLike | None = None) -> Path:
    """Write ``doc`` with its provenance to ``benchmarks/results/NAME-YYYY-MM-DD.json``; returns the path.

    A second run of the same benchmark on the same day gets ``-2``, ``-3`` … so no figure
    the README quotes is overwritten.
    """
    directory = Path(directory) if directory is not None else RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    stem = f"{name}-{now:%Y-%m-%d}"
    path, k = directory / f"{stem}.json", 1
    while path.exists():
        k += 1
        path = directory / f"{stem}-{k}.json"
    status = _git("status", "--porcelain", "--untracked-files=no")
    provenance = {
        "benchmark": name,
        "utc": now.isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "commit": _git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(status) if status is not None else None,
        "machine": machine(),
    }
    path.write_text(json.dumps({"provenance": provenance, **doc}, indent=2, default=str) + "\n")
    print(f"figures kept in {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)
    return path
