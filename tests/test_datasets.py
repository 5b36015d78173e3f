"""Dataset readers on small trees built here, the real ESC-10 copy, and synthetic data."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from advaudio.datasets import (
    DATASETS,
    SYNTHETIC_CLASSES,
    Clip,
    ClipTable,
    load_clip,
    read_dataset,
    synthesize,
)
from advaudio.errors import DatasetError, ParameterError

ESC10_COPY = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc10"
if not ESC10_COPY.is_dir():
    ESC10_COPY = Path("/work/shared/data/esc10")


# --------------------------------------------------------------------------- helpers


def write_tone(path, *, sr=8000, seconds=0.1, freq=440.0, channels=1, subtype=None, fmt=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.stack([x * (c + 1) / channels for c in range(channels)], axis=1)
    sf.write(path, x, sr, subtype=subtype, format=fmt)
    return path


def write_csv(path, header, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


ESC50_HEADER = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
# (filename, fold, target, category, esc10): targets 0, 1, 10 so labels must be remapped
# under esc10_only; rows deliberately out of order.
ESC50_ROWS = [
    ("2-300-A-10.wav", 2, 10, "rain", "True"),
    ("1-100-A-0.wav", 1, 0, "dog", "True"),
    ("1-200-A-1.wav", 1, 1, "rooster", "False"),
    ("2-100-B-0.wav", 2, 0, "dog", "True"),
    ("1-300-A-10.wav", 1, 10, "rain", "True"),
]


def make_esc50(root):
    for name, *_ in ESC50_ROWS:
        write_tone(root / "audio" / name, sr=44100, seconds=0.05)
    rows = [(n, f, t, c, e, n.split("-")[1], n.split("-")[2]) for n, f, t, c, e in ESC50_ROWS]
    write_csv(root / "meta" / "esc50.csv", ESC50_HEADER, rows)
    return root


US8K_HEADER = ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"]
# (name, fold, classID, class, sr, channels, subtype): the formats UrbanSound8K mixes.
US8K_ROWS = [
    ("100-3-0-0.wav", 1, 3, "dog_bark", 44100, 1, "PCM_16"),
    ("101-3-0-1.wav", 10, 3, "dog_bark", 48000, 2, "PCM_24"),
    ("102-0-0-0.wav", 1, 0, "air_conditioner", 8000, 1, "PCM_U8"),
    ("103-0-1-0.wav", 5, 0, "air_conditioner", 22050, 2, "PCM_U8"),
    ("104-8-0-0.wav", 5, 8, "siren", 96000, 1, "FLOAT"),
    ("105-8-0-3.wav", 10, 8, "siren", 11025, 2, "PCM_32"),
]


def make_us8k(root):
    for name, fold, _, _, sr, ch, sub in US8K_ROWS:
        path = root / "audio" / f"fold{fold}" / name
        write_tone(path, sr=sr, channels=ch, subtype=sub, seconds=0.2)
    rows = [(n, n.split("-")[0], 0.0, 0.2, 1, f, c, k) for n, f, c, k, *_ in US8K_ROWS]
    write_csv(root / "metadata" / "UrbanSound8K.csv", US8K_HEADER, rows)
    return root


def make_esc10(root):
    # Class order must follow NNN, not the names (Zebra before Apple).
    for d, names in {
        "001 - Zebra": ["1-10-A.ogg", "2-11-A.ogg", "3-12-B.ogg"],
        "002 - Apple": ["1-20-A.ogg", "3-21-A.ogg"],
        "010 - Mango": ["5-30-A.ogg"],
    }.items():
        for n in names:
            write_tone(root / d / n, sr=22050, seconds=0.1)
    (root / "README.md").write_text("not a class folder\n")
    (root / "001 - Zebra" / "notes.txt").write_text("ignored\n")
    return root


def centroid(y, sr):
    spec = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / sr)
    return float((freqs * spec).sum() / spec.sum())


def error_of(exc_type, fn, *args, **kw):
    with pytest.raises(exc_type) as info:
        fn(*args, **kw)
    return str(info.value)


# --------------------------------------------------------------------------- ESC-50


def test_esc50_table(tmp_path):
    root = make_esc50(tmp_path / "ESC-50")
    table = read_dataset("esc50", root=root)
    assert isinstance(table, ClipTable) and table.dataset == "esc50"
    assert table.classes == ("dog", "rooster", "rain")  # by target 0, 1, 10
    assert table.folds == (1, 2, 3, 4, 5) and table.duration == 5.0
    assert [(c.clip_id, c.label, c.fold) for c in table.clips] == [
        ("1-100-A-0", 0, 1),
        ("1-200-A-1", 1, 1),
        ("1-300-A-10", 2, 1),
        ("2-100-B-0", 0, 2),
        ("2-300-A-10", 2, 2),
    ]
    assert all(os.path.isabs(c.path) and os.path.isfile(c.path) for c in table.clips)
    assert table.class_name(table.clips[2]) == "rain"
    assert len(table) == 5

    y = load_clip(table, table.clips[0], sr=8000)
    assert y.dtype == np.float32 and y.shape == (40000,)  # padded to 5 s at 8 kHz

    items = table.fingerprint_items()
    json.dumps(items)
    size = (root / "audio" / "1-100-A-0.wav").stat().st_size
    assert items[0] == ["audio/1-100-A-0.wav", size, 0, 1]


def test_esc50_esc10_only(tmp_path):
    root = make_esc50(tmp_path)
    table = read_dataset("esc50", root=root, esc10_only=True)
    assert table.classes == ("dog", "rain")  # targets 0 and 10 renumbered 0 and 1
    assert sorted((c.clip_id, c.label) for c in table.clips) == [
        ("1-100-A-0", 0), ("1-300-A-10", 1), ("2-100-B-0", 0), ("2-300-A-10", 1)
    ]
    assert table.options == {"esc10_only": True}


def test_esc50_metadata_errors(tmp_path):
    root = make_esc50(tmp_path / "esc")
    meta = root / "meta" / "esc50.csv"

    # Missing column.
    with open(meta, newline="") as f:
        rows = [r[:-1] for r in csv.reader(f)][1:]
    write_csv(meta, ESC50_HEADER[:-1], rows)
    msg = error_of(DatasetError, read_dataset, "esc50", root=root)
    assert str(meta) in msg and "take" in msg

    # Non-integer fold.
    rows = [(n, f, t, c, e, "x", "A") for n, f, t, c, e in ESC50_ROWS]
    rows[1] = (rows[1][0], "one", *rows[1][2:])
    write_csv(meta, ESC50_HEADER, rows)
    msg = error_of(DatasetError, read_dataset, "esc50", root=root)
    assert str(meta) in msg and "line 3" in msg and "'one'" in msg

    # Fold out of range.
    rows = [(n, f, t, c, e, "x", "A") for n, f, t, c, e in ESC50_ROWS]
    rows[0] = (rows[0][0], 7, *rows[0][2:])
    write_csv(meta, ESC50_HEADER, rows)
    assert "fold 7" in error_of(DatasetError, read_dataset, "esc50", root=root)

    # Missing CSV.
    meta.unlink()
    msg = error_of(DatasetError, read_dataset, "esc50", root=root)
    assert str(meta) in msg and "not found" in msg

    # Missing root.
    missing = tmp_path / "nowhere"
    assert str(missing) in error_of(DatasetError, read_dataset, "esc50", root=missing)


def test_esc50_missing_audio_listed(tmp_path):
    root = make_esc50(tmp_path)
    gone = [root / "audio" / "1-200-A-1.wav", root / "audio" / "2-300-A-10.wav"]
    for p in gone:
        p.unlink()
    msg = error_of(DatasetError, read_dataset, "esc50", root=root)
    assert "2 file(s)" in msg and all(str(p) in msg for p in gone)
    assert str(root / "meta" / "esc50.csv") in msg


# --------------------------------------------------------------------------- UrbanSound8K


def test_urbansound8k_mixed_formats(tmp_path):
    root = make_us8k(tmp_path / "UrbanSound8K")
    table = read_dataset("urbansound8k", root=root)
    assert table.classes == ("air_conditioner", "dog_bark", "siren")  # by classID 0, 3, 8
    assert table.folds == tuple(range(1, 11)) and table.duration == 4.0
    assert [(c.clip_id, c.label, c.fold) for c in table.clips] == [
        ("102-0-0-0", 0, 1),
        ("100-3-0-0", 1, 1),
        ("103-0-1-0", 0, 5),
        ("104-8-0-0", 2, 5),
        ("101-3-0-1", 1, 10),
        ("105-8-0-3", 2, 10),
    ]
    assert table.clips[0].path == str(root.resolve() / "audio" / "fold1" / "102-0-0-0.wav")
    # Every format decodes to 4 s at the target rate, with the 0.2 s tone at the start.
    for clip in table.clips:
        y = load_clip(table, clip, sr=8000)
        assert y.shape == (32000,) and y.dtype == np.float32
        assert np.max(np.abs(y[:1500])) > 0.2 and not np.any(y[1700:])


def test_urbansound8k_errors(tmp_path):
    root = make_us8k(tmp_path)
    meta = root / "metadata" / "UrbanSound8K.csv"
    (root / "audio" / "fold5" / "104-8-0-0.wav").unlink()
    msg = error_of(DatasetError, read_dataset, "urbansound8k", root=root)
    assert str(root / "audio" / "fold5" / "104-8-0-0.wav") in msg

    write_csv(meta, [h for h in US8K_HEADER if h != "classID"], [])
    msg = error_of(DatasetError, read_dataset, "urbansound8k", root=root)
    assert str(meta) in msg and "classID" in msg


def test_subset_and_unknown_fold(tmp_path):
    table = read_dataset("urbansound8k", root=make_us8k(tmp_path))
    sub = table.subset(folds=[10, 1])
    assert sub.folds == (1, 10)
    assert {c.clip_id for c in sub.clips} == {"102-0-0-0", "100-3-0-0", "101-3-0-1", "105-8-0-3"}
    assert sub.classes == table.classes and sub.options["subset"] == {"folds": [1, 10]}
    assert len(table.subset(folds=[7])) == 0  # a valid fold, empty in this tiny copy

    msg = error_of(DatasetError, table.subset, folds=[11])
    assert "fold 11" in msg and "1, 2" in msg and "10" in msg
    msg = error_of(DatasetError, sub.subset, folds=[5])
    assert "fold 5" in msg
    with pytest.raises(ParameterError):
        table.subset(limit_per_class=0)


# --------------------------------------------------------------------------- ESC-10 layout


def test_esc10_layout(tmp_path):
    root = make_esc10(tmp_path / "ESC-10")
    table = read_dataset("esc10", root=root)
    assert table.classes == ("Zebra", "Apple", "Mango")
    assert table.folds == (1, 2, 3, 4, 5) and table.duration == 5.0
    assert [(c.clip_id, c.label, c.fold) for c in table.clips] == [
        ("1-10-A", 0, 1),
        ("1-20-A", 1, 1),
        ("2-11-A", 0, 2),
        ("3-12-B", 0, 3),
        ("3-21-A", 1, 3),
        ("5-30-A", 2, 5),
    ]
    assert table.fingerprint_items()[0][0] == "001 - Zebra/1-10-A.ogg"
    assert load_clip(table, table.clips[0], sr=8000).shape == (40000,)


def test_esc10_errors(tmp_path):
    root = make_esc10(tmp_path)
    empty = root / "011 - Empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no audio here")
    msg = error_of(DatasetError, read_dataset, "esc10", root=root)
    assert str(empty) in msg and "no audio" in msg

    bad = tmp_path / "flat"
    bad.mkdir()
    assert str(bad) in error_of(DatasetError, read_dataset, "esc10", root=bad)


@pytest.mark.skipif(not ESC10_COPY.is_dir(), reason=f"ESC-10 copy not found at {ESC10_COPY}")
def test_real_esc10_copy():
    table = read_dataset("esc10", root=ESC10_COPY)
    assert len(table) == 400
    assert len(table.classes) == 10
    assert table.classes[0] == "Dog bark" and table.classes[-1] == "Fire crackling"
    assert np.bincount([c.fold for c in table.clips], minlength=6)[1:].tolist() == [80] * 5
    assert np.bincount([c.label for c in table.clips]).tolist() == [40] * 10
    assert len({c.clip_id for c in table.clips}) == 400
    y = load_clip(table, table.clips[0], sr=22050)
    assert y.shape == (110250,) and np.max(np.abs(y)) > 1e-3
    small = table.subset(limit_per_class=5)
    # Round-robin over folds: 5 clips of a class come from the 5 different folds.
    assert len(small) == 50
    assert all(
        sorted(c.fold for c in small.clips if c.label == k) == [1, 2, 3, 4, 5] for k in range(10)
    )


# --------------------------------------------------------------------------- folder


def test_folder_round_robin(tmp_path):
    root = tmp_path / "my_sounds"
    for name in ["b.wav", "a.flac", "c.ogg", "d.wav", "e.wav", "f.wav"]:
        write_tone(root / "cats" / name)
    for name in ["x.wav", "y.wav"]:
        write_tone(root / "birds" / name)
    (root / "birds" / "cover.jpg").write_bytes(b"\xff\xd8")
    (root / ".hidden").mkdir()

    table = read_dataset("folder", root=root, n_folds=3, duration=1.5)
    assert table.classes == ("birds", "cats")
    assert table.folds == (1, 2, 3) and table.duration == 1.5
    folds = {c.clip_id: (c.label, c.fold) for c in table.clips}
    assert folds == {
        "birds/x.wav": (0, 1), "birds/y.wav": (0, 2),
        "cats/a.flac": (1, 1), "cats/b.wav": (1, 2), "cats/c.ogg": (1, 3),
        "cats/d.wav": (1, 1), "cats/e.wav": (1, 2), "cats/f.wav": (1, 3),
    }
    assert table.options["fold_rule"] == "round-robin"
    assert [c.fold for c in table.clips] == sorted(c.fold for c in table.clips)
    assert load_clip(table, table.clips[0], sr=8000).shape == (12000,)


def test_folder_prefix_folds(tmp_path):
    root = tmp_path / "pref"
    for d, names in {"a": ["1-x.wav", "2-y.wav"], "b": ["4-z.wav"]}.items():
        for n in names:
            write_tone(root / d / n)
    table = read_dataset("folder", root=root)
    assert table.options["fold_rule"] == "prefix"
    assert table.folds == (1, 2, 3, 4)
    assert {c.clip_id: c.fold for c in table.clips} == {
        "a/1-x.wav": 1, "a/2-y.wav": 2, "b/4-z.wav": 4
    }

    # One file without a prefix: auto falls back to round-robin; forcing prefix fails.
    write_tone(root / "b" / "plain.wav")
    assert read_dataset("folder", root=root).options["fold_rule"] == "round-robin"
    msg = error_of(DatasetError, read_dataset, "folder", root=root, fold_rule="prefix")
    assert str(root.resolve() / "b" / "plain.wav") in msg


def test_folder_empty_class(tmp_path):
    root = tmp_path / "f"
    write_tone(root / "full" / "a.wav")
    (root / "empty").mkdir()
    msg = error_of(DatasetError, read_dataset, "folder", root=root)
    assert str(root.resolve() / "empty") in msg


# --------------------------------------------------------------------------- registry


def test_registry_errors(tmp_path):
    assert set(DATASETS) >= {"esc50", "urbansound8k", "esc10", "folder", "synthetic"}
    msg = error_of(ParameterError, read_dataset, "esc-51")
    assert "esc-51" in msg and "esc50" in msg and "synthetic" in msg
    msg = error_of(ParameterError, read_dataset, "synthetic", clips=3)
    assert "clips_per_class" in msg
    assert "root" in error_of(ParameterError, read_dataset, "esc50")


# --------------------------------------------------------------------------- synthetic


def test_synthetic_table():
    table = read_dataset(
        "synthetic", clips_per_class=4, n_classes=5, duration=0.5, seed=3, n_folds=2
    )
    assert table.classes == tuple(SYNTHETIC_CLASSES)[:5]
    assert len(table) == 20 and table.folds == (1, 2) and table.root is None
    assert table.options == {
        "clips_per_class": 4, "n_classes": 5, "duration": 0.5, "sr": 22050, "seed": 3, "n_folds": 2
    }
    c = table.clips[0]
    assert c.path == f"synthetic:{c.clip_id}" and c.clip_id == "siren/0000" and c.fold == 1
    assert [x.fold for x in table.clips if x.label == 0] == [1, 1, 2, 2]
    items = table.fingerprint_items()
    json.dumps(items)
    assert items[0][0] == "synthetic" and items[0][2]["seed"] == 3
    assert items[1] == ["siren/0000", 0, 1]
    assert len(SYNTHETIC_CLASSES) >= 5


def test_synthetic_deterministic_and_independent():
    opts = dict(clips_per_class=3, duration=0.5, seed=7)
    a = read_dataset("synthetic", **opts)
    b = read_dataset("synthetic", **opts)
    full = [load_clip(a, c, sr=22050) for c in a.clips]
    again = [load_clip(b, c, sr=22050) for c in reversed(b.clips)][::-1]
    for x, y in zip(full, again):
        np.testing.assert_array_equal(x, y)

    # One clip regenerated alone (as a worker would) equals the one from the full run.
    k = len(a.clips) // 2
    alone = synthesize(a.clips[k].path, sr=22050, duration=0.5, seed=7)
    np.testing.assert_array_equal(alone, full[k])

    # Fewer classes do not change the clips of the classes kept.
    fewer = read_dataset("synthetic", n_classes=2, **opts)
    np.testing.assert_array_equal(load_clip(fewer, fewer.clips[0], sr=22050), full[0])

    # A different seed changes every clip.
    other = read_dataset("synthetic", clips_per_class=3, duration=0.5, seed=8)
    for x, c in zip(full, other.clips):
        assert not np.allclose(x, load_clip(other, c, sr=22050))

    # Same class, different index → different clip.
    sibling = synthesize("synthetic:siren/0001", sr=22050, duration=0.5, seed=7)
    assert not np.allclose(full[0], sibling)


def test_synthetic_levels_and_classes():
    sr = 22050
    table = read_dataset("synthetic", clips_per_class=6, duration=1.0)
    cents: dict[str, list[float]] = {}
    peaks = []
    for c in table.clips:
        y = load_clip(table, c, sr=sr)
        assert y.dtype == np.float32 and y.shape == (sr,)
        assert np.all(np.isfinite(y))
        peaks.append(float(np.max(np.abs(y))))
        cents.setdefault(table.class_name(c), []).append(centroid(y, sr))
    # Realistic, varying levels; never silent.
    assert min(peaks) >= 0.099 and max(peaks) <= 0.901
    assert np.std(peaks) > 0.05
    # Low-frequency classes and bright classes do not overlap in spectral centroid.
    assert max(cents["engine"]) < min(cents["rain"])
    assert max(cents["wind"]) < min(cents["bird_chirp"])
    # ...yet clips within a class vary.
    assert all(np.std(v) > 10 for v in cents.values())


def test_synthetic_other_rates_and_errors():
    table = read_dataset("synthetic", clips_per_class=1, n_classes=1, duration=0.5)
    y8 = load_clip(table, table.clips[0], sr=8000)
    assert y8.shape == (4000,)
    # Resampled from the native rate, so the content matches: same dominant frequency band.
    y = load_clip(table, table.clips[0], sr=22050)
    assert abs(centroid(y8, 8000) - centroid(y, 22050)) < 0.35 * centroid(y, 22050)

    with pytest.raises(ParameterError):
        synthesize("synthetic:nope/0", sr=22050, duration=1.0, seed=0)
    with pytest.raises(ParameterError):
        synthesize("/some/file.wav", sr=22050, duration=1.0, seed=0)
    with pytest.raises(ParameterError):
        read_dataset("synthetic", n_classes=len(SYNTHETIC_CLASSES) + 1)
    y = synthesize(Clip("x", "synthetic:rain/5", 0, 1), sr=16000, duration=0.25, seed=1)
    assert y.shape == (4000,)
