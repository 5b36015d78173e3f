"""Merge the slices of a job-array attack into one registered adversarial set.

``advaudio attack --slice I/N`` (one task of a job array) attacks the I-th of N
contiguous parts of the clips and writes

* ``<store>/adversarial/round<K>-<split>-<sha10>-<attack>-slice<III>of<NNN>.h5``
  (+ ``.sha256``), one per attack, and
* ``<dir>/attack-round<K>-<split>-slice<III>of<NNN>.json`` (``dir``: its
  ``--out``, by default the checkpoint's directory), one per slice.

:func:`merge_results` (``advaudio store merge``) checks that a set is complete
(slices 0..N-1 of one N) and consistent (same checkpoint, store, view, attack
configuration, threshold, limit and seed), concatenates the slices in slice
order into ONE shard with the unsliced name ``round<K>-<split>-<sha10>-<attack>.h5``
and writes ``<dir>/attack-round<K>-<split>.json``, the results file an unsliced
run writes, so ``advaudio retrain --round K``, ``advaudio rounds`` and
``advaudio report`` take the merged set as they take an unsliced run.

Budgets. A slice tunes its budget on its own clips; the merged set's numbers come from
the union of the slices' per-clip values, by :mod:`advaudio.attacks.merging` (which
says when they equal an unsliced run's exactly). Minimisation attacks and fixed-budget
attacks tuned by the per-clip search (the default) merge to the quantile of the union's
minimal budgets. Fixed-budget attacks tuned by ``--search bisection`` bisected each
slice's own ε, so the slices' examples are made at different budgets, which one run
never does: when every slice ended at the same ε the set merges as is; otherwise
merging is refused unless ``allow_mixed_budgets``, which keeps every slice's examples
at its own ε, records the per-slice budgets and takes their maximum as the set's
budget, with a note.

A slice whose clips are all misclassified when clean attacks nothing and
writes no shard, only its results record; the merge rebuilds its rows (the
clean inputs, not attacked) from the checkpoint and the store, as an
unsliced run holds them.

Provenance. The merged shard's attributes (:class:`advaudio.store.ShardAttrs`) are
those of an unsliced run plus ``merged_from`` (each slice's file, sha256, budget,
fooling rate and size), ``slice_budgets`` and ``budget_source``; its results record
(:class:`advaudio.store.AttackRecord`) has ``merged_from`` too. Slice files stay where
they are (the merge can be redone, e.g. after one slice was rerun); the retraining
stage's ``find_shards`` skips slice shards, so a set is never trained on twice.

Idempotence. Rerunning a slice overwrites its files (no duplicates); merging
again rewrites the merged results and rewrites the merged shard only when a
slice changed. An unsliced run's shard or results file of the same set is
never replaced unless ``force``.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from advaudio import layout, validation
from advaudio import store as st
from advaudio.attacks import FIXED_BUDGET, choose_targets
from advaudio.attacks.merging import (
    common_curve,
    merged_note,
    mixed_budgets_note,
    slice_sizes,
    union_budget,
    union_notes,
    union_precision,
    union_result,
)
from advaudio.attacks.results import Note
from advaudio.errors import DamagedFileError, ParameterError, StoreError
from advaudio.options import CommandResult, Values
from advaudio.plugins import merge_records
from advaudio.stages.attack import checkpoint_rows, choose_rows, format_table
from advaudio.stages.merge_config import MERGE
from advaudio.stages.merge_slices import (
    Slice,
    attach_results,
    budget_value,
    check_consistent,
    check_shard,
    complete_set,
    discover_slices,
    stage_config,
)
from advaudio.store.results import AttackRecord, AttackResults, read_attack_results, write_attack_results
from advaudio.training import load_checkpoint

__all__ = ["merge_results"]

# --------------------------------------------------------------------------- arrays


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    return st.AdversarialShard.open(path).read()


def _unattacked_rows(sl: Slice, store: st.Store, *, targeted: bool,
                     like: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The shard rows an unsliced run holds for a slice that attacked no clip: clean inputs, not attacked."""
    assert sl.document is not None and sl.record is not None
    config = stage_config(sl)
    ckpt_path = Path(str(sl.document.checkpoint))
    sha = str(sl.document.checkpoint_sha256)
    why = f"slice {sl.label} attacked no clip (all misclassified when clean) and wrote no shard"
    if not ckpt_path.is_file() or st.sha256_file(ckpt_path) != sha:
        raise StoreError(f"{why}; rebuilding its rows needs its checkpoint {ckpt_path} (sha256 {sha[:10]}), "
                         "which is not there (or changed)")
    ckpt = load_checkpoint(ckpt_path)
    rows = checkpoint_rows(store, ckpt, split=str(config.get("split")))
    rows = choose_rows(rows, limit=config.get("limit"), slice=(sl.index, sl.count))
    if len(rows) != int(sl.record.n_samples or 0):
        raise StoreError(f"{why}; it recorded {sl.record.n_samples} clips, but its rows are now {len(rows)}: "
                         f"rerun slice {sl.label}")
    with store.reader() as reader:
        x = ckpt.view.read(reader, rows).float().clamp(0.0, 1.0)
    labels = np.asarray(store.labels[rows], np.int64)
    model = ckpt.model.eval()
    with torch.no_grad():
        predicted = torch.cat([model(x[s:s + 64]) for s in range(0, len(x), 64)]).argmax(1).numpy()
    if np.any(predicted == labels):
        raise StoreError(f"slice {sl.label} recorded no attacked clip, but the checkpoint classifies "
                         f"{int((predicted == labels).sum())} of its clips correctly: rerun it")
    if targeted:
        target = choose_targets(model, x, labels, rule=str(config.get("target_rule", "random")),
                                num_classes=len(ckpt.classes), seed=int(config.get("seed", 0)), ids=rows).numpy()
    else:
        target = np.full(len(rows), -1)
    n = len(rows)
    arrays = {
        "adversarial": x.numpy(), "clean_index": rows, "clip_id": np.asarray(store.clip_ids[rows], dtype=object),
        "fold": store.folds[rows], "label": labels, "target": target, "predicted": predicted,
        "attacked": np.zeros(n, bool), "success": np.zeros(n, bool), "within_budget": np.zeros(n, bool),
        "l1": np.zeros(n), "l2": np.zeros(n), "linf": np.zeros(n), "snr_db": np.full(n, np.inf),
    }
    for name in ("minimal_budget", "minimal_budget_low"):  # per-clip search: excluded clips have none
        if name in like:
            arrays[name] = np.full(n, np.nan)
    if sorted(arrays) != sorted(like):
        raise StoreError(f"{why}; the other slices hold datasets {sorted(like)}, which this merge cannot rebuild")
    return {k: np.asarray(arrays[k], dtype=like[k].dtype) for k in like}


# --------------------------------------------------------------------------- merging one attack


@dataclass
class _Merged:
    stem: str
    arrays: dict[str, np.ndarray] | None  # None: no slice attacked anything, no shard (as an unsliced run)
    attrs: st.ShardAttrs | None
    record: AttackRecord


def _notes(slices: list[Slice], n_excluded: int, n: int) -> list[Note]:
    return union_notes([sl.record.notes for sl in slices], [(sl.index, sl.count) for sl in slices],
                       n_excluded=n_excluded, n=n)


def _merge_attack(slices: list[Slice], *, store: st.Store, stem: str, allow_mixed_budgets: bool,
                  where: str) -> _Merged:
    """The merged arrays, attributes and results record of one attack (nothing written)."""
    records: list[AttackRecord] = [sl.record for sl in slices]
    kind, norm, threshold = records[0].kind, records[0].norm, float(records[0].threshold)
    shards = [sl for sl in slices if not sl.empty]
    summed = {
        "queries": sum(r.queries or 0 for r in records),
        "gradient_queries": sum(r.gradient_queries or 0 for r in records),
        "wall_time_s": sum(float(r.wall_time_s or 0.0) for r in records),
        "n_samples": sum(r.n_samples or 0 for r in records),
        "slice": None,
    }
    slice_info = [
        {"slice": [sl.index, sl.count], "file": sl.path.name if sl.path else None, "sha256": sl.sha256,
         "budget": budget_value(sl.attrs.budget) if not sl.empty else None,
         "fooling_rate": budget_value(sl.attrs.fooling_rate) if not sl.empty else None,
         "n_samples": int(r.n_samples or 0), "n_attacked": int(r.n_attacked or 0),
         "results": str(sl.results_path) if sl.results_path else None}
        for sl, r in zip(slices, records)
    ]
    if not shards:  # nothing attacked anywhere: an unsliced run writes no shard either
        n = summed["n_samples"]
        record = records[0].with_values(
            **summed, n_attacked=0, n_excluded=n, shard=None,
            notes=tuple(_notes(slices, n, n) + [merged_note(len(slices))]),
            merged_from={"budget_source": None, "slices": slice_info})
        return _Merged(stem=stem, arrays=None, attrs=None, record=record)

    first = shards[0]
    parts: list[dict[str, np.ndarray] | None] = [None if sl.empty else _read_arrays(sl.path) for sl in slices]
    like = next(p for p in parts if p is not None)
    for sl, p in zip(slices, parts):
        if p is not None and sorted(p) != sorted(like):
            raise StoreError(f"{sl.path.name} holds datasets {sorted(p)}, slice {first.label} {sorted(like)}")
    parts = [p if p is not None else _unattacked_rows(sl, store, targeted=bool(first.attrs.targeted), like=like)
             for sl, p in zip(slices, parts)]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in like}
    sizes = [len(p["clean_index"]) for p in parts]
    total = sum(sizes)
    expected = slice_sizes(total, len(slices))
    if sizes != expected or len(np.unique(arrays["clean_index"])) != total:
        raise StoreError(f"the slices of {where} do not partition one set of clips (sizes {sizes}, expected "
                         f"{expected} for {total} clips): were they run with different --limit or stores?")

    result = union_result(arrays, attack=str(first.attrs.attack), kind=kind, norm=norm,
                          targeted=bool(first.attrs.targeted), config=first.attrs.attack_config)
    attacked = result.attacked
    n_attacked = int(attacked.sum())
    n_excluded = total - n_attacked
    notes = _notes(slices, n_excluded, total)
    budgets = [budget_value(sl.attrs.budget) for sl in shards]
    attack_config = first.attrs.attack_config
    used = [r for sl, r in zip(slices, records) if not sl.empty]
    evaluations: list[list[float]]
    if kind == FIXED_BUDGET and result.minimal_budget is None:  # slices bisected their own ε
        mixed = len(set(budgets)) > 1
        if mixed and not allow_mixed_budgets:
            listed = ", ".join(f"{sl.label}: {b:.6g}" for sl, b in zip(shards, budgets))
            raise StoreError(
                f"{where} is a fixed-budget attack and its slices tuned different {norm} budgets ({listed}); "
                "merged, the set would hold examples made at different ε, which one run over all clips never does. "
                "Attack it unsliced (ARRAY_SIZE=1), or merge with --allow-mixed-budgets to keep each slice's "
                "examples at its own ε (the set's budget is then their maximum)"
            )
        within = arrays["within_budget"].astype(bool)
        budget = max(budgets)
        reached = all(r.reached for r in used)
        reason = "; ".join((f"slice {sl.label}: " if len(slices) > 1 else "") + str(r.reason)
                           for sl, r in zip(slices, records) if not sl.empty and not r.reached) or None
        evaluations = common_curve([r.evaluations for r in used], [int(r.n_attacked or 0) for r in used])
        stats = result.stats()
        budget_source = "per-slice bisection (mixed: maximum)" if mixed else "per-slice bisection (all equal)"
        if mixed:
            attack_config = {**(attack_config or {}), "epsilon": None}  # no single ε made these examples
            notes.append(mixed_budgets_note([sl.label for sl in shards], budgets))
        tolerance = used[0].tolerance
        converged = all(bool(r.converged) for r in used)
    else:
        mb = union_budget(result, threshold)  # exactly as one run over all clips
        budget, reached, within, reason, stats = mb.budget, mb.reached, mb.within_budget, mb.reason, mb.stats
        evaluations = [[e, r] for e, r in mb.evaluations]
        budget_source = ("quantile of the union's per-clip minimal budgets" if kind == FIXED_BUDGET
                         else "quantile of the union's minimal norms")
        tolerance = records[0].tolerance if kind == FIXED_BUDGET else None
        converged = all(r.converged is not False for r in used)
        if kind == FIXED_BUDGET and result.minimal_budget_low is not None:
            # slices with precision "quantile" refined only the clips near their own quantile
            modes = sorted({str((r.tolerance or {}).get("precision", "clip")) for r in used})
            tolerance = dict(tolerance or {})
            low, note = union_precision(result, threshold, budget, rtol=float(tolerance.get("rtol", 0.0) or 0.0),
                                        atol=float(tolerance.get("atol", 0.0) or 0.0), precision="/".join(modes))
            tolerance.update(budget_low=low, precision=modes[0] if len(modes) == 1 else "mixed")
            if note is not None:
                converged = False
                notes.append(note)
    fooling_rate = float(within[attacked].mean())
    arrays["within_budget"] = within
    notes.append(merged_note(len(slices)))

    versions = [sl.attrs.versions for sl in shards]
    attrs = dataclasses.replace(
        first.attrs,
        results=None,  # the first slice's results file: the merged set is described by the merge's
        attack_config=attack_config, budget=float(budget), fooling_rate=fooling_rate, slice=(0, 1),
        notes=tuple(notes), merged_from=tuple(slice_info), slice_budgets=tuple(budgets),
        budget_source=budget_source,
        slice_versions=tuple(versions) if any(v != versions[0] for v in versions) else None,
    )
    record = used[0].with_values(
        **summed, budget=float(budget), fooling_rate=fooling_rate, success_rate=result.success_rate,
        reached=bool(reached), reason=reason, evaluations=tuple(tuple(p) for p in evaluations), stats=stats,
        n_attacked=n_attacked, n_excluded=n_excluded, tolerance=tolerance, converged=converged,
        notes=tuple(notes), config=attack_config,
        merged_from={"budget_source": budget_source, "slices": slice_info},
    )
    return _Merged(stem=stem, arrays=arrays, attrs=attrs, record=record)


def _write(store: st.Store, merged: _Merged) -> tuple[Path | None, bool]:
    """Register the merged shard unless the same slices were merged into it already."""
    if merged.arrays is None:
        return None, False
    final = st.shard_path(store.directory, merged.stem)
    if final.is_file() and st.AdversarialShard.recorded_sha256(final) is not None:
        previous = st.AdversarialShard.open(final).attrs.merged_from
        if previous is not None and st.jsonable(previous) == st.jsonable(merged.attrs.merged_from):
            return final, False  # already merged from exactly these slice files
    return st.write_adversarial_shard(store.directory, merged.stem, arrays=merged.arrays, attrs=merged.attrs), True


def _refuse_unsliced(store: st.Store, stem: str) -> None:
    final = st.shard_path(store.directory, stem)
    if final.is_file() and not st.AdversarialShard.open(final).attrs.merged:
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
    wrote theirs); its ``results_path`` says where, ``merged`` lists the
    attacks merged now, each of their records' ``shard`` is the merged shard
    and ``written`` says whether it was (re)written. Everything is checked
    before the first file is written.
    """
    validation.choice("split", split, layout.SPLITS)
    validation.integer("round", round, minimum=0)
    if checkpoint_sha is not None:
        checkpoint_sha = checkpoint_sha.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{4,64}", checkpoint_sha):
            raise ParameterError(f"checkpoint sha must be 4 to 64 hex digits, got {checkpoint_sha!r}")
    rdir = Path(results_dir) if results_dir is not None else None
    if rdir is not None and not rdir.is_dir():
        raise ParameterError(f"no results directory at {rdir}" + (" (it is a file)" if rdir.exists() else ""))
    fs = store if isinstance(store, st.Store) else st.Store(store)
    groups = discover_slices(fs, round=round, split=split, checkpoint_sha=checkpoint_sha, attack=attack, results_dir=rdir)
    what = f"round {round}, {split} split" + (f", checkpoint {checkpoint_sha[:10]}" if checkpoint_sha else "") \
        + (f", attack {attack}" if attack else "")
    if not groups:
        raise StoreError(f"no slice shards ({what}) in {fs.directory / st.ADVERSARIAL_DIR}; "
                         "`advaudio attack --slice I/N` writes them")
    shas = sorted({sha for sha, _ in groups})
    if len(shas) > 1:
        raise StoreError(f"slices of {len(shas)} checkpoints ({', '.join(shas)}) for {what}; "
                         "choose one with --checkpoint-sha")
    sha = shas[0]
    slice_sets: list[tuple[str, str, list[Slice]]] = []
    for (_, name), found in sorted(groups.items(), key=lambda kv: kv[0][1]):
        where = f"{name} (round {round}, {split} split, checkpoint {sha})"
        slices = complete_set(sha, name, found, store=fs, round=round, split=split)
        for sl in slices:
            if sl.empty:
                continue
            check_shard(sl)
            full = str(sl.attrs.checkpoint_sha256)
            if checkpoint_sha and not full.startswith(checkpoint_sha):
                raise StoreError(f"{sl.path.name} was made from checkpoint {full}, not {checkpoint_sha}")
            st.check_same_store(fs, sl.attrs.store_fingerprint, what=f"adversarial shard {sl.path.name}")
            attach_results(sl, rdir, round, split)
        check_consistent(slices, where, name)
        slice_sets.append((name, where, slices))

    # All attacks' results go into one results file per directory (normally the checkpoint's).
    out_dirs = {sl.results_path.parent.resolve() for _, _, slices in slice_sets for sl in slices}
    if len(out_dirs) > 1:
        raise StoreError(f"the slices' results files lie in several directories ({', '.join(map(str, out_dirs))}); "
                         "say which with --results-dir (or merge one attack at a time with --attack)")
    base_slice = slice_sets[0][2][0]
    out_dir = base_slice.results_path.parent
    results_path = out_dir / layout.attack_results_name(round=round, split=split)
    previous = None
    if results_path.is_file():
        try:
            previous = read_attack_results(results_path)
        except DamagedFileError as exc:  # replaced by this merge, which says so
            print(f"warning: {exc}; it is replaced by the merged results", file=sys.stderr)
            previous = None
        if previous is not None and previous.merged_from is None and not force:
            raise StoreError(f"{results_path} exists and was written by an unsliced attack run, not by a merge; "
                             "remove it or merge with --force to replace it")

    computed = []
    for name, where, slices in slice_sets:
        stem = layout.shard_stem(round=round, split=split, checkpoint_sha=sha, attack=name)
        if not force:
            _refuse_unsliced(fs, stem)
        computed.append(_merge_attack(slices, store=fs, stem=stem, allow_mixed_budgets=allow_mixed_budgets,
                                      where=where))
    merged: dict[str, AttackRecord] = {}
    written: dict[str, bool] = {}
    for m in computed:
        path, written[m.record.attack] = _write(fs, m)
        merged[m.record.attack] = m.record.with_values(shard=str(path) if path else None)

    base = base_slice.document
    records: dict[str, AttackRecord] = {}
    if previous is not None and previous.merged_from is not None \
            and previous.checkpoint_sha256 == base.checkpoint_sha256:
        records = {r.attack: r for r in previous.records}
    records.update(merged)
    order = list((base.config or {}).get("attacks") or [])
    names = sorted(records, key=lambda a: (order.index(a) if a in order else len(order), a))

    docs = {sl.results_path: sl.document for _, _, slices in slice_sets for sl in slices}  # one per results file
    devices = sorted({str(d.device) for d in docs.values()})
    document = AttackResults(
        records=tuple(records[a] for a in names),
        checkpoint=base.checkpoint, checkpoint_sha256=base.checkpoint_sha256, model=base.model, view=base.view,
        store=base.store, store_fingerprint=base.store_fingerprint, clean_test_accuracy=base.clean_test_accuracy,
        config={**(base.config or {}), "slice": None, "attacks": names},
        device=devices[0] if len(devices) == 1 else ", ".join(devices),
        wall_time_s=sum(float(d.wall_time_s or 0.0) for d in docs.values()),
        merged_from={"results": sorted(str(p) for p in docs if p is not None)},
        # the slices' plugins (model, store, attacks), each once
        plugins=merge_records(*(d.plugins for d in docs.values()), previous.plugins if previous else None),
        # the slices' batch sizes, precisions and evaluation checks are their own: no merged values
        absent=frozenset({"batch_size", "precision", "evaluation"}),
    )
    out = write_attack_results(results_path, document)
    out["attacks"] = [{**r, "written": written[r["attack"]]} if r["attack"] in merged else r
                      for r in out["attacks"]]
    out["merged"] = list(merged)
    out["results_path"] = str(results_path)
    return out


@dataclass
class MergeRun(CommandResult):
    """What :func:`merge` did: :attr:`path` is the merged results JSON, :attr:`document` its content
    (``merged``: the attacks merged now)."""

    document: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        merged = [r for r in self.document["attacks"] if r["attack"] in self.document["merged"]]
        out = [format_table({"attacks": merged})]
        for r in merged:
            state = "merged" if r["written"] else "already merged, unchanged"
            out.append(f"{r['attack']}: {len(r['merged_from']['slices'])} slices, {r['n_samples']} clips, {state}: "
                       f"{r['shard']}")
        return out


@MERGE.function(MergeRun)
def merge(v: Values) -> MergeRun:
    """``advaudio store merge`` as a function (:func:`merge_results` with the command's options)."""
    document = merge_results(v.path, round=v.round, split=v.split, checkpoint_sha=v.checkpoint_sha, attack=v.attack,
                             results_dir=v.results_dir, allow_mixed_budgets=v.allow_mixed_budgets, force=v.force)
    return MergeRun(Path(document["results_path"]), document=document)
