"""The streaming input pipeline: same samples as in memory, sorted batch reads, extra sources."""

import pickle
from collections import Counter

import h5py
import numpy as np
import pytest
import torch

import advaudio.store as store_package
from advaudio.data import ModelSpaceSource, StoreBatches, batch_sizes, make_loader, plan_epoch, time_shift_
from advaudio.errors import ParameterError, StoreError
from advaudio.views import fit_view

BATCH = 8


@pytest.fixture(scope="module")
def rows(store):
    return store.select(exclude_folds=[5])


@pytest.fixture(scope="module")
def view(store, rows):
    return fit_view(store, "stft+chroma", rows=rows, input_size=(24, 20))


@pytest.fixture(scope="module")
def in_memory(store, view):
    """Every clip read into memory and transformed at once: the reference."""
    everything = np.arange(len(store))
    return view.transform({name: store.read(name, everything) for name in view.representations})


def _epoch(loader, dataset, epoch):
    dataset.set_epoch(epoch)
    return list(loader)


@pytest.mark.floats
def test_streaming_with_workers_returns_the_in_memory_samples(store, rows, view, in_memory):
    ds = StoreBatches(store, view, rows, batch_size=BATCH, shuffle=True, seed=3)
    loader = make_loader(ds, workers=2)
    orders = []
    for epoch in (0, 1):
        batches = _epoch(loader, ds, epoch)
        assert len(batches) == len(ds) == int(np.ceil(rows.size / BATCH))
        index = torch.cat([b["index"] for b in batches]).numpy()
        assert sorted(index.tolist()) == rows.tolist()  # each training clip exactly once
        x = torch.cat([b["x"] for b in batches])
        y = torch.cat([b["y"] for b in batches]).numpy()
        torch.testing.assert_close(x, in_memory[index], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(y, store.labels[index])
        assert all((b["source"] == 0).all() for b in batches)
        orders.append(index)
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch
    # Batches are random draws, not blocks of neighbouring clips.
    assert any(np.diff(b).max() > 1 for b in np.split(orders[0], np.arange(BATCH, rows.size, BATCH)))
    # Same seed and epoch → same batches, whatever the number of workers.
    serial = make_loader(StoreBatches(store, view, rows, batch_size=BATCH, shuffle=True, seed=3), workers=0)
    serial.dataset.set_epoch(1)
    again = torch.cat([b["index"] for b in serial]).numpy()
    np.testing.assert_array_equal(again, orders[1])


def test_each_batch_is_one_sorted_read_per_representation(store, rows, view, monkeypatch):
    reads = []
    original = store_package.FeatureReader.read_into

    def spy(self, name, indices, out):
        reads.append((name, np.asarray(indices).copy()))
        return original(self, name, indices, out)

    monkeypatch.setattr(store_package.FeatureReader, "read_into", spy)
    ds = StoreBatches(store, view, rows, batch_size=BATCH, shuffle=True, seed=0)
    loader = make_loader(ds, workers=0)
    batches = _epoch(loader, ds, 0)
    assert len(reads) == len(batches) * len(view.representations)
    for i, batch in enumerate(batches):
        for name, (read_name, indices) in zip(view.representations, reads[2 * i: 2 * i + 2]):
            assert read_name == name
            assert np.all(np.diff(indices) > 0)  # sorted, unique: chunk after chunk, in file order
            np.testing.assert_array_equal(indices, batch["index"].numpy())
    ds.close()


def test_plan_cuts_a_global_permutation_into_sorted_batches():
    rows = np.arange(100, 137)
    plan = plan_epoch(rows, 8, shuffle=True, seed=1, epoch=0)
    assert [b.rows.size for b in plan] == [8, 8, 8, 8, 5]
    assert all(np.all(np.diff(b.rows) > 0) for b in plan)
    assert sorted(np.concatenate([b.rows for b in plan]).tolist()) == rows.tolist()
    again = plan_epoch(rows, 8, shuffle=True, seed=1, epoch=0)
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(plan, again))
    fixed = plan_epoch(rows, 8, shuffle=False)
    np.testing.assert_array_equal(np.concatenate([b.rows for b in fixed]), rows)
    # Training never makes a batch of one sample (batch norm cannot use it).
    assert batch_sizes(17, 8, 0.0, drop_singleton=True)[0] == [8, 8]
    assert batch_sizes(17, 8, 0.0, drop_singleton=False)[0] == [8, 8, 1]


@pytest.fixture(scope="module")
def adversarial_file(tmp_path_factory, view):
    """A small model-space source: 30 inputs, labels, a success mask."""
    path = tmp_path_factory.mktemp("adv") / "adv.h5"
    rng = np.random.default_rng(0)
    n = 30
    with h5py.File(path, "w") as f:
        f["adversarial"] = rng.random((n,) + view.output_shape, dtype=np.float32)
        f["label"] = rng.integers(0, 4, n)
        f["success"] = np.arange(n) % 3 != 0  # every third one failed
    return path


def test_extra_sources_are_mixed_at_the_stated_ratio(store, rows, view, adversarial_file):
    mix = 0.25
    k = round(mix * BATCH)
    ds = StoreBatches(store, view, rows, batch_size=BATCH, shuffle=True, seed=0,
                      extra_sources=[ModelSpaceSource(str(adversarial_file))], mix=mix)
    loader = make_loader(ds, workers=2)
    with h5py.File(adversarial_file, "r") as f:
        adv, labels, success = f["adversarial"][:], f["label"][:], f["success"][:]
    used = Counter()
    store_seen = []
    for epoch in range(3):
        batches = _epoch(loader, ds, epoch)
        store_seen.append(sorted(torch.cat([b["index"][b["source"] == 0] for b in batches]).tolist()))
        for b in batches:
            extra = b["source"] == 1
            n_store = int((~extra).sum())
            if n_store == BATCH - k:  # a full batch: exactly k extra samples
                assert int(extra.sum()) == k and b["x"].shape[0] == BATCH
            idx = b["index"][extra].numpy()
            assert success[idx].all()  # masked-out samples never appear
            torch.testing.assert_close(b["x"][extra], torch.from_numpy(adv[idx]))
            np.testing.assert_array_equal(b["y"][extra].numpy(), labels[idx])
            used.update(idx.tolist())
    assert all(seen == rows.tolist() for seen in store_seen)  # an epoch is still one pass over the store
    # Within an epoch the pool is dealt without replacement and re-dealt when exhausted:
    # 40 store clips at mix 0.5 take 40 extra samples, each of the 20 successful ones twice.
    half = StoreBatches(store, view, rows, batch_size=BATCH, shuffle=True, seed=0,
                        extra_sources=[ModelSpaceSource(str(adversarial_file))], mix=0.5)
    dealt = Counter()
    for i in range(len(half)):
        b = half[(0, i)]
        assert int((b["source"] == 1).sum()) == int((b["source"] == 0).sum())
        dealt.update(b["index"][b["source"] == 1].tolist())
    assert dealt == Counter({i: 2 for i in np.flatnonzero(success).tolist()})
    half.close()


def test_extra_source_checks(store, rows, view, adversarial_file, tmp_path):
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f["adversarial"] = np.zeros((4, 1, 8, 8), np.float32)
        f["label"] = np.zeros(4, np.int64)
    with pytest.raises(StoreError, match="model space"):
        StoreBatches(store, view, rows, batch_size=BATCH, extra_sources=[ModelSpaceSource(str(wrong))], mix=0.5)
    with pytest.raises(ParameterError):
        StoreBatches(store, view, rows, batch_size=BATCH, mix=0.5)
    # No mask dataset: every row is used.
    keep, labels = ModelSpaceSource(str(wrong)).index()
    assert keep.tolist() == [0, 1, 2, 3]
    keep, _ = ModelSpaceSource(str(adversarial_file)).index()
    assert keep.size == 20


def test_time_shift_is_a_seeded_circular_roll(store, rows, view, in_memory):
    ds = StoreBatches(store, view, rows, batch_size=BATCH, shuffle=True, seed=5, time_shift=0.5)
    first = ds[(0, 0)]
    again = StoreBatches(store, view, rows, batch_size=BATCH, shuffle=True, seed=5, time_shift=0.5)[(0, 0)]
    torch.testing.assert_close(first["x"], again["x"], rtol=0, atol=0)  # reproducible
    width = view.output_shape[2]
    rolled = 0
    for x, i in zip(first["x"], first["index"]):
        clean = in_memory[int(i)]
        matches = [s for s in range(width) if torch.allclose(torch.roll(clean, s, dims=-1), x, atol=1e-6)]
        assert matches, "every sample is a circular roll of the clean one"
        rolled += matches[0] != 0
    assert rolled > 0
    g = torch.Generator().manual_seed(0)
    x = torch.arange(10.0).repeat(3, 1, 1, 1)
    assert torch.equal(time_shift_(x.clone(), 0.0, g), x)


def test_dataset_pickles_without_file_handles(store, rows, view):
    ds = StoreBatches(store, view, rows, batch_size=BATCH)
    first = ds[0]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(ds))  # h5py handles cannot be pickled: they are dropped
    assert clone._reader is None and clone._shard_files == {}
    torch.testing.assert_close(clone[0]["x"], first["x"])
    ds.close()
