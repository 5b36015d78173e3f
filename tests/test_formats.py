"""Every on-disk format through its owner: written, reopened, every field read back.

Owners: feature shards, ``store.h5`` and ``manifest.json`` (:mod:`advaudio.store.feature_store`),
adversarial shards (:mod:`advaudio.store.adversarial`), run-file names (:mod:`advaudio.layout`).
"""

import json
import math

import h5py
import numpy as np
import pytest

from advaudio import layout
from advaudio import store as st
from advaudio.errors import StoreError

SHAPES = {"stft": (6, 5), "chroma": (3, 5)}


def _features(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal((n,) + s).astype(np.float32) for k, s in SHAPES.items()}


def _write_shard(directory, index: int, start: int, n: int, *, errors=()):
    rows = np.arange(start, start + n)
    features = _features(n, seed=index)
    sha = st.write_feature_shard(
        directory / st.SHARD_DIR / st.shard_name(index),
        index=rows, clip_id=[f"clip-{r}" for r in rows], label=rows % 2, fold=1 + rows % 3,
        clip_path=[f"/audio/{r}.wav" for r in rows], features=features, errors=list(errors),
        compression=None, attrs={"fingerprint": "abc123", "shard": index, "start": start},
    )
    return rows, features, sha


def test_feature_shard_round_trip(tmp_path):
    (tmp_path / st.SHARD_DIR).mkdir()
    rows, features, sha = _write_shard(tmp_path, 3, 10, 4, errors=[(14, "clip-14", "/audio/14.wav", "silent")])
    path = tmp_path / st.SHARD_DIR / "shard-00003.h5"
    assert path.is_file() and not list(tmp_path.glob("shards/*.tmp*"))
    assert sha == st.sha256_file(path)
    summary = st.read_shard_summary(path)
    assert summary["clips"] == 4
    np.testing.assert_array_equal(summary["index"], rows)
    assert summary["shapes"] == SHAPES
    assert summary["errors"] == [(14, "clip-14", "/audio/14.wav", "silent")]
    assert {k: (v.item() if isinstance(v, np.generic) else v) for k, v in summary["attrs"].items()} == \
        {"fingerprint": "abc123", "shard": 3, "start": 10}
    with h5py.File(path, "r") as f:  # the public layout, with plain h5py
        assert [s.decode() for s in f["meta/clip_id"][:]] == [f"clip-{r}" for r in rows]
        assert [s.decode() for s in f["meta/path"][:]] == [f"/audio/{r}.wav" for r in rows]
        np.testing.assert_array_equal(f["meta/label"][:], rows % 2)
        np.testing.assert_array_equal(f["meta/fold"][:], 1 + rows % 3)
        for name, data in features.items():
            assert f[f"features/{name}"].chunks == (1,) + SHAPES[name]  # one chunk per clip
            np.testing.assert_array_equal(f[f"features/{name}"][:], data)


def test_master_file_and_manifest_round_trip(tmp_path):
    (tmp_path / st.SHARD_DIR).mkdir()
    rows_a, feats_a, sha_a = _write_shard(tmp_path, 0, 0, 3)
    rows_b, feats_b, sha_b = _write_shard(tmp_path, 1, 3, 2, errors=[(5, "bad", "/audio/bad.wav", "unreadable")])
    files = [f"{st.SHARD_DIR}/{st.shard_name(i)}" for i in (0, 1)]
    config = {"features": {"sr": 22050}, "storage": {"compression": None}}
    manifest = {"fingerprint": "abc123", "dataset": "unit", "clips": 6,
                "shards": [{"file": files[0], "clips": 3, "sha256": sha_a}, {"file": files[1], "clips": 2, "sha256": sha_b}],
                "errors": [{"index": 5, "clip_id": "bad", "path": "/audio/bad.wav", "reason": "unreadable"}]}
    attrs = {"classes": json.dumps(["dog", "rain"]), "config": json.dumps(config), "fingerprint": "abc123",
             "dataset": "unit", "format_version": st.FORMAT_VERSION, "representations": json.dumps(list(SHAPES))}
    master = st.link_master(tmp_path, files, attrs=attrs, manifest=manifest, representations=list(SHAPES))
    assert master == tmp_path / st.MASTER_NAME
    assert json.loads((tmp_path / st.MANIFEST_NAME).read_text()) == manifest

    store = st.Store(tmp_path)
    assert st.Store(master).directory == tmp_path  # the master file names its store too
    assert (store.classes, store.config, store.fingerprint, store.dataset) == (["dog", "rain"], config, "abc123", "unit")
    assert store.manifest == manifest and len(store) == 5 and store.num_classes == 2
    rows = np.concatenate([rows_a, rows_b])
    np.testing.assert_array_equal(store.index, rows)
    assert store.clip_ids.tolist() == [f"clip-{r}" for r in rows]
    assert store.paths.tolist() == [f"/audio/{r}.wav" for r in rows]
    np.testing.assert_array_equal(store.labels, rows % 2)
    np.testing.assert_array_equal(store.folds, 1 + rows % 3)
    assert store.errors == manifest["errors"]
    assert store.representations == {n: st.StoredRepresentation(n, s, "float32", None) for n, s in SHAPES.items()}
    with h5py.File(master, "r") as f:
        assert int(f.attrs["format_version"]) == st.FORMAT_VERSION
        assert json.loads(f.attrs["representations"]) == list(SHAPES)
        assert all(f[f"features/{n}"].is_virtual for n in SHAPES)  # linked, not copied
    for name in SHAPES:
        expected = np.concatenate([feats_a[name], feats_b[name]])
        np.testing.assert_array_equal(store.read(name), expected)
        with store.reader() as reader:  # the store's own reader resolves the shards
            out = np.empty((2,) + SHAPES[name], np.float32)
            np.testing.assert_array_equal(reader.read_into(name, np.array([1, 4]), out), expected[[1, 4]])
    assert store.verify() == []
    damaged = bytearray((tmp_path / files[1]).read_bytes())
    damaged[-1] ^= 0xFF
    (tmp_path / files[1]).write_bytes(bytes(damaged))
    assert store.verify() == [f"checksum mismatch: {files[1]}"]


def _shard_arrays(n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "adversarial": rng.random((n, 1, 6, 5), dtype=np.float32),
        "clean_index": np.arange(10, 10 + n, dtype=np.int64),
        "clip_id": np.asarray([f"clip-{i}" for i in range(n)], dtype=object),
        "fold": np.full(n, 2, np.int64),
        "label": np.arange(n, dtype=np.int64) % 2,
        "target": np.full(n, -1, np.int64),
        "predicted": np.ones(n, np.int64),
        "attacked": np.array([True, True, False, True][:n]),
        "success": np.array([True, False, False, True][:n]),
        "within_budget": np.array([True, False, False, False][:n]),
        **{k: rng.random(n) for k in ("l1", "l2", "linf", "snr_db")},
    }


SHARD_ATTRS = {
    "attack": "pgd", "attack_config": {"name": "pgd", "steps": 20, "epsilon": 0.03}, "kind": "fixed-budget",
    "norm": "linf", "budget": 0.03, "fooling_rate": 0.92, "threshold": 0.9, "targeted": True, "round": 1,
    "split": "train", "slice": [0, 1], "checkpoint": "/runs/r/round01/checkpoint.pt", "checkpoint_sha256": "ab" * 32,
    "store_fingerprint": "abc123", "view": {"name": "stft", "shapes": [[6, 5]]}, "test_fold": 5, "seed": 0,
    "versions": {"advaudio": "0", "torch": "2"}, "notes": [{"code": "note", "text": "a note"}],
    "merged_from": [{"slice": [0, 2], "budget": None}], "slice_budgets": [0.03, 0.02], "budget_source": "quantile",
}


def test_adversarial_shard_round_trip(tmp_path):
    arrays = _shard_arrays()
    path = st.write_adversarial_shard(tmp_path, "round01-train-abababab01-pgd", arrays=arrays, attrs=SHARD_ATTRS)
    assert path == st.shard_path(tmp_path, "round01-train-abababab01-pgd") == tmp_path / "adversarial" / f"{path.stem}.h5"
    assert st.shard_paths(tmp_path) == [path]
    shard = st.AdversarialShard.open(path)
    assert shard.name == path.stem and shard.size == 4
    assert set(shard.datasets) == set(arrays)
    assert shard.attrs.to_attrs() == SHARD_ATTRS  # every attribute back as the value written, JSON decoded
    assert shard.attrs.targeted is True and shard.attrs.round == 1 and shard.attrs.slice == (0, 1)
    back = shard.read()
    for key, value in arrays.items():
        assert back[key].dtype == value.dtype, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    rows = shard.read(["clean_index", "clip_id"], rows=[1, 3])
    assert rows["clean_index"].tolist() == [11, 13] and rows["clip_id"].tolist() == ["clip-1", "clip-3"]
    with h5py.File(path, "r") as f:  # public format: per-sample chunks, JSON attributes
        assert f["adversarial"].chunks == (1, 1, 6, 5)
        assert json.loads(f.attrs["attack_config"]) == SHARD_ATTRS["attack_config"]
    assert shard.verify() == st.sha256_file(path) == st.AdversarialShard.recorded_sha256(path)
    with pytest.raises(StoreError, match="no dataset 'missing'"):
        shard.read(["missing"])


def test_adversarial_shard_checksum_and_registration(tmp_path):
    path = st.write_adversarial_shard(tmp_path, "s", arrays=_shard_arrays(), attrs={"attack": "cw"})
    (path.parent / "t.h5.tmp-123").write_bytes(b"")  # a killed writer's temporary is never a shard
    assert st.shard_paths(tmp_path) == [path]
    path.with_suffix(".sha256").write_text("0" * 64 + "\n")
    with pytest.raises(StoreError, match="checksum mismatch"):
        st.AdversarialShard.open(path).verify()
    path.with_suffix(".sha256").unlink()
    with pytest.raises(StoreError, match="no checksum file"):
        st.AdversarialShard.open(path).verify()
    for bad in ("", "a/b", ".hidden"):
        with pytest.raises(StoreError, match="invalid adversarial shard name"):
            st.write_adversarial_shard(tmp_path, bad, arrays={}, attrs={})
    with pytest.raises(StoreError, match="no adversarial shard"):
        st.AdversarialShard.open(tmp_path / "nothing.h5")


def test_decode_attr():
    assert st.decode_attr(b"pgd") == "pgd" and st.decode_attr(np.int64(3)) == 3
    assert st.decode_attr(np.bool_(True)) is True and math.isnan(st.decode_attr(np.float64("nan")))
    assert st.decode_attr('{"a": [1, NaN]}')["a"][0] == 1 and st.decode_attr("[0, 4]") == [0, 4]
    assert st.decode_attr("[not json") == "[not json"


def test_check_same_store(tmp_path):
    class Fake:  # only what the check reads
        fingerprint, directory = "abc123", tmp_path

    st.check_same_store(Fake(), "abc123", what="checkpoint c.pt")
    with pytest.raises(StoreError, match=r"checkpoint c.pt was made from store 0ff, not from .* \(store fingerprint abc123\)"):
        st.check_same_store(Fake(), "0ff", what="checkpoint c.pt")


def test_run_layout_names_round_trip(tmp_path):
    assert layout.round_dir(tmp_path, 0) == tmp_path and layout.round_dir(tmp_path, 2) == tmp_path / "round02"
    assert layout.checkpoint_path(tmp_path, round=1) == tmp_path / "round01" / "checkpoint.pt"
    assert layout.metrics_path(tmp_path) == tmp_path / "metrics.json"
    assert layout.attack_results_path(tmp_path, round=2, split="test") == tmp_path / "round02" / "attack-round02-test.json"
    assert layout.round_of_directory("round01") == 1 and layout.round_of_directory("Round-3") == 3
    assert layout.round_of_directory("run") is None
    for sl in (None, (2, 4)):
        name = layout.attack_results_name(round=3, split="train", slice=sl)
        assert layout.parse_attack_results_name(name) == layout.AttackResultsName(3, "train", sl)
        stem = layout.shard_stem(round=3, split="test", checkpoint_sha="0123456789abcdef", attack="hop-skip", slice=sl)
        assert layout.parse_shard_stem(stem) == layout.ShardStem(3, "test", "0123456789", "hop-skip", sl)
    assert layout.attack_results_name(round=0, split="test") == "attack-round00-test.json"
    assert layout.attack_results_name(round=1, split="train", slice=(0, 3)) == "attack-round01-train-slice000of003.json"
    assert layout.shard_stem(round=0, split="test", checkpoint_sha="0123456789abcdef", attack="cw",
                             slice=(1, 2)) == "round00-test-0123456789-cw-slice001of002"
    assert tmp_path.joinpath(layout.attack_results_name(round=1, split="train", slice=(0, 3))).match(
        layout.slice_results_glob(round=1, split="train"))
    assert layout.parse_attack_results_name("report.json") is None and layout.parse_shard_stem("x") is None


def test_path_command_prints_the_layout(tmp_path):
    from click.testing import CliRunner

    from advaudio.cli import cli

    def path(*args):
        result = CliRunner().invoke(cli, ["path", *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.output.strip()

    assert path("round-dir", tmp_path, 2) == str(layout.round_dir(tmp_path, 2))
    assert path("checkpoint", tmp_path, "--round", 1) == str(layout.checkpoint_path(tmp_path, round=1))
    assert path("metrics", tmp_path) == str(layout.metrics_path(tmp_path))
    assert path("attack-results", tmp_path, "--round", 3, "--split", "train") == \
        str(layout.attack_results_path(tmp_path, round=3, split="train"))
