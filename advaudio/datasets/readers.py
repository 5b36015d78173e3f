"""Dataset readers: each turns a tree on disk (or a seed) into a :class:`~advaudio.datasets.table.ClipTable`.

A reader validates the whole tree up front (root, metadata columns, fold numbers,
every listed file present) so that a broken dataset fails in seconds with a
:class:`~advaudio.errors.DatasetError` naming the path, rather than half-way
through featurization.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from advaudio.datasets import audio
from advaudio.datasets.synthetic import SYNTHETIC_CLASSES, SYNTHETIC_PREFIX
from advaudio.datasets.table import Clip, ClipTable, _clip_key
from advaudio.errors import DatasetError, ParameterError
from advaudio.validation import choice, finite_float, integer

__all__ = ["read_esc50", "read_urbansound8k", "read_esc10", "read_folder", "read_synthetic"]

#: How many missing files a DatasetError lists before summarising.
_MAX_LISTED = 5


def _require_root(root, dataset: str) -> Path:
    if root is None:
        raise ParameterError(f"dataset {dataset!r} needs a root directory")
    p = Path(root).expanduser().resolve()
    if not p.is_dir():
        raise DatasetError(f"{dataset} root {p} does not exist or is not a directory")
    return p


def _read_csv(path: Path, required: tuple[str, ...], dataset: str) -> list[tuple[int, dict]]:
    """Rows of a metadata CSV as (line number, dict), after checking the columns."""
    if not path.is_file():
        raise DatasetError(f"{dataset} metadata {path} not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames
            if not header:
                raise DatasetError(f"{dataset} metadata {path} is empty (no header)")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise DatasetError(
                    f"{dataset} metadata {path} lacks column(s) {', '.join(missing)} "
                    f"(has: {', '.join(header)})"
                )
            reader.fieldnames = header
            # Line 1 is the header; data rows start on line 2.
            rows = [(i + 2, row) for i, row in enumerate(reader)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"{dataset} metadata {path} is not a readable CSV: {e}") from None
    if not rows:
        raise DatasetError(f"{dataset} metadata {path} has no rows")
    return rows


def _int_field(row: dict, col: str, path: Path, line: int) -> int:
    value = (row.get(col) or "").strip()
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"{path} line {line}: {col} {value!r} is not an integer") from None


def _str_field(row: dict, col: str, path: Path, line: int) -> str:
    value = (row.get(col) or "").strip()
    if not value:
        raise DatasetError(f"{path} line {line}: {col} is empty")
    return value


def _check_fold(fold: int, folds: tuple[int, ...], where: str) -> None:
    if fold not in folds:
        raise DatasetError(f"{where}: fold {fold} is not one of {folds[0]}..{folds[-1]}")


def _check_files_exist(paths, dataset: str, source: Path) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        listed = ", ".join(str(p) for p in missing[:_MAX_LISTED])
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise DatasetError(
            f"{dataset}: {len(missing)} file(s) listed in {source} are missing: {listed}{more}"
        )


def _check_unique(clips, dataset: str, where: Path) -> None:
    seen: dict[str, str] = {}
    for c in clips:
        if c.clip_id in seen:
            raise DatasetError(
                f"{dataset}: clip id {c.clip_id!r} occurs twice under {where} "
                f"({seen[c.clip_id]} and {c.path})"
            )
        seen[c.clip_id] = c.path


def _classes_from_ids(pairs, path: Path, dataset: str) -> tuple[tuple[str, ...], dict[int, int]]:
    """Class names ordered by numeric id, and the id → label map.

    Ids need not be contiguous (ESC-10 inside ESC-50 uses 0, 1, 10, 11, …);
    labels are 0..K-1 in id order.
    """
    names: dict[int, str] = {}
    for cid, name in pairs:
        if names.setdefault(cid, name) != name:
            raise DatasetError(
                f"{path}: class id {cid} has two names, {names[cid]!r} and {name!r}"
            )
    ids = sorted(names)
    return tuple(names[i] for i in ids), {cid: k for k, cid in enumerate(ids)}


def _is_audio(p: Path) -> bool:
    """An entry named like audio. Directories, fifos and dangling links so named are kept too:
    loading them fails with a recorded reason instead of their vanishing without a word."""
    return not p.name.startswith(".") and p.suffix.lower() in audio.AUDIO_EXTENSIONS


# --------------------------------------------------------------------------- readers

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
US8K_COLUMNS = ("slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class")


def read_esc50(root, *, esc10_only: bool = False) -> ClipTable:
    """Read ESC-50: ``root/audio/*.wav`` listed in ``root/meta/esc50.csv``.

    Parameters
    ----------
    root : path
        Dataset root (the directory holding ``audio/`` and ``meta/``).
    esc10_only : bool
        Keep only rows whose ``esc10`` column is true (default False): the ESC-10
        subset, labels renumbered 0..9 in ``target`` order.

    Returns
    -------
    ClipTable
        Classes ordered by ``target``; clip id = file stem; duration 5.0 s; folds 1..5.
    """
    rootp = _require_root(root, "esc50")
    meta = rootp / "meta" / "esc50.csv"
    rows = _read_csv(meta, ESC50_COLUMNS, "esc50")
    folds = (1, 2, 3, 4, 5)
    entries = []
    for line, row in rows:
        is10 = (row.get("esc10") or "").strip().lower()
        if is10 not in ("true", "false", "1", "0"):
            raise DatasetError(f"{meta} line {line}: esc10 {row.get('esc10')!r} is not a boolean")
        if esc10_only and is10 not in ("true", "1"):
            continue
        name = _str_field(row, "filename", meta, line)
        fold = _int_field(row, "fold", meta, line)
        _check_fold(fold, folds, f"{meta} line {line}")
        target = _int_field(row, "target", meta, line)
        category = _str_field(row, "category", meta, line)
        entries.append((name, fold, target, category))
    if not entries:
        raise DatasetError(f"esc50 metadata {meta} selects no clips")
    classes, label_of = _classes_from_ids(((t, c) for _, _, t, c in entries), meta, "esc50")
    audio_dir = rootp / "audio"
    clips = [
        Clip(Path(name).stem, str(audio_dir / name), label_of[target], fold)
        for name, fold, target, _ in entries
    ]
    _check_files_exist([c.path for c in clips], "esc50", meta)
    _check_unique(clips, "esc50", meta)
    return ClipTable(
        dataset="esc50",
        root=str(rootp),
        classes=classes,
        clips=tuple(sorted(clips, key=_clip_key)),
        duration=5.0,
        folds=folds,
        options={"esc10_only": bool(esc10_only)},
    )


def read_urbansound8k(root) -> ClipTable:
    """Read UrbanSound8K: ``root/audio/fold{1..10}/*.wav`` + ``root/metadata/UrbanSound8K.csv``.

    Returns
    -------
    ClipTable
        Classes ordered by ``classID``; clip id = file stem (``fsID-classID-occ-slice``);
        duration 4.0 s (shorter slices are zero-padded); folds 1..10.
    """
    rootp = _require_root(root, "urbansound8k")
    meta = rootp / "metadata" / "UrbanSound8K.csv"
    rows = _read_csv(meta, US8K_COLUMNS, "urbansound8k")
    folds = tuple(range(1, 11))
    entries = []
    for line, row in rows:
        name = _str_field(row, "slice_file_name", meta, line)
        fold = _int_field(row, "fold", meta, line)
        _check_fold(fold, folds, f"{meta} line {line}")
        cid = _int_field(row, "classID", meta, line)
        cname = _str_field(row, "class", meta, line)
        entries.append((name, fold, cid, cname))
    classes, label_of = _classes_from_ids(((c, n) for _, _, c, n in entries), meta, "urbansound8k")
    clips = [
        Clip(Path(name).stem, str(rootp / "audio" / f"fold{fold}" / name), label_of[cid], fold)
        for name, fold, cid, _ in entries
    ]
    _check_files_exist([c.path for c in clips], "urbansound8k", meta)
    _check_unique(clips, "urbansound8k", meta)
    return ClipTable(
        dataset="urbansound8k",
        root=str(rootp),
        classes=classes,
        clips=tuple(sorted(clips, key=_clip_key)),
        duration=4.0,
        folds=folds,
        options={},
    )


_ESC10_DIR = re.compile(r"^(\d+) - (.+)$")
_FOLD_PREFIX = re.compile(r"^(\d+)-")


def read_esc10(root) -> ClipTable:
    """Read the original ESC-10 release: ``root/NNN - Class name/F-ID-T.ogg``.

    Class order follows ``NNN``; the class name is the folder name after ``" - "``;
    fold = the leading number of the file name; clip id = file stem; duration 5.0 s;
    folds 1..5. Files other than audio (README, spreadsheets) are ignored.
    """
    rootp = _require_root(root, "esc10")
    class_dirs = []
    for d in rootp.iterdir():
        m = _ESC10_DIR.match(d.name)
        if d.is_dir() and m:
            class_dirs.append((int(m.group(1)), m.group(2).strip(), d))
    if not class_dirs:
        raise DatasetError(f"esc10 root {rootp} has no 'NNN - Class name' folders")
    class_dirs.sort()
    folds = (1, 2, 3, 4, 5)
    clips = []
    for label, (_, _, d) in enumerate(class_dirs):
        files = sorted(p for p in d.iterdir() if _is_audio(p))
        if not files:
            raise DatasetError(f"esc10 class folder {d} holds no audio files")
        for p in files:
            m = _FOLD_PREFIX.match(p.name)
            if not m:
                raise DatasetError(f"esc10 file {p} does not start with a fold number ('F-ID-T')")
            fold = int(m.group(1))
            _check_fold(fold, folds, str(p))
            clips.append(Clip(p.stem, str(p), label, fold))
    _check_unique(clips, "esc10", rootp)
    return ClipTable(
        dataset="esc10",
        root=str(rootp),
        classes=tuple(name for _, name, _ in class_dirs),
        clips=tuple(sorted(clips, key=_clip_key)),
        duration=5.0,
        folds=folds,
        options={},
    )


_FOLD_RULES = ("auto", "prefix", "round-robin")


def read_folder(
    root, *, n_folds: int = 5, fold_rule: str = "auto", duration: float = 5.0
) -> ClipTable:
    """Read a generic layout with one sub-folder per class: ``root/<class>/<file>``.

    Class order = sorted folder names (hidden folders ignored); only audio files
    directly inside a class folder count (extensions in
    :data:`advaudio.datasets.audio.AUDIO_EXTENSIONS`). Clip id = ``"<class>/<file name>"``.

    Fold assignment (``fold_rule``):

    - ``"prefix"``: fold = the leading number of the file name (``F-...``, the
      ESC convention); ``folds`` = 1..max fold found.
    - ``"round-robin"``: within each class, files sorted by name get folds
      1, 2, …, ``n_folds``, 1, 2, … — deterministic and balanced per class.
    - ``"auto"`` (default): ``"prefix"`` if every file has such a prefix (with a
      fold >= 1), else ``"round-robin"``.

    Parameters
    ----------
    root : path
        Directory holding the class folders.
    n_folds : int >= 1
        Number of folds for round-robin assignment (default 5).
    fold_rule : {"auto", "prefix", "round-robin"}
        See above (default "auto"). The rule actually used is recorded in ``options``.
    duration : float > 0
        Fixed clip duration in seconds (default 5.0).
    """
    choice("fold_rule", fold_rule, _FOLD_RULES)
    n_folds = integer("n_folds", n_folds)
    duration = finite_float("duration", duration, positive=True)
    rootp = _require_root(root, "folder")
    class_dirs = sorted(
        (d for d in rootp.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: d.name,
    )
    if not class_dirs:
        raise DatasetError(f"folder root {rootp} has no class sub-folders")
    per_class = []
    for d in class_dirs:
        files = sorted((p for p in d.iterdir() if _is_audio(p)), key=lambda p: p.name)
        if not files:
            raise DatasetError(f"folder class {d} holds no audio files")
        per_class.append(files)

    def prefix_fold(p: Path) -> int | None:
        m = _FOLD_PREFIX.match(p.name)
        return int(m.group(1)) if m and int(m.group(1)) >= 1 else None

    rule = fold_rule
    if rule == "auto":
        all_prefixed = all(prefix_fold(p) is not None for files in per_class for p in files)
        rule = "prefix" if all_prefixed else "round-robin"
    clips = []
    for label, (d, files) in enumerate(zip(class_dirs, per_class)):
        for i, p in enumerate(files):
            if rule == "prefix":
                fold = prefix_fold(p)
                if fold is None:
                    raise DatasetError(
                        f"folder file {p} has no 'F-' fold prefix (fold_rule='prefix')"
                    )
            else:
                fold = i % int(n_folds) + 1
            clips.append(Clip(f"{d.name}/{p.name}", str(p), label, fold))
    if rule == "prefix":
        folds = tuple(range(1, max(c.fold for c in clips) + 1))
    else:
        folds = tuple(range(1, int(n_folds) + 1))
    return ClipTable(
        dataset="folder",
        root=str(rootp),
        classes=tuple(d.name for d in class_dirs),
        clips=tuple(sorted(clips, key=_clip_key)),
        duration=float(duration),
        folds=folds,
        options={"fold_rule": rule, "n_folds": len(folds), "duration": float(duration)},
    )


def read_synthetic(
    root=None,
    *,
    clips_per_class: int = 20,
    n_classes: int | None = None,
    duration: float = 2.0,
    sr: int = 22050,
    seed: int = 0,
    n_folds: int = 5,
) -> ClipTable:
    """The embedded synthetic dataset (no files; clips are made by :func:`synthesize`).

    Parameters
    ----------
    root : ignored
        Accepted for a uniform reader signature; the table's root is ``None``.
    clips_per_class : int >= 1
        Clips per class (default 20).
    n_classes : int in 1..len(SYNTHETIC_CLASSES) or None
        Use the first ``n_classes`` classes of :data:`SYNTHETIC_CLASSES` (default all 8).
    duration : float > 0
        Clip duration in seconds (default 2.0).
    sr : int >= 1000
        Sampling rate in Hz at which clips are generated (default 22050).
    seed : int >= 0
        Dataset seed (default 0).
    n_folds : int >= 1
        Folds; clip ``index`` goes to fold ``index % n_folds + 1`` (default 5).

    Returns
    -------
    ClipTable
        Clip ids ``"<class>/<index:04d>"``, paths ``"synthetic:<class>/<index:04d>"``.
    """
    clips_per_class = integer("clips_per_class", clips_per_class)
    n_folds = integer("n_folds", n_folds)
    seed = integer("seed", seed, minimum=0)
    sr = integer("sr", sr, minimum=1000)
    n_classes = integer("n_classes", len(SYNTHETIC_CLASSES) if n_classes is None else n_classes)
    if n_classes > len(SYNTHETIC_CLASSES):
        raise ParameterError(f"n_classes must be <= {len(SYNTHETIC_CLASSES)}, got {n_classes}")
    duration = finite_float("duration", duration, positive=True)
    classes = tuple(list(SYNTHETIC_CLASSES)[:n_classes])
    clips = [
        Clip(f"{cls}/{i:04d}", f"{SYNTHETIC_PREFIX}{cls}/{i:04d}", label, i % n_folds + 1)
        for label, cls in enumerate(classes)
        for i in range(clips_per_class)
    ]
    return ClipTable(
        dataset="synthetic",
        root=None,
        classes=classes,
        clips=tuple(sorted(clips, key=_clip_key)),
        duration=float(duration),
        folds=tuple(range(1, n_folds + 1)),
        options={
            "clips_per_class": clips_per_class,
            "n_classes": n_classes,
            "duration": float(duration),
            "sr": sr,
            "seed": seed,
            "n_folds": n_folds,
        },
    )
