"""What the training numbers mean: which folds and rows each set uses, what the view's normalisation
and batch norm's statistics are fitted on, and what retraining starts from and at which learning rate.

Every expected value is computed here independently of the code under test: rows and folds read
back from ``store.h5`` with h5py, percentiles with numpy, batch-norm statistics with a float64
convolution, fresh weights by seeding torch as the trainer documents.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from advaudio import store as st
from advaudio.cli import cli
from advaudio.errors import StoreError
from advaudio.models import create_model
from advaudio.stages.retrain import RetrainConfig, retrain
from advaudio.store import Store, find_shards
from advaudio.training import TrainConfig, evaluate, load_checkpoint, train
from advaudio.training.evaluation import recalibrate_bn
from advaudio.training.splits import split_by_fold
from advaudio.views import HISTOGRAM_BINS

#: float32 unit roundoff: a float32 sum of n terms is within n·U·Σ|terms| of the exact one
U32 = 2.0**-24


def _make_store(cache):
    from advaudio.features import FeatureConfig
    from advaudio.stages.featurize import FeaturizeConfig, featurize

    config = FeaturizeConfig(
        dataset="synthetic",
        dataset_options={"clips_per_class": 12, "duration": 1.0, "n_classes": 4},
        features=FeatureConfig(representations=("stft", "chroma")),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Store(featurize(config, cache=cache, workers=0, progress=False).store_dir)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """This module's own store: the retraining tests register adversarial shards in it."""
    return _make_store(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def meta(store):
    """Folds and labels per store row, read back from ``store.h5`` with plain h5py."""
    with h5py.File(store.directory / "store.h5", "r") as f:
        return {"fold": f["meta/fold"][:].astype(int), "label": f["meta/label"][:].astype(int)}


def _config(store, **kw):
    return TrainConfig(**{"store": str(store.directory), "view": "stft", "model": "resnet18", "width": 0.125,
                          "input_size": 32, "epochs": 2, "batch_size": 64, "lr": 3e-3, "seed": 0, "workers": 0,
                          "device": "cpu", "time_shift": 0.0, **kw})


# --------------------------------------------------------------------------- #
# The split: folds and rows of each set
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("test_fold", [1, 2, 3, 5])
def test_the_test_fold_asked_for_is_held_out(store, meta, test_fold):
    split = split_by_fold(store, _config(store, test_fold=test_fold))
    folds = meta["fold"]
    np.testing.assert_array_equal(split.test, np.flatnonzero(folds == test_fold))
    np.testing.assert_array_equal(split.train, np.flatnonzero(folds != test_fold))
    assert split.val.size == 0 and split.test_fold == test_fold and split.val_fold is None
    assert split.train_folds == sorted(set(folds.tolist()) - {test_fold})
    # every set, the empty validation set too, is integer rows the store can be indexed with
    for rows in (split.train, split.val, split.test):
        assert rows.dtype.kind in "iu"
        assert store.labels[rows].shape == rows.shape


def test_without_a_test_fold_the_highest_fold_is_held_out(store, meta):
    split = split_by_fold(store, _config(store, test_fold=None))
    highest = int(meta["fold"].max())
    assert split.test_fold == highest
    np.testing.assert_array_equal(split.test, np.flatnonzero(meta["fold"] == highest))


def test_a_validation_fold_leaves_training_and_testing(store, meta):
    split = split_by_fold(store, _config(store, test_fold=2, val_fold=4))
    folds = meta["fold"]
    np.testing.assert_array_equal(split.test, np.flatnonzero(folds == 2))
    np.testing.assert_array_equal(split.val, np.flatnonzero(folds == 4))
    np.testing.assert_array_equal(split.train, np.flatnonzero((folds != 2) & (folds != 4)))
    assert split.train_folds == [1, 3, 5] and split.val_fold == 4
    assert split.summary() == {"train_clips": int(np.sum((folds != 2) & (folds != 4))),
                               "val_clips": int(np.sum(folds == 4)), "test_clips": int(np.sum(folds == 2)),
                               "test_fold": 2, "val_fold": 4, "train_folds": [1, 3, 5]}


@pytest.mark.parametrize("fraction", [0.01, 0.2, 0.3, 0.99])
def test_a_validation_fraction_is_stratified_and_drawn_from_the_training_folds(store, meta, fraction):
    config = _config(store, test_fold=2, val_fraction=fraction)
    split = split_by_fold(store, config)
    folds, labels = meta["fold"], meta["label"]
    pool = np.flatnonzero(folds != 2)  # the training folds' rows
    np.testing.assert_array_equal(np.union1d(split.train, split.val), pool)
    assert np.intersect1d(split.train, split.val).size == 0
    assert np.all(np.diff(split.val) > 0) and np.all(np.diff(split.train) > 0)
    np.testing.assert_array_equal(split.test, np.flatnonzero(folds == 2))
    for c in np.unique(labels):
        n = int(np.sum(labels[pool] == c))
        # the fraction of each class (no fraction here lands on .5), at least one, never all of it
        want = min(max(math.floor(fraction * n + 0.5), 1), n - 1)
        assert int(np.sum(labels[split.val] == c)) == want, (c, n)
    again = split_by_fold(store, config)
    np.testing.assert_array_equal(again.val, split.val)  # a resume (or another rank) draws the same rows
    if 0.1 < fraction < 0.9:  # another seed draws other rows
        other = split_by_fold(store, dataclasses.replace(config, seed=1))
        assert not np.array_equal(other.val, split.val)


class _Rows:
    """A store of ``folds`` and ``labels`` only: what :func:`split_by_fold` reads."""

    def __init__(self, folds, labels, fold_ids=None):
        self.folds, self.labels, self.directory = np.asarray(folds), np.asarray(labels), "rows"
        self.fold_ids = fold_ids or sorted(set(self.folds.tolist()))

    def select(self, folds=None, exclude_folds=None):
        keep = np.isin(self.folds, folds) if folds is not None else ~np.isin(self.folds, exclude_folds)
        return np.flatnonzero(keep)


def test_a_validation_fraction_leaves_every_class_in_training(store):
    # training rows per class: 1 (its only row stays in training), 2 (one of each), 3, 10
    labels = [0] + [1] * 2 + [2] * 3 + [3] * 10
    rows = _Rows(folds=[1] * 16 + [2] * 4, labels=labels + [0, 1, 2, 3])
    for fraction, want in ((0.01, [0, 1, 1, 1]), (0.4, [0, 1, 1, 4]), (0.9, [0, 1, 2, 9])):
        split = split_by_fold(rows, _config(store, test_fold=2, val_fraction=fraction))
        assert np.bincount(rows.labels[split.val], minlength=4).tolist() == want, fraction
        assert np.bincount(rows.labels[split.train], minlength=4).tolist() == \
            [n - w for n, w in zip((1, 2, 3, 10), want)]
        for part in (split.train, split.val, split.test):
            assert part.dtype.kind == "i"  # row indices, also when empty


def test_a_split_needs_two_folds_and_training_rows(store, tmp_path):
    with pytest.raises(StoreError, match="two or more"):
        split_by_fold(_Rows(folds=[1, 1], labels=[0, 1]), _config(store))

    for fraction in (0.0, 0.2):  # fold 1 holds every row: holding it out leaves nothing to train on
        with pytest.raises(StoreError, match="no training clips"):
            split_by_fold(_Rows(folds=[1, 1, 1], labels=[0, 1, 0], fold_ids=[1, 2]),
                          _config(store, test_fold=1, val_fraction=fraction))
    with pytest.raises(StoreError, match="no training clips"):
        split_by_fold(_Rows(folds=[1, 1, 2], labels=[0, 1, 0]), _config(store, test_fold=1, val_fold=2))


# --------------------------------------------------------------------------- #
# Batch norm: precise statistics over the batches given
# --------------------------------------------------------------------------- #
def test_recalibrated_batch_norm_is_the_plain_average_over_the_batches():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    bn = model[0]
    bn.momentum = 0.3
    bn.running_mean.fill_(5.0)  # stale statistics: recalibration must forget them
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, 3, 4, 4, generator=gen) * (1 + i) + i for i, n in enumerate((5, 3, 1, 7))]
    model.eval()
    seen = recalibrate_bn(model, [{"x": x} for x in batches], device=torch.device("cpu"))
    used = [x.double() for x in batches if len(x) > 1]  # a batch of one has no variance: skipped
    assert seen == sum(len(x) for x in used) == 15
    # every batch weighs the same ("cumulative" averaging), whatever its size
    mean = np.mean([x.mean(dim=(0, 2, 3)).numpy() for x in used], axis=0)
    var = np.mean([x.var(dim=(0, 2, 3), unbiased=True).numpy() for x in used], axis=0)
    # float32 sums of n terms per batch, then a few float32 updates of the average
    n = max(x.numel() // 3 for x in used)
    tol_mean = 4 * n * U32 * max(float(x.abs().mean()) for x in used)
    tol_var = 4 * n * U32 * max(float((x ** 2).mean()) for x in used)
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=0, atol=tol_mean)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=0, atol=tol_var)
    assert bn.momentum == 0.3 and not model.training  # the layer's momentum and the mode come back
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2))
    assert recalibrate_bn(plain, [{"x": batches[0]}], device=torch.device("cpu")) == 0


# --------------------------------------------------------------------------- #
# The learning rate and weight decay a run steps with
# --------------------------------------------------------------------------- #
def _step_rates(config: TrainConfig, steps_per_epoch: int) -> tuple[list[float], torch.optim.Optimizer]:
    from advaudio.training.loop import _build_optimizer, _build_scheduler

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    optimizer = _build_optimizer(model, config)
    scheduler = _build_scheduler(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert all(len(set(r)) == 1 for r in rates)  # every parameter group at the same rate
    return [r[0] for r in rates], optimizer


def test_the_learning_rate_peaks_at_the_configured_one_after_the_warm_up():
    config = TrainConfig(store="-", lr=0.02, epochs=4, warmup_fraction=0.25)
    rates, optimizer = _step_rates(config, steps_per_epoch=10)  # 40 steps, 10 of warm-up
    peak = int(np.argmax(rates))
    assert rates[peak] == pytest.approx(0.02, rel=1e-12) and peak in (9, 10)
    assert rates[0] < 0.02 / 10 and rates[-1] < 0.02 / 100  # warm-up from low, annealed to nearly 0
    assert all(a <= b + 1e-15 for a, b in zip(rates[:peak], rates[1:peak + 1]))  # rising, then falling
    assert all(a >= b - 1e-15 for a, b in zip(rates[peak:], rates[peak + 1:]))
    constant, _ = _step_rates(TrainConfig(store="-", lr=0.02, epochs=2, schedule="constant"), steps_per_epoch=5)
    assert constant == [0.02] * 10
    # decoupled weight decay on the weights (matrices, kernels), none on biases and normalisation
    decays = {p.ndim: g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decays == {4: config.weight_decay, 1: 0.0} and config.weight_decay == 0.05
    assert isinstance(optimizer, torch.optim.AdamW)
    _, sgd = _step_rates(TrainConfig(store="-", optimizer="sgd", schedule="constant"), steps_per_epoch=2)
    assert isinstance(sgd, torch.optim.SGD) and all(g["momentum"] == 0.9 and g["nesterov"] for g in sgd.param_groups)


# --------------------------------------------------------------------------- #
# A run with test fold 2 and a validation fraction
# --------------------------------------------------------------------------- #
def _cli(*args: str) -> str:
    """``advaudio ARGS`` in this process (the output; the exit status must be 0)."""
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def fold2(store, tmp_path_factory):
    """``advaudio train --test-fold 2`` (not the highest fold) with 20 % of the training folds for
    validation and one batch per epoch."""
    out = tmp_path_factory.mktemp("fold2")
    _cli("train", "--store", str(store.directory), "--view", "stft", "--model", "resnet18", "--width", "0.125",
         "--input-size", "32", "--test-fold", "2", "--val-fraction", "0.2", "--epochs", "2", "--batch-size", "64",
         "--lr", "0.003", "--seed", "0", "--workers", "0", "--device", "cpu", "--time-shift", "0",
         "--out", str(out), "--no-progress")
    config = _config(store, test_fold=2, val_fraction=0.2)
    return {"config": config, "metrics": json.loads((out / "metrics.json").read_text()),
            "checkpoint": out / "checkpoint.pt", "split": split_by_fold(store, config)}


def test_the_run_tests_on_fold_2_and_records_its_split(store, meta, fold2):
    metrics, split = fold2["metrics"], fold2["split"]
    assert TrainConfig.from_dict(metrics["config"]) == fold2["config"]  # the options, as given
    fold_2 = np.flatnonzero(meta["fold"] == 2)
    assert metrics["split"] == split.summary() and metrics["split"]["test_fold"] == 2
    assert metrics["test"]["n"] == fold_2.size and metrics["test"]["fold"] == 2
    # the confusion matrix is the checkpoint's predictions on fold 2's rows, counted here
    ck = load_checkpoint(fold2["checkpoint"])
    with torch.no_grad(), store.reader() as reader:
        predicted = ck.model(ck.view.read(reader, fold_2)).argmax(1).numpy()
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (meta["label"][fold_2], predicted), 1)
    assert metrics["confusion_matrix"] == expected.tolist()
    assert metrics["test_accuracy"] == pytest.approx(np.mean(predicted == meta["label"][fold_2]))
    # `advaudio evaluate` takes the checkpoint's test fold by default, any other fold when asked
    again = evaluate(fold2["checkpoint"], device="cpu")
    assert again["fold"] == 2 and again["confusion_matrix"] == expected.tolist()
    fold_3 = evaluate(fold2["checkpoint"], fold=3, device="cpu")
    assert fold_3["fold"] == 3 and fold_3["n"] == int(np.sum(meta["fold"] == 3))


def test_the_view_is_fitted_on_the_training_rows_only(store, meta, fold2):
    split, ck = fold2["split"], load_checkpoint(fold2["checkpoint"])
    assert ck.view.fitted_on["rows"] == split.train.size
    assert ck.view.fitted_on["folds"] == sorted(set(meta["fold"][split.train].tolist())) == [1, 3, 4, 5]
    with h5py.File(store.directory / "store.h5", "r") as f:
        everything = f["features/stft"][:]
    # numpy's percentiles of the training rows, to the histogram's precision (one bin)
    train_values = everything[split.train]
    lo, hi = (float(v) for v in np.percentile(train_values, ck.view.percentiles))
    tolerance = float(train_values.max() - train_values.min()) / HISTOGRAM_BINS
    assert ck.view.low[0] == pytest.approx(lo, abs=tolerance) and ck.view.high[0] == pytest.approx(hi, abs=tolerance)
    # the validation rows or the test fold would have moved them by more than that
    for rows in (np.union1d(split.train, split.val), np.union1d(split.train, split.test)):
        other = np.percentile(everything[rows], ck.view.percentiles)
        assert max(abs(other[0] - lo), abs(other[1] - hi)) > 2 * tolerance


def _stem_statistics(model, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per channel mean and unbiased variance of the stem convolution's output on ``x`` (float64),
    and the float32 rounding bounds of a sum over those outputs."""
    conv = model.stem[0]
    with torch.no_grad():
        y = F.conv2d(x.double(), conv.weight.double(), stride=conv.stride, padding=conv.padding)
    n = y.numel() // y.shape[1]
    mean = y.mean(dim=(0, 2, 3)).numpy()
    var = y.var(dim=(0, 2, 3), unbiased=True).numpy()
    return mean, var, 4 * n * U32 * float(y.abs().mean()), 4 * n * U32 * float((y ** 2).mean())


def test_batch_norm_statistics_are_those_of_the_training_rows(store, fold2):
    split, ck = fold2["split"], load_checkpoint(fold2["checkpoint"])
    bn = ck.model.stem[1]
    with store.reader() as reader:
        inputs = {name: ck.view.read(reader, rows) for name, rows in
                  (("train", split.train), ("train+val", np.union1d(split.train, split.val)), ("test", split.test))}
    # one batch holds every training row (batch 64 > rows, no time shift): the exact statistics
    mean, var, tol_mean, tol_var = _stem_statistics(ck.model, inputs["train"])
    np.testing.assert_allclose(bn.running_mean.numpy(), mean, rtol=0, atol=tol_mean)
    np.testing.assert_allclose(bn.running_var.numpy(), var, rtol=0, atol=tol_var)
    for other in ("train+val", "test"):  # other rows give statistics farther off than the rounding
        m, v, _, _ = _stem_statistics(ck.model, inputs[other])
        assert np.abs(m - mean).max() > tol_mean or np.abs(v - var).max() > tol_var, other


def test_without_recalibration_batch_norm_keeps_the_training_averages(store, fold2, tmp_path):
    metrics = train(dataclasses.replace(fold2["config"], recalibrate_bn=False), out_dir=tmp_path, progress=False)
    assert metrics["complete"]
    split, ck = fold2["split"], load_checkpoint(tmp_path / "checkpoint.pt")
    with store.reader() as reader:
        mean, _, tol_mean, _ = _stem_statistics(ck.model, ck.view.read(reader, split.train))
    # two momentum-0.1 steps from zero: a fifth of the way, not the precise statistics
    assert np.abs(ck.model.stem[1].running_mean.numpy() - mean).max() > 100 * tol_mean


# --------------------------------------------------------------------------- #
# Retraining: which shards, from which weights, at which learning rate
# --------------------------------------------------------------------------- #
def _shard(store, ck, sha, rows, *, name, round=0, split="train", slice=(0, 1)):
    """An adversarial shard of ``rows`` as the attack stage writes one (inputs: the clean ones)."""
    with store.reader() as reader:
        inputs = ck.view.read(reader, rows).numpy()
    arrays = {"adversarial": inputs, "clean_index": np.asarray(rows, np.int64), "fold": store.folds[rows],
              "label": store.labels[rows].astype(np.int64), "success": np.ones(len(rows), bool)}
    attrs = {"attack": name, "norm": "linf", "budget": 0.01, "fooling_rate": 1.0, "round": round, "split": split,
             "slice": list(slice), "checkpoint_sha256": sha, "store_fingerprint": store.fingerprint,
             "view": ck.view.to_dict()}
    return st.write_adversarial_shard(store.directory, f"{name}-r{round}-{split}-{slice[0]}of{slice[1]}",
                                      arrays=arrays, attrs=attrs)


@pytest.fixture(scope="module")
def shards(store, fold2):
    """The round-0 training-split shard of the fold-2 run, beside shards ``retrain`` must not take."""
    ck, sha = load_checkpoint(fold2["checkpoint"]), st.sha256_file(fold2["checkpoint"])
    train_rows, test_rows = fold2["split"].train, fold2["split"].test
    right = _shard(store, ck, sha, train_rows[::3], name="right")
    others = [
        _shard(store, ck, sha, train_rows[1::3], name="later-round", round=1),
        _shard(store, ck, sha, test_rows[:4], name="test-split", split="test"),
        _shard(store, ck, sha, train_rows[2::3], name="a-slice", slice=(0, 2)),
        _shard(store, ck, "0" * 64, train_rows[2::3], name="other-checkpoint"),
    ]
    return right, others


def test_retraining_takes_the_round_s_training_shards_of_this_checkpoint(store, fold2, shards):
    right, _ = shards
    sha = st.sha256_file(fold2["checkpoint"])
    assert find_shards(store, checkpoint_sha=sha, round=0) == [right]
    assert [p.name for p in find_shards(store, checkpoint_sha=sha, round=1)] == ["later-round-r1-train-0of1.h5"]
    assert [p.name for p in find_shards(store, checkpoint_sha=sha, round=0, split="test")] == \
        ["test-split-r0-test-0of1.h5"]


def test_retraining_starts_where_its_mode_says_at_the_learning_rate_it_says(store, fold2, shards, monkeypatch):
    import advaudio.training

    given = []
    monkeypatch.setattr(advaudio.training, "train", lambda config, **kw: given.append(config) or {"checkpoint": "-"})
    parent = fold2["checkpoint"]
    base = fold2["config"]
    cases = [((), base.lr / 10, str(parent.resolve())),  # fine-tuning: a tenth of the original rate
             (("--from-scratch",), base.lr, None),  # from scratch: the original recipe
             (("--lr", "1e-4"), 1e-4, str(parent.resolve())),
             (("--from-scratch", "--lr", "1e-4"), 1e-4, None)]
    for args, lr, init in cases:
        _cli("retrain", "--checkpoint", str(parent), "--out", str(store.directory / "unused"), "--no-progress", *args)
        new = given[-1]
        assert (new.lr, new.init_checkpoint) == (lr, init), args
        assert new.epochs == base.epochs and new.mix == 0.5
        assert [s.path for s in new.extra_sources] == [str(shards[0].resolve())]
        assert new.provenance["round"] == 1
        assert new.provenance["mode"] == ("from-scratch" if "--from-scratch" in args else "fine-tune")
        # everything else is the original recipe: the same split, view, model and seed
        same = {k: v for k, v in base.to_dict().items()
                if k not in ("lr", "init_checkpoint", "extra_sources", "mix", "provenance")}
        assert {k: new.to_dict()[k] for k in same} == same
    _cli("retrain", "--checkpoint", str(parent), "--out", str(store.directory / "unused"), "--epochs", "1",
         "--mix", "0.25", "--no-progress")
    assert given[-1].epochs == 1 and given[-1].mix == 0.25
    retrain(parent, out_dir=store.directory / "unused", config=RetrainConfig(mode="from-scratch"), progress=False)
    assert (given[-1].lr, given[-1].init_checkpoint) == (base.lr, None)  # the API says the same


def _parameters(state: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if v.is_floating_point() and "running_" not in k}


@pytest.mark.parametrize("mode", ["fine-tune", "from-scratch"])
def test_retraining_starts_from_the_parent_or_from_fresh_weights(store, fold2, shards, mode, tmp_path):
    # At lr 1e-30 an epoch moves no weight by more than ~1e-29: the weights after it are the start's.
    parent = fold2["checkpoint"]
    _cli("retrain", "--checkpoint", str(parent), "--lr", "1e-30", "--epochs", "1", "--mix", "0.25",
         "--out", str(tmp_path), "--no-progress", f"--{mode}")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["complete"] and metrics["config"]["lr"] == 1e-30
    after = _parameters(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"]["state_dict"])
    trained = _parameters(torch.load(parent, weights_only=True)["model"]["state_dict"])
    torch.manual_seed(fold2["config"].seed)  # the trainer's documented initialisation
    fresh = _parameters(create_model("resnet18", in_channels=1, num_classes=4, width=0.125).state_dict())
    start, not_start = (trained, fresh) if mode == "fine-tune" else (fresh, trained)
    assert after.keys() == start.keys()
    for k in after:
        torch.testing.assert_close(after[k], start[k], rtol=0, atol=1e-20)
    assert any((after[k] - not_start[k]).abs().max() > 1e-4 for k in after)


# --------------------------------------------------------------------------- #
# The attack stage: which rows, which targets, which norms
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def attacked(store, fold2, tmp_path_factory):
    """fgsm on the fold-2 run: 6 of the test fold's clips, all of them, and the training rows.

    Rounds 7-9, so that no retraining test above takes these shards for round 0's."""
    from advaudio.stages.attack import AttackStageConfig, attack_stage

    out = tmp_path_factory.mktemp("attacks")
    runs = {"test6": dict(split="test", limit=6, round=7), "test": dict(split="test", round=8),
            "train": dict(split="train", round=9)}
    shards = {}
    for name, options in runs.items():
        config = AttackStageConfig(attacks=("fgsm",), threshold=0.5, checks=False, **options)
        doc = attack_stage(config, checkpoint=fold2["checkpoint"], out_dir=out / name, device="cpu", progress=False)
        (record,) = doc["attacks"]
        shard = st.AdversarialShard.open(record["shard"])
        shards[name] = {"arrays": shard.read(), "attrs": shard.attrs.to_attrs(), "record": record}
    return shards


def test_the_attack_stage_attacks_the_rows_of_its_split(meta, fold2, attacked):
    fold_2 = np.flatnonzero(meta["fold"] == 2)
    np.testing.assert_array_equal(attacked["test"]["arrays"]["clean_index"], fold_2)
    # --limit 6: evenly spaced over the fold, first and last included (i·11/5 rounded)
    np.testing.assert_array_equal(attacked["test6"]["arrays"]["clean_index"], fold_2[[0, 2, 4, 7, 9, 11]])
    # the training split is the rows the model was trained on: not its validation rows, not fold 2
    np.testing.assert_array_equal(attacked["train"]["arrays"]["clean_index"], fold2["split"].train)
    for shard in attacked.values():
        rows = shard["arrays"]["clean_index"]
        np.testing.assert_array_equal(shard["arrays"]["fold"], meta["fold"][rows])
        np.testing.assert_array_equal(shard["arrays"]["label"], meta["label"][rows])


def test_targets_follow_the_store_row_whatever_else_is_attacked(meta, attacked):
    few, every = attacked["test6"]["arrays"], attacked["test"]["arrays"]
    where = np.searchsorted(every["clean_index"], few["clean_index"])
    np.testing.assert_array_equal(few["target"], every["target"][where])
    for shard in attacked.values():
        assert not np.any(shard["arrays"]["target"] == shard["arrays"]["label"])
    # and they are not one class: a seeded draw per row
    assert len(set(every["target"].tolist())) > 1


def test_shard_numbers_are_those_of_its_inputs(store, fold2, attacked):
    ck = load_checkpoint(fold2["checkpoint"])
    for name, shard in attacked.items():
        a = shard["arrays"]
        rows = a["clean_index"]
        with store.reader() as reader:
            clean = ck.view.read(reader, rows)
        adv = torch.from_numpy(a["adversarial"])
        with torch.no_grad():
            clean_pred, pred = ck.model(clean).argmax(1).numpy(), ck.model(adv).argmax(1).numpy()
        np.testing.assert_array_equal(a["attacked"], clean_pred == a["label"], err_msg=name)
        np.testing.assert_array_equal(a["success"], a["attacked"] & (pred == a["target"]), err_msg=name)
        d = (a["adversarial"].astype(np.float64) - clean.numpy().astype(np.float64)).reshape(len(rows), -1)
        x = clean.numpy().astype(np.float64).reshape(len(rows), -1)
        np.testing.assert_allclose(a["l1"], np.abs(d).sum(1), rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(a["l2"], np.sqrt((d ** 2).sum(1)), rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(a["linf"], np.abs(d).max(1), rtol=1e-12, err_msg=name)
        with np.errstate(divide="ignore"):
            snr = np.where((d ** 2).sum(1) == 0, np.inf, 10 * np.log10((x ** 2).sum(1) / (d ** 2).sum(1)))
        np.testing.assert_allclose(a["snr_db"], snr, rtol=1e-12, err_msg=name)
        # fgsm is an L∞ attack: each fooled clip within its own minimal ε, the budget their quantile
        fooled = a["success"]
        assert np.all(a["linf"][fooled] <= a["minimal_budget"][fooled] * (1 + 1e-6))
        minimal = a["minimal_budget"][a["attacked"]]
        k = math.ceil(0.5 * minimal.size - 1e-9)
        if np.isfinite(np.sort(minimal)[k - 1]):
            assert shard["attrs"]["budget"] == np.sort(minimal)[k - 1]
            within = a["attacked"] & (a["minimal_budget"] <= shard["attrs"]["budget"])
            np.testing.assert_array_equal(a["within_budget"], within, err_msg=name)
            assert shard["attrs"]["fooling_rate"] == pytest.approx(within.sum() / a["attacked"].sum())
