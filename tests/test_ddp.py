"""Multi-process training: torchrun --nproc-per-node 2 (gloo, CPU) matches a single-process run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch

from advaudio.data import StoreBatches, plan_epoch
from advaudio.train import TrainConfig, evaluate, load_checkpoint, train
from advaudio.views import fit_view

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")


# Global batch 11 over the 32 training clips: batches of 11, 11, 10, so the two ranks' shares
# are 6 + 5, 6 + 5, 5 + 5. (A last batch of 2 — one clip per rank — makes batch norm over two
# values so sensitive that float rounding visibly changes the next step; avoided here.)
BASE = dict(view="stft", model="resnet18", width=0.125, input_size=32, test_fold=5, val_fraction=0.2,
            epochs=3, batch_size=11, lr=3e-3, seed=3, workers=0, device="cpu")
CLI = ["--view", "stft", "--model", "resnet18", "--width", "0.125", "--input-size", "32x32", "--test-fold", "5",
       "--val-fraction", "0.2", "--epochs", "3", "--batch-size", "11", "--lr", "0.003", "--seed", "3",
       "--workers", "0", "--device", "cpu", "--no-progress"]


def _torchrun(store, out, *extra, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "advaudio", "train", "--store", str(store.directory), "--out", str(out), *CLI, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return time.perf_counter() - t0


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]["state_dict"]


def _assert_close_weights(a, b, rel=1e-2):
    """Same keys (no ``module.`` prefix) and every tensor equal up to accumulated float rounding.

    The two runs make the same steps on the same global batches; they differ only in
    reduction order (gradient all-reduce, synchronised batch norm), whose rounding AdamW
    can amplify for weights with near-zero gradients: hence a relative norm, not exact equality.
    """
    assert a.keys() == b.keys() and not any(k.startswith("module.") for k in a)
    for k in a:
        if a[k].is_floating_point():
            assert float((a[k] - b[k]).norm()) <= rel * float(b[k].norm()) + 1e-6, k
        else:
            assert torch.equal(a[k], b[k]), k  # num_batches_tracked: the same number of steps


@pytest.fixture(scope="module")
def single(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each torchrun process (OMP_NUM_THREADS=1)
    try:
        return out, train(TrainConfig(store=str(store.directory), **BASE), out_dir=out, progress=False)
    finally:
        torch.set_num_threads(threads)


def test_shares_partition_every_batch_with_its_augmentation(store, tmp_path):
    """The ranks' shares of a batch are the single-process batch: rows, extra samples, time shifts."""
    rows = store.select(exclude_folds=[5])
    view = fit_view(store, "stft", rows=rows, input_size=(24, 20))
    adv = tmp_path / "adv.h5"
    with store.reader() as f, h5py.File(adv, "w") as g:
        g["adversarial"] = view.read(f, rows[:9]).numpy()
        g["label"] = store.labels[rows[:9]]
    kw = dict(batch_size=7, shuffle=True, seed=5, time_shift=0.5, extra_sources=[{"path": str(adv)}], mix=0.3)
    whole = StoreBatches(store, view, rows, **kw)
    world = 3
    shares = [StoreBatches(store, view, rows, rank=r, world_size=world, **kw) for r in range(world)]
    assert all(len(s) == len(whole) for s in shares)
    for epoch in (0, 1):
        for i in range(len(whole)):
            ref = whole[epoch, i]
            parts = [s[epoch, i] for s in shares]
            sizes = [p["y"].numel() for p in parts]
            assert sum(sizes) == ref["y"].numel() and max(sizes) - min(sizes) <= 1
            x = torch.empty_like(ref["x"])
            y = torch.empty_like(ref["y"])
            for r, p in enumerate(parts):  # rank r holds positions r, r + world, … of the batch
                x[r::world], y[r::world] = p["x"], p["y"]
            assert torch.equal(x, ref["x"]) and torch.equal(y, ref["y"])
            assert whole.global_batch_size(epoch, i) == shares[1].global_batch_size(epoch, i) == ref["y"].numel()
    # a batch smaller than the world: the surplus ranks get empty shares of the right shape
    tiny = plan_epoch(rows[:2], 2, shuffle=False)[0]
    empty, positions = tiny.share(2, 3)
    assert empty.size == 0 and positions.size == 0
    third = StoreBatches(store, view, rows[:2], batch_size=2, rank=2, world_size=3)[0]
    assert third["x"].shape == (0, 1, 24, 20) and third["y"].numel() == 0


def test_torchrun_two_processes_match_one(store, single, tmp_path):
    ref_dir, ref = single
    out = tmp_path / "ddp"
    seconds = _torchrun(store, out)
    print(f"torchrun --nproc-per-node 2: {seconds:.1f} s")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and metrics["world_size"] == 2
    assert metrics["distributed"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": True}
    assert [h["world_size"] for h in metrics["history"]] == [2, 2, 2]
    raw = torch.load(out / "checkpoint.pt", weights_only=True)
    assert raw["distributed"]["world_size"] == 2 and raw["bn_recalibrated"]
    assert not any(".tmp-" in p.name for p in out.iterdir())  # one writer, nothing left behind

    # The same steps on the same global batches: the same numbers up to float reduction order.
    assert [h["samples"] for h in metrics["history"]] == [h["samples"] for h in ref["history"]]
    for h, g in zip(metrics["history"], ref["history"]):
        assert h["train_loss"] == pytest.approx(g["train_loss"], rel=1e-3, abs=1e-4)
        assert h["train_accuracy"] == pytest.approx(g["train_accuracy"], abs=1.5 / g["samples"])
        assert h["val_accuracy"] == pytest.approx(g["val_accuracy"], abs=1.5 / ref["split"]["val_clips"])
        assert h["lr"] == pytest.approx(g["lr"])
    _assert_close_weights(_state(out / "checkpoint.pt"), _state(ref_dir / "checkpoint.pt"))
    n_test = ref["test"]["n"]
    assert metrics["test"]["n"] == n_test  # the test fold split over the ranks, counts reduced
    assert abs(metrics["test_accuracy"] - ref["test_accuracy"]) <= 1.5 / n_test

    # The checkpoint is a plain single-process one, and predicts like the single-process model.
    ck, ref_ck = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(ref_dir / "checkpoint.pt")
    kinds = {type(m).__name__ for m in ck.model.modules()}
    assert "BatchNorm2d" in kinds and not any("Sync" in k for k in kinds)
    again = evaluate(ck, device="cpu")
    assert again["n"] == n_test and again["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1.5 / n_test)
    rows = store.select(folds=[5])
    with torch.no_grad(), store.reader() as f:
        x = ck.view.read(f, rows)
        torch.testing.assert_close(ck.model(x), ref_ck.model(x), atol=2e-2, rtol=2e-2)


def test_torchrun_resumes_a_single_process_checkpoint(store, single, tmp_path):
    """All ranks load the checkpoint (written here by one process) and finish the run like an unbroken one."""
    ref_dir, ref = single
    out = tmp_path / "resumed"
    first = train(TrainConfig(store=str(store.directory), **BASE), out_dir=out, progress=False, stop_after=1)
    assert first["epochs_done"] == 1 and first["world_size"] == 1
    _torchrun(store, out, "--resume")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and [h["world_size"] for h in metrics["history"]] == [1, 2, 2]
    _assert_close_weights(_state(out / "checkpoint.pt"), _state(ref_dir / "checkpoint.pt"))
    assert abs(metrics["test_accuracy"] - ref["test_accuracy"]) <= 1.5 / ref["test"]["n"]
