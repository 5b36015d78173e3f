"""Mutation testing of the modules that compute the reported numbers (issue 18, item 4).

Runs mutmut (3.x, configured in ``setup.cfg``'s ``[mutmut]`` section) on one module at a time,
restricted to the tests that cover that module, in a scratch copy of this tree (so the tree can
be edited while it runs), time-boxed; then records the counts and every surviving mutant's diff
in ``benchmarks/results/mutmut-DATE.json`` under ``modules.NAME.LABEL``::

    python benchmarks/mutation.py splits                       # label "before"
    python benchmarks/mutation.py splits --label after --only-survivors-of before

``--only-survivors-of`` re-runs just the mutants that survived an earlier run (mutmut names its
mutants deterministically from the source, so the names carry over while the module is unchanged).
"""

from __future__ import annotations

import argparse
import configparser
import datetime as _dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

#: module key → (file mutated, pytest arguments selecting the tests that cover it)
MODULES: dict[str, tuple[str, list[str]]] = {
    "splits": ("advaudio/training/splits.py",
               ["tests/test_meaning_training.py", "-k", "held_out or validation or split_needs"]),
    "tuning": ("advaudio/attacks/tuning.py", ["tests/test_meaning_attacks.py", "tests/test_attacks.py"]),
    "targets": ("advaudio/attacks/targets.py", ["tests/test_meaning_attacks.py"]),
    "results": ("advaudio/attacks/results.py", ["tests/test_meaning_attacks.py"]),
    "views": ("advaudio/views.py", ["tests/test_meaning_views.py", "tests/test_views.py"]),
    "bootstrap": ("advaudio/reporting/bootstrap.py", ["tests/test_study_report.py"]),
    "retrain": ("advaudio/stages/retrain.py", ["tests/test_meaning_training.py", "-k", "retrain"]),
}

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked",
          37: "caught by type check", 2: "interrupted", -11: "segfault", -9: "segfault"}


def _scratch(key: str, module: str, tests: list[str], extra_cfg: dict[str, str]) -> Path:
    """A copy of the package, the tests and the configuration, set to mutate ``module`` only."""
    work = Path(os.environ.get("MUTATION_SCRATCH", "/tmp/advaudio-mutation")) / key
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("advaudio", "tests"):
        shutil.copytree(REPO / name, work / name, ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml"):
        shutil.copy2(REPO / name, work / name)
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(work / "setup.cfg")
    cfg["mutmut"]["only_mutate"] = "\n" + module
    cfg["mutmut"]["pytest_add_cli_args_test_selection"] = "\n" + "\n".join(tests)
    for k, v in extra_cfg.items():
        cfg["mutmut"][k] = v
    with open(work / "setup.cfg", "w") as f:
        cfg.write(f)
    return work


def _run(work: Path, names: list[str], minutes: float, log: Path) -> tuple[int | None, float]:
    """``nice -n 19 mutmut run --max-children 1 [names]`` in ``work``; SIGINT to its group after ``minutes``."""
    env = {**os.environ, "PYTHONPATH": str(work), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = ["nice", "-n", "19", sys.executable, "-m", "mutmut", "run", "--max-children", "1", *names]
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # mutmut stops its workers and keeps the results so far
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
            rc = None
    return rc, time.monotonic() - start


def _diff(work: Path, name: str) -> str:
    out = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(work)})
    return "\n".join(line for line in out.stdout.splitlines()[1:] if line.strip())


def _counts(work: Path, module: str) -> tuple[dict[str, int], dict[str, str]]:
    meta = json.loads((work / "mutants" / (module + ".meta")).read_text())
    status = {k: STATUS.get(v, f"exit {v}") for k, v in meta["exit_code_by_key"].items()}
    counts: dict[str, int] = {}
    for s in status.values():
        counts[s] = counts.get(s, 0) + 1
    return {"generated": len(status), **counts}, status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("module", choices=sorted(MODULES))
    p.add_argument("--label", default="before")
    p.add_argument("--minutes", type=float, default=40.0, help="time box; partial figures are kept")
    p.add_argument("--only-survivors-of", metavar="LABEL", help="re-run only the mutants that survived LABEL")
    p.add_argument("--mutants", nargs="*", default=[], help="re-run only these mutants (or globs)")
    p.add_argument("--tests", nargs="*", help="pytest selection instead of the module's default")
    p.add_argument("--date", default=_dt.date.today().isoformat())
    args = p.parse_args(argv)

    module, tests = MODULES[args.module]
    tests = args.tests or tests
    results_file = RESULTS / f"mutmut-{args.date}.json"
    doc = json.loads(results_file.read_text()) if results_file.exists() else {"modules": {}}
    names = list(args.mutants)
    if args.only_survivors_of:
        names += sorted(doc["modules"][args.module][args.only_survivors_of]["survived"])
        if not names:
            print("no survivors to re-run")
            return 0

    work = _scratch(args.module, module, tests, {})
    log = work / "mutmut.log"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "advaudio", "tests"], cwd=REPO,
                                capture_output=True, text=True).stdout.strip())
    rc, seconds = _run(work, names, args.minutes, log)
    tail = log.read_text(errors="replace")[-3000:]
    try:
        counts, status = _counts(work, module)
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        print(tail)
        print(f"no results: {e!r}")
        return 1
    if names:  # a re-run of some mutants: count those only
        wanted = [k for k in status if any(re.fullmatch(n.replace(".", r"\.").replace("*", ".*"), k) for n in names)]
        status = {k: status[k] for k in wanted}
        counts = {"generated": counts["generated"], "rerun": len(status)}
        for s in status.values():
            counts[s] = counts.get(s, 0) + 1
    survived = {k: _diff(work, k) for k, s in sorted(status.items()) if s == "survived"}
    entry = {
        "module": module, "tests": tests, "commit": commit, "uncommitted_changes": dirty,
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool": "mutmut " + subprocess.run([sys.executable, "-m", "mutmut", "--version"], capture_output=True,
                                          text=True).stdout.strip().split()[-1],
        "wall_seconds": round(seconds), "complete": rc == 0 and counts.get("not checked", 0) == 0,
        "exit_code": rc, "load_average": os.getloadavg(), "counts": counts, "survived": survived,
        "not_killed": {k: s for k, s in sorted(status.items()) if s not in ("killed", "survived")},
    }
    doc = json.loads(results_file.read_text()) if results_file.exists() else {"modules": {}}
    doc["modules"].setdefault(args.module, {})[args.label] = entry
    results_file.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: entry[k] for k in ("module", "wall_seconds", "complete", "counts")}, indent=2))
    for k, d in survived.items():
        print(f"--- {k}\n{d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
