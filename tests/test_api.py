"""The Python API: the example (examples/python_api.py, the README's "Python API" block:
featurize → train → attack → retrain → report through ``advaudio.*`` alone) runs, and the same
commands through the CLI give the same numbers."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


EXAMPLE = REPO / "examples" / "python_api.py"


def readme_example() -> str:
    """The first ```python block under the README's "Python API" heading."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_shows_the_example_script():
    """The README's block is the example script's code (its docstring aside), so the slow test
    below runs what both show."""
    script = EXAMPLE.read_text()
    assert script.startswith('"""') and script.endswith(readme_example())
    code = script[script.index('"""', 3) + 3:].strip()
    assert code == readme_example().strip()


def _env() -> dict[str, str]:
    # One thread in every process: the two runs then do the same float arithmetic in the same order.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _cli(args: list[str], cwd: Path, ok=(0,)) -> str:
    done = subprocess.run([sys.executable, "-m", "advaudio", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=900)
    assert done.returncode in ok, f"advaudio {' '.join(args)}: {done.stderr[-3000:]}"
    return done.stdout


def _numbers(directory: Path) -> dict:
    """What both runs must agree on: accuracies and losses, every attack's budget and rates, the
    report's values (times and paths left out)."""
    run = directory / "cache" / "runs" / "api"
    out = {}
    for name, path in (("round0", run / "metrics.json"), ("round1", run / "round01" / "metrics.json")):
        m = json.loads(path.read_text())
        out[name] = {"test": m["test"]["accuracy"], "loss": [h["train_loss"] for h in m["history"]]}
    for split in ("test", "train"):
        doc = json.loads((run / f"attack-round00-{split}.json").read_text())
        out[split] = {r["attack"]: (r["budget"], r["fooling_rate"], r["n_attacked"]) for r in doc["attacks"]}
    rows = json.loads((directory / "cache" / "report-api" / "report.json").read_text())["values"]
    out["report"] = sorted((str(r["round"]), r["split"], r["attack"] or "", r["metric"], r["value"]) for r in rows
                           if not re.search(r"second|time|per_s", r["metric"]) and isinstance(r["value"], float))
    return out


@pytest.mark.slow
def test_the_example_and_the_cli_give_the_same_numbers(tmp_path):
    api, cli = tmp_path / "api", tmp_path / "cli"
    api.mkdir(), cli.mkdir()
    done = subprocess.run([sys.executable, str(EXAMPLE)], cwd=api, env=_env(), capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "cache/report-api/report.md"

    store = _cli(["featurize", "--dataset", "synthetic", "-o", "clips_per_class=12", "-o", "n_classes=4",
                  "-o", "duration=1.0", "--features", "stft", "--workers", "0"], cli).splitlines()[-1]
    checkpoint = _cli(["train", "--store", store, "--model", "resnet18", "--width", "0.125", "--input-size", "32x32",
                       "--epochs", "2", "--batch-size", "16", "--workers", "0", "--out", "cache/runs/api"],
                      cli).splitlines()[-1]
    for split in ("test", "train"):  # 1: a budget that never reached the threshold (the results are written)
        _cli(["attack", "--checkpoint", checkpoint, "--split", split, "--attacks", "pgd,fgsm", "--limit", "24",
              "-p", "pgd.steps=10"], cli, ok=(0, 1))
    _cli(["retrain", "--checkpoint", checkpoint, "--epochs", "1", "--out", "cache/runs/api/round01"], cli)
    assert _cli(["report", "cache/runs/api", "--out", "cache/report-api", "--no-listen", "--max-clips", "1"],
                cli).splitlines()[-1] == "cache/report-api/report.md"

    got, expected = _numbers(api), _numbers(cli)
    assert got.keys() == expected.keys()
    for key in got:
        assert _same(got[key], expected[key]), (key, got[key], expected[key])
    assert got["report"], "the report has values to compare"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b
