"""Merge the slices of a job-array attack into one registered adversarial set.

``advaudio attack --slice I/N`` (one task of a job array) attacks the I-th of N
contiguous parts of the clips and writes

* ``<store>/adversarial/round<K>-<split>-<sha10>-<attack>-slice<III>of<NNN>.h5``
  (+ ``.sha256``), one per attack, and
* ``<dir>/attack-round<K>-<split>-slice<III>of<NNN>.json`` (``dir``: its
  ``--out``, by default the checkpoint's directory), one per slice.

:func:`merge_slices` (``advaudio store merge``) checks that a set is complete
(slices 0..N-1 of one N) and consistent (same checkpoint, store, view, attack
configuration, threshold, limit and seed), concatenates the slices in slice
order into ONE shard with the unsliced name ``round<K>-<split>-<sha10>-<attack>.h5``
and writes ``<dir>/attack-round<K>-<split>.json``, the results file an unsliced
run writes, so ``advaudio retrain --round K``, ``advaudio rounds`` and
``advaudio report`` take the merged set like an unsliced run.

Budgets. A slice tunes its budget on its own clips.

* Minimisation attacks (deepfool, cw, ead, boundary, hopskipjump): a sample's
  minimal perturbation does not depend on the other samples, so the merge
  recomputes the budget as the quantile of the union's minimal norms
  (:func:`advaudio.attacks.quantile_budget`), ``within_budget``, the fooling
  rate, the CDF (``evaluations``) and the statistics, exactly as one run over
  all clips does. With ``--batch-size 1`` the merged set equals an unsliced
  run bit for bit; with larger batches the adversarial inputs may differ in
  the last float32 bit (CPU/GPU kernels round differently per batch size).
* Fixed-budget attacks (fgsm, bim, pgd): each slice bisects its own ε, so the
  slices' examples are made at different budgets, which one run never does.
  When every slice ended at the same ε the set merges as is; otherwise merging
  is refused unless ``allow_mixed_budgets``, which keeps every slice's
  examples at its own ε, records the per-slice budgets and takes their
  maximum as the set's budget (an upper bound on the budget one run over the
  union would find, assuming the fooling rate grows with ε), with a note.
  ``evaluations`` holds the union's fooling rate at the ε that every slice
  probed (a weighted mean of the slices' rates, exact).

Provenance. The merged shard's attributes are those of an unsliced run plus
``merged_from`` (each slice's file, sha256, budget, fooling rate and size),
``slice_budgets`` and ``budget_source``; its results record has
``merged_from`` too. Slice files stay where they are (the merge can be redone,
e.g. after one slice was rerun); the retraining stage's ``find_shards`` skips
slice shards, so a set is never trained on twice.

Idempotence. Rerunning a slice overwrites its files (no duplicates); merging
again rewrites the merged results and rewrites the merged shard only when a
slice changed. An unsliced run's shard or results file of the same set is
never replaced unless ``force``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from advaudio import store as st
from advaudio.errors import ParameterError, StoreError

__all__ = ["merge_results", "merge_slices", "results_name", "slice_results_name"]

_SLICE_STEM = re.compile(
    r"^round(?P<round>\d+)-(?P<split>test|train)-(?P<sha>[0-9a-f]{10})-(?P<attack>.+)"
    r"-slice(?P<i>\d{3,})of(?P<n>\d{3,})$"
)
_EXCLUDED_NOTE = re.compile(r"^\d+ of \d+ sample\(s\) misclassified when clean: not attacked, excluded from the rates$")
#: Attributes every slice of one set must share (values compared after JSON decoding).
_SAME_ATTRS = ("attack", "attack_config", "kind", "norm", "threshold", "targeted", "round", "split",
               "checkpoint_sha256", "store_fingerprint", "view", "test_fold", "seed")
#: Keys of the stage configuration that may differ between slices (they do not change the set's rows or values).
_FREE_CONFIG = ("slice", "attacks", "batch_size")


def results_name(round: int, split: str) -> str:
    """File name of the results JSON of an unsliced (or merged) attack run."""
    return f"attack-round{round:02d}-{split}.json"


def slice_results_name(round: int, split: str, index: int, count: int) -> str:
    return f"attack-round{round:02d}-{split}-slice{index:03d}of{count:03d}.json"


@dataclass
class _Slice:
    path: Path
    index: int
    count: int
    attrs: dict[str, Any]  # raw HDF5 attribute values (JSON strings kept as written)
    sha256: str
    record: dict[str, Any] | None = None
    document: dict[str, Any] | None = None
    results_path: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def attr(self, key: str) -> Any:
        """An attribute as a Python value (JSON strings decoded)."""
        value = self.attrs.get(key)
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and value[:1] in "[{":
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value


def _jsonable(obj: Any) -> Any:
    from advaudio.adversarial import _jsonable as jsonable

    return jsonable(obj)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


# --------------------------------------------------------------------------- discovery


def _slice_shards(store: st.Store, *, round: int, split: str, checkpoint_sha: str | None,
                  attack: str | None) -> dict[tuple[str, str], list[tuple[Path, int, int]]]:
    """Slice shard files of (round, split) grouped by (checkpoint sha10, attack), by name."""
    groups: dict[tuple[str, str], list[tuple[Path, int, int]]] = {}
    for path in store.adversarial_shards():
        m = _SLICE_STEM.match(path.stem)
        if not m or int(m["round"]) != round or m["split"] != split:
            continue
        if checkpoint_sha and not (m["sha"].startswith(checkpoint_sha[:10])):
            continue
        if attack is not None and m["attack"] != attack:
            continue
        groups.setdefault((m["sha"], m["attack"]), []).append((path, int(m["i"]), int(m["n"])))
    return groups


def _read_slice(path: Path, index: int, count: int) -> _Slice:
    sidecar = path.with_suffix(".sha256")
    if not sidecar.is_file():
        raise StoreError(f"{path} has no checksum file {sidecar.name}: not a complete attack shard")
    digest = st.sha256_file(path)
    if digest != sidecar.read_text().strip():
        raise StoreError(f"checksum mismatch: {path} (rerun slice {index}/{count})")
    with st.open_h5_read(path) as f:
        attrs = dict(f.attrs)
    return _Slice(path=path, index=index, count=count, attrs=attrs, sha256=digest)


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with st.open_h5_read(path) as f:
        for key in f:
            ds = f[key]
            value = ds[:]
            if h5py.check_string_dtype(ds.dtype) is not None:
                value = np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in value], dtype=object)
            out[key] = value
    return out


def _attach_results(sl: _Slice, results_dir: Path | None, round: int, split: str) -> None:
    """Find the slice's results JSON and its record for this attack."""
    directory = results_dir if results_dir is not None else Path(str(sl.attrs.get("checkpoint", "."))).parent
    path = directory / slice_results_name(round, split, sl.index, sl.count)
    if not path.is_file():
        raise StoreError(
            f"no results file {path} for slice {sl.label} of {sl.attr('attack')} ({sl.path.name}); "
            "give the directory the slices wrote their results to (their --out) with --results-dir"
        )
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise StoreError(f"{path} is not readable JSON ({exc})") from None
    if doc.get("checkpoint_sha256") != sl.attr("checkpoint_sha256"):
        raise StoreError(f"{path} belongs to checkpoint {str(doc.get('checkpoint_sha256'))[:10]}, but "
                         f"{sl.path.name} to {str(sl.attr('checkpoint_sha256'))[:10]}: rerun slice {sl.label}")
    for rec in doc.get("attacks") or []:
        if rec.get("attack") == sl.attr("attack") and rec.get("shard") and Path(rec["shard"]).name == sl.path.name:
            if not _same(float(rec["budget"]) if rec.get("budget") is not None else math.nan,
                         float(sl.attr("budget"))):
                raise StoreError(f"{path} and {sl.path.name} disagree on the budget (was slice {sl.label} "
                                 "interrupted while rerunning?): rerun it")
            sl.record, sl.document, sl.results_path = rec, doc, path
            return
    raise StoreError(f"{path} has no record of {sl.attr('attack')} for {sl.path.name}: rerun slice {sl.label}")


def _complete_set(sha: str, attack: str, files: list[tuple[Path, int, int]], *, store: st.Store, round: int,
                  split: str) -> list[tuple[Path, int, int]]:
    counts = sorted({n for _, _, n in files})
    where = f"{attack} (round {round}, {split} split, checkpoint {sha})"
    if len(counts) > 1:
        listing = "; ".join(f"{n} slices: " + ", ".join(p.name for p, _, m in sorted(files, key=lambda t: t[1])
                                                         if m == n) for n in counts)
        raise StoreError(f"slices of {where} come from runs split {' and '.join(map(str, counts))} ways ({listing}); "
                         f"remove the stale set's files from {store.directory / st.ADVERSARIAL_DIR}")
    (n,) = counts
    have = {i for _, i, _ in files}
    missing = [i for i in range(n) if i not in have]
    if missing:
        names = ", ".join(f"{i}/{n}" for i in missing)
        stem = f"round{round:02d}-{split}-{sha}-{attack}"
        files_missing = ", ".join(f"{stem}-slice{i:03d}of{n:03d}.h5" for i in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise StoreError(f"incomplete slice set for {where}: missing slice(s) {names} of {n} ({files_missing}{more} "
                         f"not in {store.directory / st.ADVERSARIAL_DIR}); run `advaudio attack --slice I/{n}` "
                         "for them (or resubmit those array tasks), then merge again")
    bad = [i for _, i, _ in files if i >= n]
    if bad:
        raise StoreError(f"slice index {bad[0]} out of range for {n} slices of {where}")
    return sorted(files, key=lambda t: t[1])


def _check_consistent(slices: list[_Slice], where: str) -> None:
    first = slices[0]

    def value(sl: _Slice, key: str) -> Any:
        v = sl.attr(key)
        if key == "attack_config" and isinstance(v, dict):  # a fixed-budget run's ε is its tuned budget
            v = {k: x for k, x in v.items() if k != "epsilon"}
        return v

    for sl in slices[1:]:
        for key in _SAME_ATTRS:
            if not _same(value(first, key), value(sl, key)):
                raise StoreError(f"slices of {where} differ in {key}: slice {first.label} has {value(first, key)!r}, "
                                 f"slice {sl.label} has {value(sl, key)!r}; rerun the odd slice with the same options")
        a = {k: v for k, v in (first.document or {}).get("config", {}).items() if k not in _FREE_CONFIG}
        b = {k: v for k, v in (sl.document or {}).get("config", {}).items() if k not in _FREE_CONFIG}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise StoreError(f"slices of {where} were run with different options ({', '.join(diff)}): slice "
                             f"{first.label} {[a.get(k) for k in diff]}, slice {sl.label} {[b.get(k) for k in diff]}")


# --------------------------------------------------------------------------- merging one attack


def _union_notes(slices: list[_Slice], n_excluded: int, n: int) -> list[str]:
    notes = []
    if n_excluded:
        notes.append(f"{n_excluded} of {n} sample(s) misclassified when clean: not attacked, excluded from the rates")
    per_slice = [[x for x in (sl.attr("notes") or []) if not _EXCLUDED_NOTE.match(str(x))] for sl in slices]
    order: list[str] = []
    for lst in per_slice:
        order += [x for x in lst if x not in order]
    for note in order:
        where = [sl for sl, lst in zip(slices, per_slice) if note in lst]
        if len(where) == len(slices):
            notes.append(note)
        else:
            notes += [f"slice {sl.label}: {note}" for sl in where]
    return notes


@dataclass
class _Merged:
    stem: str
    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any]
    record: dict[str, Any]


def _merge_attack(slices: list[_Slice], *, stem: str, allow_mixed_budgets: bool, where: str) -> _Merged:
    """The merged arrays, attributes and results record of one attack (nothing written)."""
    from advaudio.attacks import FIXED_BUDGET, AttackResult, quantile_budget

    first = slices[0]
    kind, norm = first.attr("kind"), first.attr("norm")
    threshold = float(first.attr("threshold"))
    parts = [_read_arrays(sl.path) for sl in slices]
    keys = list(parts[0])
    for sl, p in zip(slices, parts):
        if list(p) != keys:
            raise StoreError(f"{sl.path.name} holds datasets {sorted(p)}, slice {first.label} {sorted(keys)}")
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    sizes = [len(p["clean_index"]) for p in parts]
    total = sum(sizes)
    expected = [len(a) for a in np.array_split(np.arange(total), len(slices))]
    if sizes != expected or len(np.unique(arrays["clean_index"])) != total:
        raise StoreError(f"the slices of {where} do not partition one set of clips (sizes {sizes}, expected "
                         f"{expected} for {total} clips): were they run with different --limit or stores?")

    attacked, success = arrays["attacked"].astype(bool), arrays["success"].astype(bool)
    n_attacked = int(attacked.sum())
    n_excluded = total - n_attacked
    slice_budgets = [float(sl.attr("budget")) for sl in slices]
    records = [sl.record or {} for sl in slices]
    targets = arrays.get("target")
    result = AttackResult(
        attack=first.attr("attack"), kind=kind, norm=norm, epsilon=None, targeted=bool(first.attr("targeted")),
        target_rule=None, config=first.attr("attack_config"), adversarial=arrays["adversarial"],
        labels=arrays["label"], clean_predicted=arrays["predicted"], predicted=arrays["predicted"],
        targets=targets, attacked=attacked, success=success,
        **{k: arrays[k].astype(np.float64) for k in ("l1", "l2", "linf", "snr_db")},
        queries=0, gradient_queries=0, wall_time_s=0.0,
    )
    notes = _union_notes(slices, n_excluded, total)
    evaluations: list[list[float]]
    if kind == FIXED_BUDGET:
        mixed = len(set(slice_budgets)) > 1
        if mixed and not allow_mixed_budgets:
            listed = ", ".join(f"{sl.label}: {b:.6g}" for sl, b in zip(slices, slice_budgets))
            raise StoreError(
                f"{where} is a fixed-budget attack and its slices tuned different {norm} budgets ({listed}); "
                "merged, the set would hold examples made at different ε, which one run over all clips never does. "
                "Attack it unsliced (ARRAY_SIZE=1), or merge with --allow-mixed-budgets to keep each slice's "
                "examples at its own ε (the set's budget is then their maximum)"
            )
        within = arrays["within_budget"].astype(bool)
        budget = max(slice_budgets)
        reached = all(bool(r.get("reached")) for r in records)
        reasons = [f"slice {sl.label}: {r.get('reason')}" for sl, r in zip(slices, records) if not r.get("reached")]
        reason = "; ".join(reasons) or None
        weights = [int(r.get("n_attacked") or 0) for r in records]
        curves = [{float(e): r_ for e, r_ in (r.get("evaluations") or []) if r_ is not None} for r in records]
        evaluations = []
        for eps, _ in records[0].get("evaluations") or []:
            if all(float(eps) in c for c in curves) and sum(weights):
                rate = sum(w * c[float(eps)] for w, c in zip(weights, curves)) / sum(weights)
                evaluations.append([float(eps), float(rate)])
        stats = result.stats()
        budget_source = "per-slice bisection (mixed: maximum)" if mixed else "per-slice bisection (all equal)"
        if mixed:
            notes.append(
                f"merged with mixed budgets: each slice's examples were made at its own tuned ε ("
                + ", ".join(f"{sl.label}: {b:.6g}" for sl, b in zip(slices, slice_budgets))
                + "); the budget is their maximum, an upper bound on what one run over all clips would find; "
                "evaluations are the union's fooling rates at the ε every slice probed"
            )
        tolerance = records[0].get("tolerance")
        converged = all(bool(r.get("converged")) for r in records)
    else:
        norms_all = result.budget_norms()
        norms = norms_all[attacked]
        budget, reached = quantile_budget(norms, threshold) if len(norms) else (math.nan, False)
        with np.errstate(invalid="ignore"):
            within = success & (norms_all <= budget)
        finite = np.sort(norms[np.isfinite(norms)])
        evaluations = [[float(v), float((k + 1) / len(norms))] for k, v in enumerate(finite)]
        reason = None
        if not reached:
            reason = (f"success rate {result.success_rate:.3f} < {threshold}: "
                      f"{int((~np.isfinite(norms)).sum())} of {len(norms)} sample(s) not fooled at any {norm} norm")
        stats = result.stats(within)
        budget_source = "quantile of the union's minimal norms"
        tolerance, converged = None, True
    fooling_rate = float(within[attacked].mean()) if n_attacked else math.nan
    arrays["within_budget"] = within
    notes.append(f"merged from {len(slices)} slices (advaudio store merge)")

    merged_from = [
        {"slice": [sl.index, sl.count], "file": sl.path.name, "sha256": sl.sha256, "budget": b,
         "fooling_rate": float(sl.attr("fooling_rate")), "n_samples": size,
         "results": str(sl.results_path) if sl.results_path else None}
        for sl, b, size in zip(slices, slice_budgets, sizes)
    ]
    attack_config = first.attr("attack_config")
    if kind == FIXED_BUDGET and len(set(slice_budgets)) > 1 and isinstance(attack_config, dict):
        attack_config = {**attack_config, "epsilon": None}  # no single ε made these examples
    attrs = dict(first.attrs)
    attrs.update({
        "attack_config": attack_config,
        "budget": float(budget), "fooling_rate": fooling_rate, "slice": [0, 1], "notes": notes,
        "merged_from": merged_from, "slice_budgets": slice_budgets, "budget_source": budget_source,
    })
    versions = [sl.attr("versions") for sl in slices]
    if any(v != versions[0] for v in versions):
        attrs["slice_versions"] = versions

    record = dict(records[0])
    record.update({
        "budget": float(budget), "fooling_rate": fooling_rate,
        "success_rate": result.success_rate, "reached": bool(reached), "reason": reason,
        "evaluations": evaluations, "stats": stats, "n_attacked": n_attacked, "n_excluded": n_excluded,
        "queries": sum(int(r.get("queries") or 0) for r in records),
        "gradient_queries": sum(int(r.get("gradient_queries") or 0) for r in records),
        "wall_time_s": sum(float(r.get("wall_time_s") or 0.0) for r in records),
        "tolerance": tolerance, "converged": converged, "notes": notes, "config": attack_config,
        "n_samples": total, "slice": None,
        "merged_from": {"budget_source": budget_source, "slices": merged_from},
    })
    return _Merged(stem=stem, arrays=arrays, attrs=attrs, record=record)


def _write(store: st.Store, merged: _Merged) -> tuple[Path, bool]:
    """Register the merged shard unless the same slices were merged into it already."""
    final = store.directory / st.ADVERSARIAL_DIR / f"{merged.stem}.h5"
    if final.is_file():
        with st.open_h5_read(final) as f:
            previous = f.attrs.get("merged_from")
        if previous is not None and json.loads(previous) == _jsonable(merged.attrs["merged_from"]) \
                and final.with_suffix(".sha256").is_file():
            return final, False  # already merged from exactly these slice files
    return st.write_adversarial_shard(store.directory, merged.stem, arrays=merged.arrays, attrs=merged.attrs), True


def _refuse_unsliced(store: st.Store, stem: str) -> None:
    final = store.directory / st.ADVERSARIAL_DIR / f"{stem}.h5"
    if final.is_file():
        with st.open_h5_read(final) as f:
            if "merged_from" not in f.attrs:
                raise StoreError(f"{final} exists and was written by an unsliced attack run, not by a merge; "
                                 "remove it or merge with --force to replace it")


# --------------------------------------------------------------------------- entry points


def merge_results(
    store: str | Path | st.Store,
    *,
    round: int,
    split: str,
    checkpoint_sha: str | None = None,
    attack: str | None = None,
    results_dir: str | Path | None = None,
    allow_mixed_budgets: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Merge every complete slice set of (round, split[, checkpoint][, attack]); returns the results document.

    The document is also written to ``results_dir/attack-round<K>-<split>.json``
    (``results_dir`` defaults to the checkpoint's directory, where the slices
    wrote theirs); its ``results_path`` says where, and each merged record's
    ``shard`` the merged shard, ``written`` whether it was (re)written.
    """
    from advaudio.adversarial import SPLITS

    if split not in SPLITS:
        raise ParameterError(f"split must be one of {SPLITS}, got {split!r}")
    if round < 0:
        raise ParameterError(f"round must be >= 0, got {round}")
    if checkpoint_sha is not None:
        checkpoint_sha = checkpoint_sha.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{4,64}", checkpoint_sha):
            raise ParameterError(f"checkpoint sha must be 4 to 64 hex digits, got {checkpoint_sha!r}")
    fs = store if isinstance(store, st.Store) else st.Store(store)
    groups = _slice_shards(fs, round=round, split=split, checkpoint_sha=checkpoint_sha, attack=attack)
    what = f"round {round}, {split} split" + (f", checkpoint {checkpoint_sha[:10]}" if checkpoint_sha else "") \
        + (f", attack {attack}" if attack else "")
    if not groups:
        raise StoreError(f"no slice shards ({what}) in {fs.directory / st.ADVERSARIAL_DIR}; "
                         "`advaudio attack --slice I/N` writes them")
    shas = sorted({sha for sha, _ in groups})
    if len(shas) > 1:
        raise StoreError(f"slice shards of {len(shas)} checkpoints ({', '.join(shas)}) for {what}; "
                         "choose one with --checkpoint-sha")
    sha = shas[0]
    slice_sets: list[tuple[str, list[_Slice]]] = []
    for (_, name), files in sorted(groups.items(), key=lambda kv: kv[0][1]):
        files = _complete_set(sha, name, files, store=fs, round=round, split=split)
        slices = [_read_slice(p, i, n) for p, i, n in files]
        where = f"{name} (round {round}, {split} split, checkpoint {sha})"
        full = slices[0].attr("checkpoint_sha256")
        if checkpoint_sha and not str(full).startswith(checkpoint_sha):
            raise StoreError(f"{slices[0].path.name} was made from checkpoint {full}, not {checkpoint_sha}")
        if slices[0].attr("store_fingerprint") != fs.fingerprint:
            raise StoreError(f"{slices[0].path.name} was made from store {slices[0].attr('store_fingerprint')}, "
                             f"not {fs.fingerprint}")
        for sl in slices:
            _attach_results(sl, Path(results_dir) if results_dir is not None else None, round, split)
        _check_consistent(slices, where)
        slice_sets.append((where, slices))

    # All attacks' results go into one results file per directory (normally the checkpoint's).
    out_dirs = {sl.results_path.parent.resolve() for _, slices in slice_sets for sl in slices}  # type: ignore[union-attr]
    if len(out_dirs) > 1:
        raise StoreError(f"the slices' results files lie in several directories ({', '.join(map(str, out_dirs))}); "
                         "merge one attack at a time with --attack and --results-dir")
    out_dir = slice_sets[0][1][0].results_path.parent  # type: ignore[union-attr]
    results_path = out_dir / results_name(round, split)
    previous = None
    if results_path.is_file():
        try:
            previous = json.loads(results_path.read_text())
        except ValueError:
            previous = None
        if previous is not None and "merged_from" not in previous and not force:
            raise StoreError(f"{results_path} exists and was written by an unsliced attack run, not by a merge; "
                             "remove it or merge with --force to replace it")

    # Everything is checked and computed before the first file is written.
    results = []
    for where, slices in slice_sets:
        stem = f"round{round:02d}-{split}-{sha}-{slices[0].attr('attack')}"
        if not force:
            _refuse_unsliced(fs, stem)
        results.append(_merge_attack(slices, stem=stem, allow_mixed_budgets=allow_mixed_budgets, where=where))
    merged: dict[str, dict[str, Any]] = {}
    for m in results:
        path, written = _write(fs, m)
        merged[m.record["attack"]] = {**m.record, "shard": str(path), "written": written}

    all_slices = [sl for _, slices in slice_sets for sl in slices]
    base = slice_sets[0][1][0].document or {}
    full_sha = slice_sets[0][1][0].attr("checkpoint_sha256")
    records: dict[str, dict[str, Any]] = {}
    if previous is not None and "merged_from" in previous and previous.get("checkpoint_sha256") == full_sha:
        records = {r["attack"]: r for r in previous.get("attacks", []) if isinstance(r, dict) and "attack" in r}
    records.update(merged)
    order = list(base.get("config", {}).get("attacks") or [])
    names = sorted(records, key=lambda a: (order.index(a) if a in order else len(order), a))
    docs = {sl.results_path: sl.document for sl in all_slices}  # one per slice file
    devices = sorted({str(d.get("device")) for d in docs.values() if d})
    document = {k: base.get(k) for k in ("checkpoint", "checkpoint_sha256", "model", "view", "store",
                                         "store_fingerprint", "clean_test_accuracy")}
    document.update({
        "config": {**base.get("config", {}), "slice": None, "attacks": names},
        "device": devices[0] if len(devices) == 1 else ", ".join(devices),
        "wall_time_s": sum(float((d or {}).get("wall_time_s") or 0.0) for d in docs.values()),
        "attacks": [{k: v for k, v in records[a].items() if k != "written"} for a in names],
        "merged_from": {"slices": slice_sets[0][1][0].count,
                        "results": sorted(str(p) for p in docs if p is not None)},
    })
    st.write_json_atomic(results_path, _jsonable(document))
    out = dict(document)
    out["attacks"] = [records[a] for a in names]
    out["merged"] = list(merged)
    out["results_path"] = str(results_path)
    return out


def merge_slices(
    store: str | Path | st.Store,
    *,
    round: int,
    split: str,
    checkpoint_sha: str | None = None,
    attack: str | None = None,
    results_dir: str | Path | None = None,
    allow_mixed_budgets: bool = False,
    force: bool = False,
) -> list[Path]:
    """Merge complete slice sets into registered shards; returns the merged shards' paths.

    See the module docstring; :func:`merge_results` returns the whole results document.
    """
    doc = merge_results(store, round=round, split=split, checkpoint_sha=checkpoint_sha, attack=attack,
                        results_dir=results_dir, allow_mixed_budgets=allow_mixed_budgets, force=force)
    return [Path(r["shard"]) for r in doc["attacks"] if r["attack"] in doc["merged"]]
