"""The training hot loop and its CUDA path: mixed-precision type, loss scaling, memory format,
pinned batches, worker counts, epoch sums kept on the device, and the reader's resolved segments.

Tests marked ``cuda`` run only where torch sees a GPU (CI has none); they skip saying so.
"""

import warnings

import h5py
import numpy as np
import pytest
import torch

from advaudio.data import StoreBatches, batch_sizes, default_workers, make_loader, to_device
from advaudio.errors import ParameterError
from advaudio.store import read_rows
from advaudio.training import TrainConfig, load_checkpoint, train
from advaudio.training.distributed import amp_dtype, autocast, needs_grad_scaler
from advaudio.training.loop import loader_workers, memory_format
from advaudio.views import fit_view

HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")


def _config(store, **kw):
    base = dict(store=str(store.directory), view="stft+chroma", model="resnet18", width=0.125, input_size=32,
                test_fold=max(store.fold_ids), epochs=1, batch_size=8, lr=3e-3, seed=0, workers=0, device="cpu")
    return TrainConfig(**{**base, **kw})


# --------------------------------------------------------------------------- #
# Everywhere
# --------------------------------------------------------------------------- #
def test_mixed_precision_is_off_the_cpu():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) is None and not needs_grad_scaler(cpu, True)
    x = torch.randn(4, 4)
    with autocast(cpu, True):
        assert (x @ x).dtype == torch.float32


def test_workers_are_sized_to_the_cpus(store):
    assert default_workers("cpu", cpus=16) == 0  # CPU training: the model's threads take every core
    assert [default_workers("cuda", cpus=n) for n in (1, 2, 4, 16, 64)] == [1, 1, 3, 8, 8]
    cpu = torch.device("cpu")
    assert loader_workers(_config(store, workers=None), cpu) == 0
    assert loader_workers(_config(store, workers=3), cpu) == 3
    assert TrainConfig(store="x").workers is None
    with pytest.raises(ParameterError, match="workers"):
        _config(store, workers=-1)


def test_channels_last_only_on_cuda(store):
    assert memory_format(_config(store), torch.device("cpu")) is torch.contiguous_format
    assert memory_format(_config(store), torch.device("cuda")) is torch.channels_last
    assert memory_format(_config(store, channels_last=False), torch.device("cuda")) is torch.contiguous_format


def test_epoch_sums_match_the_per_step_losses(store, tmp_path):
    """The epoch's loss and accuracy (summed on the device) are the steps' losses, weighted by batch size."""
    losses = []
    metrics = train(_config(store, epochs=2, time_shift=0.0), out_dir=tmp_path, progress=False,
                    callback=lambda d: losses.append((d["epoch"], d["loss"])))
    n_train = metrics["split"]["train_clips"]
    sizes, _ = batch_sizes(n_train, 8, 0.0, drop_singleton=True)
    for record in metrics["history"]:
        epoch_losses = [loss for e, loss in losses if e == record["epoch"]]
        assert len(epoch_losses) == len(sizes)
        expected = sum(loss * n for loss, n in zip(epoch_losses, sizes)) / sum(sizes)
        assert record["samples"] == sum(sizes)
        assert record["train_loss"] == pytest.approx(expected, rel=1e-6)
        assert 0.0 <= record["train_accuracy"] <= 1.0
        correct = record["train_accuracy"] * record["samples"]
        assert correct == pytest.approx(round(correct), abs=1e-9)  # a count of samples


def test_reader_resolves_each_segment_once_and_reads_the_same(store):
    """Repeated batches through one reader (resolved segments, memory-map views) equal h5py's reads."""
    rng = np.random.default_rng(0)
    with store.reader() as reader:
        for _ in range(4):
            rows = np.sort(rng.choice(len(store), size=9, replace=False))
            for name in ("stft", "chroma"):
                out = np.empty((rows.size,) + reader.shape(name)[1:], np.float32)
                reader.read_into(name, rows, out)
                with h5py.File(store.master, "r") as f:
                    np.testing.assert_array_equal(out, read_rows(f["features"][name], rows))
        # every segment resolved once, on the memory-mapped path (featurize's uncompressed chunks)
        assert reader._resolved and all(fast and mapped is not None for _, fast, mapped in reader._resolved.values())


# --------------------------------------------------------------------------- #
# CUDA only
# --------------------------------------------------------------------------- #
@cuda
def test_cuda_amp_type_and_scaler():
    dev = torch.device("cuda")
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    assert amp_dtype(dev) == (torch.bfloat16 if bf16 else torch.float16)
    assert needs_grad_scaler(dev, True) == (not bf16) and not needs_grad_scaler(dev, False)
    x = torch.randn(8, 8, device=dev)
    with autocast(dev, True):
        assert (x @ x).dtype == amp_dtype(dev)


@cuda
def test_cuda_batches_are_pinned_and_copied_asynchronously(store):
    rows = store.select(exclude_folds=[max(store.fold_ids)])
    view = fit_view(store, "stft+chroma", rows=rows, input_size=(32, 32))
    ds = StoreBatches(store, view, rows, batch_size=8)
    loader = make_loader(ds, workers=1, device="cuda")
    batch = next(iter(loader))
    assert batch["x"].is_pinned()
    on_gpu = to_device(batch, torch.device("cuda"))
    assert on_gpu["x"].is_cuda and torch.equal(on_gpu["x"].cpu(), batch["x"])
    ds.close()


@cuda
def test_cuda_training_run_matches_its_checkpoint(store, tmp_path):
    """A CUDA run (mixed precision, channels_last, workers sized to the CPUs) learns and its
    checkpoint evaluates to the recorded test accuracy on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = train(_config(store, epochs=4, device="cuda", workers=None), out_dir=tmp_path, progress=False)
    assert metrics["device"].startswith("cuda")
    assert all(np.isfinite(h["train_loss"]) for h in metrics["history"])
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert load_checkpoint(tmp_path / "checkpoint.pt", device=torch.device("cpu")).test_fold == max(store.fold_ids)
    saved_scaler = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False).get("scaler")
    assert bool(saved_scaler) == needs_grad_scaler(torch.device("cuda"), True)
    from advaudio.training import evaluate

    again = evaluate(tmp_path / "checkpoint.pt", device="cpu")
    assert again["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1.5 / max(again["n"], 1))


@cuda
def test_cuda_attack_gradients_are_float32(store):
    """Attacks run in float32 on the GPU (no autocast): the adversarial inputs match the CPU's."""
    from advaudio.attacks import AttackConfig, PGDParams, run_attack
    from advaudio.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18", in_channels=1, num_classes=4, width=0.125).eval()
    x = torch.rand(6, 1, 32, 32)
    labels = model(x).argmax(1)
    config = AttackConfig(params=PGDParams(norm="linf", steps=5, random_start=False), targeted=False, seed=0)
    cpu = run_attack(model, x, labels, config=config, epsilon=0.05)
    gpu = run_attack(model.cuda(), x.cuda(), labels.cuda(), config=config, epsilon=0.05)
    adv_gpu, adv_cpu = np.asarray(gpu.adversarial), np.asarray(cpu.adversarial)
    assert adv_gpu.dtype == np.float32
    # Half-precision gradients would flip the signs of many small entries; float32 ones agree
    # with the CPU's but for the odd entry whose gradient is within rounding of zero.
    assert np.mean(np.abs(adv_gpu - adv_cpu) < 1e-4) >= 0.95
