#!/usr/bin/env bash
# One go on a lent GPU machine (untested here: no GPU was lent to the session that wrote it).
# Installs the package, runs the CUDA tests, then the full round; results land in $OUT (or ./gpu-out).
#   bash benchmarks/run_on_gpu.sh            # give the run a timeout that leaves room for a rerun
set -euo pipefail
out="${OUT:-gpu-out}"
mkdir -p "$out"
python -m pip install -q -e . 2>&1 | tail -2 || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
python -m pytest -q -rs tests/test_accelerated.py 2>&1 | tee "$out/cuda-tests.txt"
esc10="${ESC10:-../shared/data/esc10}"
python benchmarks/bench_round.py --esc10 "$esc10" --json "$out/round.json" 2>"$out/round.err" | tee "$out/round.txt"
