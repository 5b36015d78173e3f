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

from advaudio.augment import Augmentation
from advaudio.data import StoreBatches, plan_epoch
from advaudio.models import create_model
from advaudio.training import TrainConfig, evaluate, load_checkpoint, train
from advaudio.views import fit_view

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable"),
              pytest.mark.floats]


# Global batch 11 over the 32 training clips: batches of 11, 11, 10, so the two ranks' shares
# are 6 + 5, 6 + 5, 5 + 5. (A last batch of 2 — one clip per rank — makes batch norm over two
# values so sensitive that float rounding visibly changes the next step; avoided here.)
BASE = dict(view="stft", model="resnet18", width=0.125, input_size=32, test_fold=5, val_fraction=0.2,
            epochs=3, batch_size=11, lr=3e-3, seed=3, workers=0, device="cpu")
CLI = ["--view", "stft", "--model", "resnet18", "--width", "0.125", "--input-size", "32x32", "--test-fold", "5",
       "--val-fraction", "0.2", "--epochs", "3", "--batch-size", "11", "--lr", "0.003", "--seed", "3",
       "--workers", "0", "--device", "cpu", "--no-progress"]

# Whole runs are compared in float64 (``--dtype float64``). Training these tiny CNNs is chaotic:
# measured on this file's configuration (7 seeds; AVX-512, AVX2 and default kernels; 1 and 2
# threads), reordering float32 reductions moved a 3-epoch run's logits by up to 3e-3 (AdamW, as
# here), 0.17 on another AVX2 machine, and by ~1 with SGD at lr 0.05: rounding (u = 6e-8) amplified
# up to ~2e7 times. In float64 (u = 1.1e-16) the same amplification leaves at most ~3e-9; measured:
# DDP vs one process ≤ 3e-11 on the logits and ≤ 2e-13 (relative) on the weights, for AdamW and
# that SGD alike. The bounds are 30x that worst case; a real difference (a batch of other samples,
# batch norm over one rank's share) moves the logits by 1e-3 or more.
F64 = dict(dtype="float64")
F64_CLI = ["--dtype", "float64"]
LOGIT_TOLERANCE = 1e-7
WEIGHT_TOLERANCE = 1e-9


def _torchrun(store, out, *extra, nproc=2, cli=(*CLI, *F64_CLI)):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "advaudio", "train", "--store", str(store.directory), "--out", str(out), *cli, *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return time.perf_counter() - t0


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]["state_dict"]


def _parameters(state):
    """The trainable tensors of a state dict (batch-norm running statistics are recomputed at the end)."""
    return {k: v.double() for k, v in state.items()
            if v.is_floating_point() and not k.endswith(("running_mean", "running_var"))}


def _float64_model(ck, path):
    """The checkpoint's model in float64 with its saved (float64) weights, in evaluation mode."""
    model = ck.model.double()
    model.load_state_dict(_state(path))
    return model.eval()


def _relative_distance(a, b):
    """‖a − b‖ / ‖b‖ over all trainable tensors together."""
    pa, pb = _parameters(a), _parameters(b)
    assert pa.keys() == pb.keys() and not any(k.startswith("module.") for k in a)
    diff = sum(float((pa[k] - pb[k]).square().sum()) for k in pb)
    norm = sum(float(pb[k].square().sum()) for k in pb)
    return (diff / norm) ** 0.5


# Float32 sums of n terms are exact to within n · u (u = 2**-24, Higham's γ_n bound, whatever
# the order of the terms). The largest reductions of one step here (batch-norm statistics and
# weight gradients over 32 clips × 32 × 32 positions) have n ≈ 3·10**4, so two reduction orders
# (one process vs. two ranks + all-reduce) may differ by up to ~2·10**-3 of the gradient.
FIRST_STEP_TOLERANCE = 2 * 3e4 * 2.0**-24


@pytest.fixture(scope="module")
def single(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like each torchrun process (OMP_NUM_THREADS=1)
    try:
        return out, train(TrainConfig(store=str(store.directory), **BASE, **F64), out_dir=out, progress=False)
    finally:
        torch.set_num_threads(threads)


AUGMENTATIONS = {
    "time shift": None,
    "masks, gain, mixup": Augmentation(freq_masks=2, freq_mask_width=0.3, time_masks=1, time_mask_width=0.4,
                                       gain_db=6.0, mixing="mixup", mixup_alpha=0.5),
    "between-class": Augmentation(gain_db=3.0, mixing="bc", freq_masks=1, freq_mask_width=0.2),
}


@pytest.mark.parametrize("augmentation", list(AUGMENTATIONS))
def test_shares_partition_every_batch_with_its_augmentation(store, tmp_path, augmentation):
    """The ranks' shares of a batch are the single-process batch: rows, extra samples, time shifts,
    masks, gains and mixed inputs and labels (each rank reads its samples' partners itself)."""
    rows = store.select(exclude_folds=[5])
    view = fit_view(store, "stft", rows=rows, input_size=(24, 20))
    adv = tmp_path / "adv.h5"
    with store.reader() as f, h5py.File(adv, "w") as g:
        g["adversarial"] = view.read(f, rows[:9]).numpy()
        g["label"] = store.labels[rows[:9]]
    kw = dict(batch_size=7, shuffle=True, seed=5, time_shift=0.5, extra_sources=[{"path": str(adv)}], mix=0.3,
              augmentation=AUGMENTATIONS[augmentation])
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
            for key in ref:  # x, y, source, index and, with mixing, target
                whole_batch = torch.empty_like(ref[key])
                for r, p in enumerate(parts):  # rank r holds positions r, r + world, … of the batch
                    whole_batch[r::world] = p[key]
                assert torch.equal(whole_batch, ref[key]), key
            assert ("target" in ref) == (augmentation != "time shift")
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

    # What does not involve float arithmetic matches exactly: the batch plan, the samples seen, the schedule.
    assert [h["samples"] for h in metrics["history"]] == [h["samples"] for h in ref["history"]]
    assert [h["lr"] for h in metrics["history"]] == [h["lr"] for h in ref["history"]]
    assert metrics["split"] == ref["split"]
    # The float64 runs end where the single process ends (see F64 above): weights, every accuracy.
    distance = _relative_distance(_state(out / "checkpoint.pt"), _state(ref_dir / "checkpoint.pt"))
    print(f"3 epochs, float64: ‖w(two ranks) − w(one process)‖ / ‖w‖ = {distance:.1e}")
    assert distance <= WEIGHT_TOLERANCE
    n_test = ref["test"]["n"]
    assert metrics["history"][-1]["val_accuracy"] == ref["history"][-1]["val_accuracy"]
    assert metrics["test"]["n"] == n_test  # the test fold split over the ranks, counts reduced
    assert metrics["test"]["confusion_matrix"] == ref["test"]["confusion_matrix"]
    assert metrics["test"]["loss"] == pytest.approx(ref["test"]["loss"], rel=LOGIT_TOLERANCE)

    # The checkpoint is a plain single-process one, and predicts like the single-process model.
    ck, ref_ck = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(ref_dir / "checkpoint.pt")
    kinds = {type(m).__name__ for m in ck.model.modules()}
    assert "BatchNorm2d" in kinds and not any("Sync" in k for k in kinds)
    again = evaluate(ck, device="cpu")  # other stages load it in float32
    assert again["n"] == n_test and again["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1.5 / n_test)
    rows = store.select(folds=[5])
    with torch.no_grad(), store.reader() as f:
        x = ck.view.read(f, rows).double()
        logits = [_float64_model(c, d / "checkpoint.pt")(x) for c, d in ((ck, out), (ref_ck, ref_dir))]
    gap = float((logits[0] - logits[1]).abs().max())
    print(f"3 epochs, float64: max |logit(two ranks) − logit(one process)| = {gap:.1e}")
    assert gap <= LOGIT_TOLERANCE * max(1.0, float(logits[1].abs().max()))


def test_torchrun_resumes_a_single_process_checkpoint(store, single, tmp_path):
    """All ranks load the checkpoint (written here by one process) and finish the run like an unbroken one."""
    ref_dir, ref = single
    out = tmp_path / "resumed"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        first = train(TrainConfig(store=str(store.directory), **BASE, **F64), out_dir=out, progress=False,
                      stop_after=1)
    finally:
        torch.set_num_threads(threads)
    assert first["epochs_done"] == 1 and first["world_size"] == 1
    _torchrun(store, out, "--resume")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["complete"] and [h["world_size"] for h in metrics["history"]] == [1, 2, 2]
    assert [h["lr"] for h in metrics["history"]] == [h["lr"] for h in ref["history"]]
    assert _relative_distance(_state(out / "checkpoint.pt"), _state(ref_dir / "checkpoint.pt")) <= WEIGHT_TOLERANCE
    assert metrics["test"]["confusion_matrix"] == ref["test"]["confusion_matrix"]


def test_first_step_gradients_match_within_float32_rounding(store, tmp_path):
    """One SGD step on one global batch: the two ranks' update equals the single process's
    to within the rounding bound of float32 sums (plain SGD: the update is lr × 1.9 × gradient)."""
    one_step = {**BASE, "epochs": 1, "batch_size": 64, "optimizer": "sgd", "schedule": "constant",
                "weight_decay": 0.0, "lr": 0.1}
    single = train(TrainConfig(store=str(store.directory), **one_step), out_dir=tmp_path / "one", progress=False)
    assert [h["samples"] for h in single["history"]] == [single["split"]["train_clips"]]  # one step
    cli = [*CLI, "--epochs", "1", "--batch-size", "64", "--optimizer", "sgd", "--schedule", "constant",
           "--weight-decay", "0", "--lr", "0.1"]
    _torchrun(store, tmp_path / "two", cli=cli)  # float32: one step, bounded by the arithmetic

    torch.manual_seed(BASE["seed"])  # the initial weights, as train() draws them
    initial = create_model(BASE["model"], in_channels=1, num_classes=store.num_classes,
                           width=BASE["width"]).state_dict()
    w0 = _parameters(initial)
    w1, w2 = _parameters(_state(tmp_path / "one" / "checkpoint.pt")), _parameters(_state(tmp_path / "two" / "checkpoint.pt"))
    step = {k: w1[k] - w0[k] for k in w0}
    norm = sum(float(v.square().sum()) for v in step.values()) ** 0.5
    assert 0 < norm < 0.2 * sum(float(v.square().sum()) for v in w0.values()) ** 0.5  # w0 is the start
    diff = sum(float((w2[k] - w1[k]).square().sum()) for k in w0) ** 0.5
    print(f"first step: ‖Δ(two ranks) − Δ(one process)‖ / ‖Δ‖ = {diff / norm:.2e} "
          f"(bound {FIRST_STEP_TOLERANCE:.1e})")
    assert diff <= FIRST_STEP_TOLERANCE * norm
