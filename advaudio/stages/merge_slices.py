"""The slices of a job-array attack as one set (:mod:`advaudio.stages.merge`'s file side):
finding a round's slice shards and results in the store, checking that they form one complete,
consistent set (same checkpoint, store, view, attack configuration, threshold, limit, seed), and
the stage options each slice ran with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advaudio import layout
from advaudio import store as st
from advaudio.errors import DamagedFileError, StoreError
from advaudio.stages.attack import AttackStageConfig
from advaudio.store.results import AttackRecord, AttackResults, read_attack_results

__all__ = ["FREE_CONFIG", "SAME_ATTRS", "Slice", "attach_results", "budget_value", "check_consistent", "check_shard",
           "complete_set", "discover_slices", "run_options", "same_value", "stage_config"]

#: Attributes (fields of :class:`advaudio.store.ShardAttrs`) every slice of one set must share.
SAME_ATTRS = ("attack", "attack_config", "kind", "norm", "threshold", "targeted", "round", "split",
               "checkpoint_sha256", "store_fingerprint", "view", "test_fold", "seed")
#: Keys of the stage configuration that may differ between slices (they do not change the set's rows or values).
FREE_CONFIG = ("slice", "attacks", "batch_size")


@dataclass
class Slice:
    index: int
    count: int
    path: Path | None = None  # None: the slice attacked no clip and wrote no shard
    attrs: st.ShardAttrs | None = None  # its shard's attributes
    sha256: str | None = None
    record: AttackRecord | None = None  # its results record of this attack
    document: AttackResults | None = None  # its results file
    results_path: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def empty(self) -> bool:
        return self.path is None


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def budget_value(value: float | None) -> float:
    """A recorded budget as a number (a record's null, a shard's NaN: NaN)."""
    return float(value) if value is not None else math.nan


# --------------------------------------------------------------------------- discovery


def discover_slices(store: st.Store, *, round: int, split: str, checkpoint_sha: str | None, attack: str | None,
              results_dir: Path | None) -> dict[tuple[str, str], dict[tuple[int, int], Slice]]:
    """Slices of (round, split) by (checkpoint sha10, attack), then by (index, count).

    Slices with a shard are found in the store; slices that attacked no clip
    (no shard) through their results files in ``results_dir`` (default: the
    directories of the checkpoints the found shards name).
    """
    groups: dict[tuple[str, str], dict[tuple[int, int], Slice]] = {}

    def wanted(sha10: str, name: str) -> bool:
        return (not checkpoint_sha or sha10.startswith(checkpoint_sha[:10])) and (attack is None or name == attack)

    result_dirs = [results_dir] if results_dir is not None else []
    for path in store.adversarial_shards():
        m = layout.parse_shard_stem(path.stem)
        if (not m or m.slice is None or m.round != round or m.split != split or m.domain != "feature"
                or not wanted(m.sha10, m.attack)):  # waveform-domain runs are not sliced (AttackStageConfig)
            continue
        attrs = st.AdversarialShard.open(path).attrs
        key = m.slice
        groups.setdefault((m.sha10, m.attack), {})[key] = Slice(key[0], key[1], path=path, attrs=attrs)
        if results_dir is None:
            directory = Path(attrs.checkpoint or ".").parent
            if directory not in result_dirs:
                result_dirs.append(directory)
    for directory in result_dirs:
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob(layout.slice_results_glob(round=round, split=split))):
            m = layout.parse_attack_results_name(path.name)
            if not m or m.slice is None or m.round != round or m.split != split:
                continue
            key = m.slice
            try:
                doc = read_attack_results(path)
            except DamagedFileError as exc:  # never skipped: its slice would look missing
                raise StoreError(f"{exc}; rerun slice {key[0]}/{key[1]}, or remove the file if it is not "
                                 "this set's") from None
            if doc.store_fingerprint != store.fingerprint:
                continue  # an attack on another store
            sha10 = (doc.checkpoint_sha256 or "")[:10]
            for rec in doc.records:
                if rec.shard or not wanted(sha10, rec.attack):
                    continue
                group = groups.setdefault((sha10, rec.attack), {})
                if key not in group:  # a slice whose attack wrote no shard
                    group[key] = Slice(key[0], key[1], record=rec, document=doc, results_path=path)
    return groups


def complete_set(sha: str, attack: str, found: dict[tuple[int, int], Slice], *, store: st.Store, round: int,
                  split: str) -> list[Slice]:
    counts = sorted({n for _, n in found})
    where = f"{attack} (round {round}, {split} split, checkpoint {sha})"
    if len(counts) > 1:
        listing = "; ".join(f"{n} slices: " + ", ".join(f"{i}/{n}" for i, m in sorted(found) if m == n)
                            for n in counts)
        raise StoreError(f"slices of {where} come from runs split {' and '.join(map(str, counts))} ways ({listing}); "
                         f"remove the stale set's files from {store.directory / st.ADVERSARIAL_DIR} "
                         "and its attack-round*-slice*.json")
    (n,) = counts
    missing = [i for i in range(n) if (i, n) not in found]
    if missing:
        names = ", ".join(f"{i}/{n}" for i in missing)
        files = ", ".join(layout.shard_stem(round=round, split=split, checkpoint_sha=sha, attack=attack,
                                            slice=(i, n)) + ".h5" for i in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise StoreError(f"incomplete slice set for {where}: missing slice(s) {names} of {n} ({files}{more} "
                         f"not in {store.directory / st.ADVERSARIAL_DIR}); run `advaudio attack --slice I/{n}` "
                         "for them (or resubmit those array tasks), then merge again")
    return [found[(i, n)] for i in range(n)]


def check_shard(sl: Slice) -> None:
    assert sl.path is not None
    try:
        sl.sha256 = st.AdversarialShard.open(sl.path).verify()
    except StoreError as exc:
        raise StoreError(f"{exc} (rerun slice {sl.label})") from None


def attach_results(sl: Slice, results_dir: Path | None, round: int, split: str) -> None:
    """Find the results file of a slice with a shard, and its record of this attack."""
    assert sl.path is not None and sl.attrs is not None
    directory = results_dir if results_dir is not None else Path(sl.attrs.checkpoint or ".").parent
    path = directory / layout.attack_results_name(round=round, split=split, slice=(sl.index, sl.count))
    name = sl.attrs.attack
    if not path.is_file():
        raise StoreError(f"no results file {path} for slice {sl.label} of {name} ({sl.path.name}); "
                         "give the directory the slices wrote their results to (their --out) with --results-dir")
    doc = read_attack_results(path)
    if doc.checkpoint_sha256 != sl.attrs.checkpoint_sha256:
        raise StoreError(f"{path} belongs to checkpoint {str(doc.checkpoint_sha256)[:10]}, but "
                         f"{sl.path.name} to {str(sl.attrs.checkpoint_sha256)[:10]}: rerun slice {sl.label}")
    for rec in doc.records:
        if rec.attack == name and rec.shard and Path(rec.shard).name == sl.path.name:
            if not same_value(budget_value(rec.budget), budget_value(sl.attrs.budget)):
                raise StoreError(f"{path} and {sl.path.name} disagree on the budget (was slice {sl.label} "
                                 "interrupted while rerunning?): rerun it")
            sl.record, sl.document, sl.results_path = rec, doc, path
            return
    raise StoreError(f"{path} has no record of {name} for {sl.path.name}: rerun slice {sl.label}")


def stage_config(sl: Slice) -> dict[str, Any]:
    """The slice's stage configuration, in today's names (an earlier release's results file may call
    the threshold ``fooling_rate``)."""
    return AttackStageConfig.upgrade_dict(dict(sl.document.config or {}) if sl.document else {})


def run_options(sl: Slice, attack: str) -> dict[str, Any]:
    """The slice's stage options that decide this attack's rows and values."""
    config = stage_config(sl)
    options = {k: v for k, v in config.items() if k not in FREE_CONFIG}
    options["attack_params"] = (config.get("attack_params") or {}).get(attack, {})  # the other attacks' do not matter
    return options


def check_consistent(slices: list[Slice], where: str, name: str) -> None:
    def value(sl: Slice, key: str) -> Any:
        v = getattr(sl.attrs, key)
        if key == "attack_config" and isinstance(v, dict):  # a fixed-budget run's ε is its tuned budget
            v = {k: x for k, x in v.items() if k != "epsilon"}
        return v

    shards = [sl for sl in slices if not sl.empty]
    for sl in shards[1:]:
        for key in SAME_ATTRS:
            if not same_value(value(shards[0], key), value(sl, key)):
                raise StoreError(f"slices of {where} differ in {key}: slice {shards[0].label} has "
                                 f"{value(shards[0], key)!r}, slice {sl.label} has {value(sl, key)!r}; "
                                 "rerun the odd slice with the same options")
    first = slices[0]
    for sl in slices[1:]:
        for key in ("kind", "norm", "threshold"):
            if not same_value(getattr(first.record, key), getattr(sl.record, key)):
                raise StoreError(f"slices of {where} differ in {key}: slice {first.label} has "
                                 f"{getattr(first.record, key)!r}, slice {sl.label} has {getattr(sl.record, key)!r}")
        a, b = run_options(first, name), run_options(sl, name)
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise StoreError(f"slices of {where} were run with different options ({', '.join(diff)}): slice "
                             f"{first.label} {[a.get(k) for k in diff]}, slice {sl.label} {[b.get(k) for k in diff]}")
        if sl.document.checkpoint_sha256 != first.document.checkpoint_sha256:
            raise StoreError(f"slices of {where} attacked different checkpoints")
