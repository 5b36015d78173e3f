"""One whole round on real ESC-10, and the ratios to plain torch measured side by side.

    python benchmarks/bench_round.py                  # the full round (sized for one H100/H200)
    python benchmarks/bench_round.py --quick          # a few minutes on 2 CPU cores
    python benchmarks/bench_round.py --quick --json round.json

The round is what a user waits for: featurize → train → attack test → attack
train → retrain → attack test → report, each stage the library function its
CLI command calls, on the device found (CUDA when present, else CPU). The
table gives each stage's wall time, training samples/s, model queries/s of each
attack, and peak memory (host RSS of this process and of its children — Dask
and DataLoader workers —, and ``torch.cuda.max_memory_allocated`` per stage on
a GPU).

Then three ratios, each arm on the same data, model and settings, the arms
interleaved and repeated ``--repeats`` times, best kept (the machine may be
shared; quote ratios from one run):

* training: epochs of :func:`advaudio.training.train` (store streaming, workers,
  augmentation, checkpoint per epoch) vs a plain torch loop over the same
  model-space tensors held in memory (same model and initial weights, batch,
  AdamW groups, one-cycle schedule, AMP setting, ``channels_last`` setting).
  Samples/s of the fastest steady epoch of each arm (the first, which starts the
  workers, is left out of both), the arms alternating run by run; target >= 0.95x;
* streaming input: the training batches from the store vs the same batches (same
  plan) from arrays in memory, input pipeline alone, no model
  (``bench_input_pipeline.py``'s two arms), ``--pipeline-epochs`` at a time,
  interleaved, at least 5 times, the fastest of each; target >= 0.95x;
* attack: advaudio targeted L∞ PGD (:func:`advaudio.attacks.run_attack`) vs a plain
  torch PGD loop on the trained model (``bench_attack.py``'s loop, 20 steps, the
  test clips as one batch); target <= 1.1x (time ratio).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from advaudio import layout  # noqa: E402
from advaudio.store import Store  # noqa: E402

DEFAULT_ESC10 = HERE.parent.parent / "shared" / "data" / "esc10"
ATTACK_RATIO_STEPS = 20  # PGD steps of the attack ratio, as bench_attack.py (a round's attacks: --pgd-steps)

# What a full round and a quick CPU round run (flags override each).
FULL = dict(model="resnet18", width=1.0, input_size=128, epochs=30, retrain_epochs=10, batch_size=64,
            test_limit=None, train_limit=None, pgd_steps=20, deepfool_steps=50, attack_batch=None,
            ratio_epochs=4, ratio_repeats=3, pipeline_epochs=5, repeats=3)
QUICK = dict(model="resnet18", width=0.25, input_size=64, epochs=3, retrain_epochs=1, batch_size=32,
             test_limit=16, train_limit=32, pgd_steps=10, deepfool_steps=20, attack_batch=None,
             ratio_epochs=5, ratio_repeats=3, pipeline_epochs=5, repeats=3)


# --------------------------------------------------------------------------- #
# Measuring
# --------------------------------------------------------------------------- #
def host_peak_mib() -> dict[str, float]:
    """Peak resident set size so far of this process and of its (waited-for) children, MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "children": round(kids, 1)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stage(name: str, device: torch.device, table: list[dict], fn: Callable[[], Any],
          describe: Callable[[Any], dict] | None = None) -> Any:
    """Run one stage; append its wall time, peak memory and ``describe(result)`` to ``table``."""
    print(f"[bench_round] {name} …", file=sys.stderr, flush=True)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    row = {"stage": name, "seconds": time.perf_counter() - t0, "host_peak_mib": host_peak_mib()}
    if device.type == "cuda":
        row["gpu_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    if describe is not None:
        row.update(describe(result))
    table.append(row)
    return result


def attack_rates(document: dict) -> dict[str, dict[str, float]]:
    """Model queries per second of every attack in an attack-stage results document."""
    out = {}
    for record in document["attacks"]:
        queries = record.get("queries") or record.get("model_queries")
        seconds = record.get("wall_time_s") or record.get("seconds")
        out[record["attack"]] = {"queries": queries, "seconds": seconds,
                                 "queries_per_second": (queries / seconds) if queries and seconds else None}
    return out


# --------------------------------------------------------------------------- #
# The round
# --------------------------------------------------------------------------- #
def run_round(args, device: torch.device, work: Path) -> tuple[list[dict], dict, Store]:
    from advaudio.features import FeatureConfig
    from advaudio.reporting import write_report
    from advaudio.stages.attack import AttackStageConfig, attack_stage
    from advaudio.stages.featurize import FeaturizeConfig, featurize_store
    from advaudio.stages.retrain import RetrainConfig, retrain_checkpoint
    from advaudio.training import TrainConfig, train

    table: list[dict] = []
    extra: dict[str, Any] = {}
    cache = Path(args.cache) if args.cache else work / "cache"
    fconfig = FeaturizeConfig(dataset="esc10", root=str(args.esc10),
                              features=FeatureConfig(representations=tuple(args.view.split("+"))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = stage("featurize", device, table,
                       lambda: featurize_store(fconfig, cache=cache, workers=args.featurize_workers, progress=False),
                       lambda r: {"note": "store existed (reused)" if r.already_complete
                                  else f"{r.featurized} clips, {r.failed} failed"})
    store = Store(result.store_dir)

    run_dir = work / "run"
    # The paper recipe (time shifts only): the ratio to the plain loop measures the pipeline,
    # not the masks and mixing the default recipe adds (benchmarks/bench_recipe_epoch.py times those).
    config = TrainConfig(store=str(store.directory), view=args.view, model=args.model, width=args.width,
                         recipe="paper", input_size=(args.input_size, args.input_size), epochs=args.epochs,
                         batch_size=args.batch_size, workers=args.workers, device=str(device),
                         amp=args.amp, channels_last=args.channels_last)
    def trained(m: dict) -> dict:
        return {"samples_per_second": m["samples_per_second"],
                "note": f"{m['epochs']} epochs, test acc {m['test_accuracy']:.3f}"}

    metrics = stage("train", device, table, lambda: train(config, out_dir=run_dir, progress=False), trained)
    extra["train"] = {"test_accuracy": metrics["test_accuracy"], "samples_per_second": metrics["samples_per_second"]}

    attack_batch = args.attack_batch or _attack_batch(device)
    aconfig = AttackStageConfig(attacks=("pgd", "deepfool"), limit=args.test_limit, batch_size=attack_batch,
                                attack_params={"pgd": {"steps": args.pgd_steps},
                                               "deepfool": {"steps": args.deepfool_steps}})

    def attack(k: int, split: str, limit):
        cfg = dataclasses.replace(aconfig, split=split, round=k, limit=limit)
        directory = layout.round_dir(run_dir, k)
        return attack_stage(cfg, checkpoint=layout.checkpoint_path(directory), out_dir=directory,
                            device=str(device), progress=False)

    def attacked(doc: dict) -> dict:
        budgets = ", ".join(f"{r['attack']} {r.get('budget') or float('nan'):.3g}" for r in doc["attacks"])
        return {"attacks": attack_rates(doc), "note": f"{doc['attacks'][0]['n_samples']} clips; budgets {budgets}"}

    stage("attack test (round 0)", device, table, lambda: attack(0, "test", args.test_limit), attacked)
    stage("attack train (round 0)", device, table, lambda: attack(0, "train", args.train_limit), attacked)
    rconfig = RetrainConfig(epochs=args.retrain_epochs)
    stage("retrain (round 1)", device, table,
          lambda: retrain_checkpoint(layout.checkpoint_path(run_dir), out_dir=layout.round_dir(run_dir, 1),
                                     config=rconfig, device=str(device), progress=False), trained)
    stage("attack test (round 1)", device, table, lambda: attack(1, "test", args.test_limit), attacked)
    stage("report", device, table, lambda: write_report([run_dir], work / "report", listen=False, max_clips=2))
    return table, extra, store


def _attack_batch(device: torch.device) -> int:
    """Samples per attack call: all 320 training clips at once on a GPU, 32 on a CPU."""
    return 320 if device.type == "cuda" else 32


# --------------------------------------------------------------------------- #
# Ratios
# --------------------------------------------------------------------------- #
def _train_rows_tensor(store: Store, view, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    with store.reader() as reader:
        x = view.read(reader, rows)
    return x, torch.as_tensor(store.labels[rows], dtype=torch.int64)


def plain_train_epochs(config, x: torch.Tensor, y: torch.Tensor, device: torch.device, *, epochs: int) -> list[float]:
    """A plain torch loop: the same model, optimizer groups, schedule and AMP setting; per-epoch seconds."""
    from advaudio.models import create_model
    from advaudio.training.distributed import amp_dtype, autocast

    torch.manual_seed(config.seed)
    n_classes = int(y.max()) + 1 if config.store is None else Store(config.store).num_classes
    model = create_model(config.model, in_channels=1, num_classes=n_classes, width=config.width).to(device)
    memory_format = torch.channels_last if config.channels_last and device.type == "cuda" else torch.preserve_format
    model = model.to(memory_format=memory_format)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    steps = epochs * (len(x) // config.batch_size + bool(len(x) % config.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps,
                                                pct_start=config.warmup_fraction, cycle_momentum=False)
    use_amp = config.amp and device.type == "cuda"
    dtype = amp_dtype(device) if use_amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and dtype == torch.float16)
    x, y = x.to(device), y.to(device)
    if memory_format is torch.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    seconds = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        order = torch.randperm(len(x), device=device)
        for i in range(0, len(x), config.batch_size):
            idx = order[i : i + config.batch_size]
            if idx.numel() < 2:
                continue
            with autocast(device, use_amp):
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return seconds


def training_ratio(args, store: Store, device: torch.device, work: Path) -> dict[str, Any]:
    from advaudio.training import TrainConfig, train
    from advaudio.training.splits import split_by_fold
    from advaudio.views import fit_view

    width = args.ratio_width or args.width
    size = args.ratio_input_size or args.input_size
    config = TrainConfig(store=str(store.directory), view=args.view, model=args.model, width=width,
                         input_size=(size, size), epochs=args.ratio_epochs,
                         batch_size=args.batch_size, workers=args.workers, device=str(device), amp=args.amp,
                         channels_last=args.channels_last, recalibrate_bn=False)
    split = split_by_fold(store, config)
    view = fit_view(store, config.view, rows=split.train, input_size=config.input_size,
                    percentiles=config.percentiles)
    x, y = _train_rows_tensor(store, view, split.train)
    best = {"advaudio": 0.0, "plain": 0.0}
    n = len(x) - (len(x) % config.batch_size == 1)  # the plain loop skips a one-sample batch, as advaudio
    # The best steady epoch of each arm: on a shared machine a slow epoch is someone else's load.
    # Whole runs, not one resumed epoch at a time: a resumed run opens the store afresh, and that
    # warm-up (chunk index, page mapping) belongs to a run's first epoch, not to every epoch.
    for r in range(args.ratio_repeats):
        out = work / f"ratio-train-{r}"
        metrics = train(config, out_dir=out, progress=False)
        shutil.rmtree(out, ignore_errors=True)
        steady = metrics["history"][1:] or metrics["history"]
        best["advaudio"] = max([best["advaudio"]] + [h["samples"] / h["seconds"] for h in steady])
        secs = plain_train_epochs(config, x, y, device, epochs=args.ratio_epochs)
        best["plain"] = max([best["plain"]] + [n / t for t in (secs[1:] or secs)])
        print(f"[bench_round] training ratio, repeat {r + 1}: advaudio {best['advaudio']:.1f}, "
              f"plain {best['plain']:.1f} samples/s (best so far)", file=sys.stderr, flush=True)
    return {"advaudio_samples_per_second": best["advaudio"], "plain_samples_per_second": best["plain"],
            "ratio": best["advaudio"] / best["plain"], "target": ">= 0.95",
            "epochs": args.ratio_epochs, "repeats": args.ratio_repeats, "training_clips": int(len(x)),
            "model": f"{args.model} width {width}", "input_size": size, "batch_size": args.batch_size,
            "workers": config.workers, "amp": config.amp and device.type == "cuda",
            "interleaved": "run by run"}


def pipeline_ratio(args, store: Store) -> dict[str, Any]:
    from bench_input_pipeline import MemoryBatches, _epoch_seconds, _EpochKeys
    from torch.utils.data import DataLoader

    from advaudio.data import StoreBatches, make_loader
    from advaudio.views import fit_view

    rows = store.select(exclude_folds=[max(store.fold_ids)])
    view = fit_view(store, args.view, rows=rows, input_size=(args.input_size, args.input_size))
    arrays = {n: store.read(n, np.arange(len(store))) for n in view.representations}
    stream_ds = StoreBatches(store, view, rows, batch_size=args.batch_size, shuffle=True, seed=0)
    stream = make_loader(stream_ds, workers=args.workers)
    mem_ds = MemoryBatches(arrays, store.labels, view, rows, args.batch_size, 0)
    memory = DataLoader(mem_ds, batch_size=None, sampler=_EpochKeys(mem_ds), num_workers=args.workers,
                        persistent_workers=args.workers > 0)
    arms = {"streaming": (stream, stream_ds.set_epoch), "memory": (memory, mem_ds.set_epoch)}
    for loader, set_epoch in arms.values():  # start the workers, first-touch costs
        _epoch_seconds(loader, set_epoch, 0)
    best = {k: float("inf") for k in arms}
    n = 0
    repeats = max(args.repeats, 5)  # an epoch is milliseconds here: more, short, interleaved measurements
    for r in range(repeats):
        for name, (loader, set_epoch) in arms.items():
            seconds, n = _epoch_seconds(loader, set_epoch, 1 + r * args.pipeline_epochs, args.pipeline_epochs)
            best[name] = min(best[name], seconds)
    stream_ds.close()
    rate = {k: n / best[k] for k in arms}
    return {"streaming_samples_per_second": rate["streaming"], "memory_samples_per_second": rate["memory"],
            "ratio": rate["streaming"] / rate["memory"], "target": ">= 0.95",
            "epochs": args.pipeline_epochs, "repeats": repeats}


def attack_ratio(args, store: Store, device: torch.device, checkpoint: Path | None) -> dict[str, Any]:
    from bench_attack import plain_pgd

    from advaudio.attacks import AttackConfig, PGDParams, choose_targets, run_attack
    from advaudio.attacks._model import chunk_seed
    from advaudio.training import load_checkpoint

    ckpt = load_checkpoint(checkpoint, device=device)
    model = ckpt.model.eval()
    rows = store.select(folds=[ckpt.test_fold]) if ckpt.test_fold is not None else np.arange(len(store))
    rows = rows[: args.attack_batch or _attack_batch(device)]
    with store.reader() as reader:
        x = ckpt.view.read(reader, rows).to(device)
    with torch.no_grad():
        labels = model(x).argmax(1)  # every clip "correct": advaudio attacks all of them, as the plain loop does
    targets = choose_targets(model, x, labels, rule="random", seed=0).to(device)
    steps, eps = ATTACK_RATIO_STEPS, 0.05
    rel = 2.5 / steps
    config = AttackConfig(params=PGDParams(norm="linf", steps=steps, step_size=rel, random_start=True),
                          targeted=True, seed=0)
    arms = {
        "plain": lambda: plain_pgd(model, x, targets, eps=eps, alpha=rel * eps, steps=steps, seed=chunk_seed(0, 0)),
        "advaudio": lambda: run_attack(model, x, labels, config=config, epsilon=eps, targets=targets,
                                       batch_size=len(x)),
    }
    for f in arms.values():
        f()
    best = {k: float("inf") for k in arms}
    for _ in range(args.repeats):
        for k, f in arms.items():
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            best[k] = min(best[k], time.perf_counter() - t0)
    return {"advaudio_seconds": best["advaudio"], "plain_seconds": best["plain"],
            "ratio": best["advaudio"] / best["plain"], "target": "<= 1.1 (time)", "clips": int(len(x)),
            "steps": steps, "repeats": args.repeats}


# --------------------------------------------------------------------------- #
# Output
# --------------------------------------------------------------------------- #
def format_table(doc: dict) -> str:
    lines = [f"device: {doc['device']['name']} ({doc['device']['type']}), torch {doc['torch']}, "
             f"{doc['cpus']} CPUs, torch threads {doc['threads']}",
             f"settings: {json.dumps(doc['settings'])}", ""]
    if doc["stages"]:
        gpu = any("gpu_peak_mib" in r for r in doc["stages"])
        head = f"{'stage':<24} {'seconds':>8} {'samples/s':>10} {'RSS MiB':>8} {'kids MiB':>8}"
        lines += [head + (f" {'GPU MiB':>8}" if gpu else "") + "  notes", "-" * (len(head) + 30)]
        for r in doc["stages"]:
            sps = f"{r['samples_per_second']:.1f}" if r.get("samples_per_second") else ""
            mem = r["host_peak_mib"]
            line = f"{r['stage']:<24} {r['seconds']:8.1f} {sps:>10} {mem['self']:8.0f} {mem['children']:8.0f}"
            if gpu:
                line += f" {r.get('gpu_peak_mib', 0):8.0f}"
            lines.append(line + f"  {r.get('note', '')}")
            for name, a in (r.get("attacks") or {}).items():
                qps = a["queries_per_second"]
                lines.append(f"{'':<4}{name:<20} {a['seconds'] or 0:8.1f} s, {a['queries']} queries, "
                             + (f"{qps:.1f} queries/s" if qps else "queries/s n/a"))
        lines.append(f"{'round total':<24} {doc['round_seconds']:8.1f}")
        lines.append("")
    r = doc["ratios"]
    if "training" in r:
        t = r["training"]
        lines.append(f"training   advaudio train {t['advaudio_samples_per_second']:.1f} vs plain loop "
                     f"{t['plain_samples_per_second']:.1f} samples/s = {t['ratio']:.3f}x (target >= 0.95x; "
                     f"{t['model']}, {t['input_size']}x{t['input_size']}, batch {t['batch_size']}, "
                     f"{t['workers']} workers)")
    if "pipeline" in r:
        p = r["pipeline"]
        lines.append(f"input      store {p['streaming_samples_per_second']:.0f} vs memory "
                     f"{p['memory_samples_per_second']:.0f} samples/s = {p['ratio']:.3f}x (target >= 0.95x)")
    if "attack" in r:
        a = r["attack"]
        lines.append(f"attack     advaudio PGD {a['advaudio_seconds']:.3f} s vs plain PGD {a['plain_seconds']:.3f} s "
                     f"= {a['ratio']:.3f}x time (target <= 1.1x)")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes for a CPU (minutes on 2 cores)")
    p.add_argument("--esc10", type=Path, default=DEFAULT_ESC10, help=f"ESC-10 root [{DEFAULT_ESC10}]")
    p.add_argument("--cache", help="store root; an existing store there is reused [a fresh temporary one]")
    p.add_argument("--work", help="directory of the run and report [a temporary one, removed]")
    p.add_argument("--json", type=Path, help="also write the table as JSON here")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda[:N] [auto]")
    p.add_argument("--view", default="dwt+chroma", help="[dwt+chroma]")
    p.add_argument("--threads", type=int, help="torch threads (default: advaudio.threads' choice)")
    p.add_argument("--featurize-workers", type=int, default=2, help="Dask workers of featurize [2]")
    p.add_argument("--workers", type=int, help="DataLoader workers [advaudio.data.default_workers()]")
    p.add_argument("--no-amp", dest="amp", action="store_false", help="no mixed precision on CUDA")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format on CUDA [on when CUDA]")
    p.add_argument("--no-round", action="store_true", help="measure the ratios only (featurize still runs)")
    p.add_argument("--no-ratios", action="store_true", help="run the round only")
    p.add_argument("--ratio-width", type=float, help="model width of the training ratio [the round's]")
    p.add_argument("--ratio-input-size", type=int, help="input size of the training ratio [the round's]")
    for key, value in FULL.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(QUICK[key]) if value is None else type(value),
                       default=None, help=f"[{value}; --quick: {QUICK[key]}]")
    args = p.parse_args(argv)
    preset = QUICK if args.quick else FULL
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not (args.esc10 / "README.md").exists() and not any(args.esc10.glob("*")):
        print(f"error: no ESC-10 at {args.esc10} (give --esc10)", file=sys.stderr)
        return 2

    from advaudio.data import default_workers
    from advaudio.threads import configure_threads
    from advaudio.training import resolve_device

    threads = configure_threads(args.threads)
    device = resolve_device(args.device)
    if args.workers is None:
        args.workers = default_workers(device)
    if args.channels_last is None:
        args.channels_last = device.type == "cuda"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-round-"))
    work.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("json", "work", "cache")}
    doc: dict[str, Any] = {"device": {"type": device.type, "name": name}, "torch": torch.__version__,
                           "cpus": os.cpu_count(), "threads": threads.threads, "settings": settings,
                           "stages": [], "ratios": {}}
    try:
        t0 = time.perf_counter()
        if args.no_round:
            from advaudio.features import FeatureConfig
            from advaudio.stages.featurize import FeaturizeConfig, featurize_store

            cache = Path(args.cache) if args.cache else work / "cache"
            fconfig = FeaturizeConfig(dataset="esc10", root=str(args.esc10),
                                      features=FeatureConfig(representations=tuple(args.view.split("+"))))
            store = Store(featurize_store(fconfig, cache=cache, workers=args.featurize_workers, progress=False).store_dir)
        else:
            doc["stages"], doc["round"], store = run_round(args, device, work)
        doc["round_seconds"] = time.perf_counter() - t0
        if not args.no_ratios:
            doc["ratios"]["training"] = training_ratio(args, store, device, work)
            doc["ratios"]["pipeline"] = pipeline_ratio(args, store)
            checkpoint = layout.checkpoint_path(work / "run")
            if checkpoint.is_file():
                doc["ratios"]["attack"] = attack_ratio(args, store, device, checkpoint)
        doc["host_peak_mib"] = host_peak_mib()
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
