"""CPU threads under contention: what a busy neighbour costs, and which setting avoids it.

    python benchmarks/bench_threads.py [--steps 20] [--width 0.25] [--input-size 64]

One workload (forward + backward of ResNet-18 on a batch of 32, the inner step of both
training and PGD) runs in a fresh process, in each arm side by side in this one run:

* alone, with torch's defaults (one thread per core);
* beside a busy process (``python -c 'while True: pass'``), with torch's defaults;
* beside it, with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep instead of spinning);
* beside it, with one thread fewer than the cores (``--threads``);
* beside it, with the weights made denormal-heavy (1e-39 added), flush-to-zero off and on,
  to tell whether tiny floats, not threads, explain a slowdown.

Every arm is repeated ``--repeats`` times interleaved, the best kept; it prints steps/s
and each arm's ratio to the quiet default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKLOAD = r"""
import json, os, sys, time
import torch
sys.path.insert(0, {repo!r})
from advaudio.models import create_model
args = json.loads(sys.argv[1])
if args["threads"]:
    torch.set_num_threads(args["threads"])
torch.set_flush_denormal(args["flush"])
torch.manual_seed(0)
model = create_model("resnet18", in_channels=1, num_classes=10, width=args["width"])
if args["denormal"]:
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-30)  # activations and gradients fall into the subnormal range
x = torch.rand(32, 1, args["size"], args["size"])
def step():
    xx = x.clone().requires_grad_(True)
    model(xx).sum().backward()
step()
t = time.perf_counter()
for _ in range(args["steps"]):
    step()
print(json.dumps({{"steps_per_s": args["steps"] / (time.perf_counter() - t), "threads": torch.get_num_threads()}}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--input-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="Also write the table here.")
    a = ap.parse_args(argv)
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    code = WORKLOAD.format(repo=repo)
    cores = len(os.sched_getaffinity(0))
    base_env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    common = dict(width=a.width, size=a.input_size, steps=a.steps)
    arms = [
        ("quiet, defaults", False, {}, dict(threads=0, flush=False, denormal=False)),
        ("busy neighbour, defaults", True, {}, dict(threads=0, flush=False, denormal=False)),
        ("busy neighbour, OMP_WAIT_POLICY=PASSIVE", True, {"OMP_WAIT_POLICY": "PASSIVE"},
         dict(threads=0, flush=False, denormal=False)),
        (f"busy neighbour, {max(1, cores - 1)} thread(s)", True, {}, dict(threads=max(1, cores - 1), flush=False,
                                                                          denormal=False)),
        ("quiet, denormal weights, no flush", False, {}, dict(threads=0, flush=False, denormal=True)),
        ("quiet, denormal weights, flush to zero", False, {}, dict(threads=0, flush=True, denormal=True)),
    ]
    best: dict[str, float] = {}
    for _ in range(a.repeats):
        for name, busy, env, opts in arms:
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                time.sleep(0.2 if busy else 0)
                out = subprocess.run([sys.executable, "-c", code, json.dumps({**common, **opts})],
                                     capture_output=True, text=True, env={**base_env, **env}, check=True)
            finally:
                if hog:
                    hog.kill()
                    hog.wait()
            rate = json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]
            best[name] = max(best.get(name, 0.0), rate)
    ref = best[arms[0][0]]
    print(f"{cores} CPU(s); ResNet-18 width {a.width}, batch 32, {a.input_size}x{a.input_size}, "
          f"{a.steps} steps, best of {a.repeats}")
    for name, *_ in arms:
        print(f"  {name:46s} {best[name]:7.2f} steps/s  {best[name] / ref:5.2f}x quiet")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cores": cores, "steps_per_s": best}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
