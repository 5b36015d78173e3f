"""The checkpoint format through its owner: write, reopen, every field read back; version 1 still loads."""

import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from advaudio.errors import StoreError
from advaudio.models import create_model
from advaudio.training import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    FoldSplit,
    TrainConfig,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    set_rng_states,
)
from advaudio.training.checkpoint import content_digest
from advaudio.views import View

# save_checkpoint reads only these attributes of a Store.
STORE = SimpleNamespace(fingerprint="f" * 16, directory=Path("/stores/synthetic-ffff"), dataset="synthetic")
SPLIT = FoldSplit(train=np.arange(30), val=np.arange(30, 36), test=np.arange(36, 48), test_fold=5, val_fold=None,
                  train_folds=[1, 2, 3, 4])


def _view():
    return View(representations=("stft", "chroma"), shapes=((64, 40), (12, 40)), input_size=(32, 32),
                low=(-3.0, 0.0), high=(4.0, 1.0), percentiles=(1.0, 99.0), fitted_on={"rows": 30})


def _parts(epochs=3):
    torch.manual_seed(0)
    model = create_model("resnet18", in_channels=1, num_classes=4, width=0.125)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    config = TrainConfig(store=str(STORE.directory), view="stft+chroma", input_size=32, epochs=epochs,
                         device="cpu", provenance={"round": 1})
    return model, optimizer, scheduler, config


def test_every_field_is_written_and_read_back(tmp_path):
    model, optimizer, scheduler, config = _parts()
    view = _view()
    history = [{"epoch": 1, "train_loss": 1.5}, {"epoch": 2, "train_loss": 1.2}, {"epoch": 3, "train_loss": 1.0}]
    test = {"accuracy": 0.75, "fold": 5}
    distributed = {"world_size": 2, "backend": "gloo", "sync_batchnorm": True}
    random.seed(7)
    np.random.seed(7)
    path = save_checkpoint(tmp_path / "checkpoint.pt", model=model, view=view, classes=["a", "b", "c", "d"],
                           store=STORE, config=config, epoch=3, split=SPLIT, history=history,
                           optimizer=optimizer, scheduler=scheduler, scaler=torch.amp.GradScaler("cuda", enabled=False),
                           test=test, bn_recalibrated=True, distributed=distributed)
    expected_draws = (random.random(), float(np.random.random_sample()), float(torch.rand(1)))
    assert path == tmp_path / "checkpoint.pt" and not list(tmp_path.glob("*.tmp*"))

    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain containers only
    assert set(raw) == {"format", "format_version", "epoch", "epochs", "complete", "model", "optimizer",
                        "scheduler", "scaler", "rng", "view", "classes", "store", "train_config", "split",
                        "history", "test", "bn_recalibrated", "torch_version", "distributed", "sha256"}
    assert (raw["format"], raw["format_version"]) == (CHECKPOINT_FORMAT, CHECKPOINT_VERSION) == \
        ("advaudio-checkpoint", 1)
    assert (raw["epoch"], raw["epochs"], raw["complete"]) == (3, 3, True)
    assert raw["optimizer"]["state"] and raw["optimizer"].keys() == optimizer.state_dict().keys()
    assert raw["scheduler"] == scheduler.state_dict()
    assert raw["scaler"] == {}  # a disabled GradScaler has no state worth keeping
    assert raw["store"] == {"fingerprint": STORE.fingerprint, "path": str(STORE.directory), "dataset": "synthetic"}
    assert raw["split"] == {"train_clips": 30, "val_clips": 6, "test_clips": 12, "test_fold": 5, "val_fold": None,
                            "train_folds": [1, 2, 3, 4]}
    assert raw["bn_recalibrated"] is True and raw["torch_version"] == str(torch.__version__)
    assert raw["distributed"] == distributed
    assert set(raw["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert read_checkpoint(path).keys() == raw.keys()

    ck = load_checkpoint(path)
    assert ck.path == path and not ck.model.training
    assert ck.model.config == model.config
    state = model.state_dict()
    assert ck.model.state_dict().keys() == state.keys()
    assert all(torch.equal(ck.model.state_dict()[k], state[k]) for k in state)
    assert ck.view == view and ck.view.fitted_on == view.fitted_on
    assert ck.classes == ["a", "b", "c", "d"]
    assert (ck.store_fingerprint, ck.store_path) == (STORE.fingerprint, str(STORE.directory))
    assert ck.config == config.to_dict() and TrainConfig.from_dict(ck.config) == config
    assert (ck.epoch, ck.epochs, ck.complete) == (3, 3, True)
    assert ck.split == raw["split"] and ck.test_fold == 5
    assert ck.history == history and ck.test == test
    assert ck.raw["format"] == CHECKPOINT_FORMAT

    # The saved global RNG states restore the draws that followed the save.
    set_rng_states(ck.raw["rng"])
    assert (random.random(), float(np.random.random_sample()), float(torch.rand(1))) == expected_draws


def test_an_incomplete_checkpoint_defaults(tmp_path):
    model, _, _, config = _parts(epochs=5)
    path = save_checkpoint(tmp_path / "c.pt", model=model, view=_view(), classes=list("abcd"), store=STORE,
                           config=config, epoch=2, split=SPLIT)
    raw = read_checkpoint(path)
    assert (raw["epoch"], raw["epochs"], raw["complete"]) == (2, 5, False)
    assert raw["optimizer"] == raw["scheduler"] == raw["scaler"] == {}
    assert raw["history"] == [] and raw["test"] is None and raw["bn_recalibrated"] is False
    assert raw["distributed"] == {"world_size": 1, "backend": None, "sync_batchnorm": False}
    assert load_checkpoint(path).test_fold == 5


def test_a_version_1_file_written_by_hand_loads(tmp_path):
    """The layout the first release wrote, key by key, without save_checkpoint."""
    model, _, _, config = _parts()
    obj = {
        "format": "advaudio-checkpoint", "format_version": 1, "epoch": 1, "epochs": 3, "complete": False,
        "model": {"config": dict(model.config), "state_dict": model.state_dict()},
        "optimizer": {}, "scheduler": {}, "scaler": {}, "rng": {}, "view": _view().to_dict(),
        "classes": list("abcd"), "store": {"fingerprint": "x" * 16, "path": "/s", "dataset": "esc10"},
        "train_config": config.to_dict(), "split": {"test_fold": 4}, "history": [{"epoch": 1}], "test": None,
        "bn_recalibrated": False, "torch_version": "2.0", "distributed": {"world_size": 1},
    }
    torch.save(obj, tmp_path / "v1.pt")
    ck = load_checkpoint(tmp_path / "v1.pt")
    assert (ck.epoch, ck.complete, ck.test_fold, ck.store_fingerprint) == (1, False, 4, "x" * 16)
    assert ck.view == _view() and ck.history == [{"epoch": 1}]


def test_foreign_damaged_and_newer_files_are_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no checkpoint"):
        read_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StoreError, match="cannot read"):
        read_checkpoint(tmp_path / "junk.pt")
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    with pytest.raises(StoreError, match="not an advaudio checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(StoreError, match=f"format {CHECKPOINT_VERSION + 1}; this advaudio reads up to"):
        read_checkpoint(tmp_path / "new.pt")


def test_a_damaged_or_incomplete_checkpoint_is_refused_naming_the_file(tmp_path):
    """The digest inside the file catches flipped bytes that torch.load itself does not notice."""
    model, optimizer, scheduler, config = _parts()
    path = save_checkpoint(tmp_path / "c.pt", model=model, view=_view(), classes=list("abcd"), store=STORE,
                           config=config, epoch=3, split=SPLIT, optimizer=optimizer, test={"accuracy": 1.0})
    raw = read_checkpoint(path)
    assert raw["sha256"] == content_digest(raw) and load_checkpoint(path).complete
    # Flip 64 bytes inside a weight tensor's stored bytes (found by value, so the zip stays readable).
    data = bytearray(path.read_bytes())
    weight = next(v for k, v in raw["model"]["state_dict"].items() if v.numel() >= 64 and v.dtype == torch.float32)
    at = bytes(data).find(weight.reshape(-1)[:16].numpy().tobytes())
    assert at > 0
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(data))
    torch.load(damaged, map_location="cpu", weights_only=True)  # torch reads it without complaint …
    with pytest.raises(StoreError, match=f"checksum mismatch: checkpoint {damaged}"):
        read_checkpoint(damaged)  # … advaudio does not
    # A file without its model entry: a one-line StoreError, not a KeyError.
    obj = {k: v for k, v in raw.items() if k not in ("model", "sha256")}
    torch.save(obj, tmp_path / "nomodel.pt")
    with pytest.raises(StoreError, match="lacks 'model'"):
        load_checkpoint(tmp_path / "nomodel.pt")
    # A pickle of arbitrary objects: refused without torch's advice to unpickle it anyway.
    torch.save({"format": CHECKPOINT_FORMAT, "x": SimpleNamespace(a=1)}, tmp_path / "pickle.pt")
    with pytest.raises(StoreError, match="cannot read checkpoint") as info:
        read_checkpoint(tmp_path / "pickle.pt")
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)
