"""The attack stage: a checkpoint and its store → tuned attacks → adversarial shards.

For each attack, :func:`attack_stage` tunes the budget to the fooling-rate
threshold on the chosen split (``test`` to measure robustness, ``train`` to
make retraining data), writes the adversarial inputs back into the store as
one shard per (round, split, checkpoint, attack[, slice]) and a results JSON
beside the checkpoint. The attacks themselves live in :mod:`advaudio.attacks`
(the only module that touches Foolbox); this module does files.

:func:`attack` is ``advaudio attack`` as a function (the options of
:mod:`advaudio.stages.attack_config`); :func:`attack_stage` is the same stage given an
:class:`AttackStageConfig`.

Shards are written through :func:`advaudio.store.write_adversarial_shard`
(the format: :mod:`advaudio.store.adversarial`), named by
:func:`advaudio.layout.shard_stem`.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import advaudio
from advaudio import layout
from advaudio import store as st
from advaudio.attacks import choose_targets, foolbox_version, tune_budget
from advaudio.attacks.checks import evaluation_checks
from advaudio.attacks.domain import make_domain
from advaudio.attacks.engine import auto_batch_size
from advaudio.errors import ParameterError, StoreError
from advaudio.options import CommandResult, Values
from advaudio.plugins import format_records, merge_records, used
from advaudio.progress import progress_log
from advaudio.stages.attack_config import ATTACK, AttackStageConfig, parse_slice
from advaudio.store.results import read_attack_results, write_attack_results
from advaudio.threads import configure_threads
from advaudio.training import TrainConfig, load_checkpoint, resolve_device
from advaudio.training.splits import split_by_fold

__all__ = ["AttackRun", "AttackStageConfig", "attack", "attack_stage", "check_warnings", "checkpoint_rows",
           "format_table", "parse_slice", "unreached_warning"]


def split_rows(store: st.Store, *, split: str, test_fold: int | None, train_folds: list[int] | None,
               val_rows: np.ndarray | None = None) -> np.ndarray:
    """Store rows of the checkpoint's test fold or of its training rows: its training folds
    less ``val_rows`` (the validation rows a ``val_fraction`` drew from them)."""
    if split == "test":
        if test_fold is None:
            raise StoreError("the checkpoint records no test fold; attack --split train instead")
        return store.select(folds=[int(test_fold)])
    if train_folds:
        rows = store.select(folds=[int(f) for f in train_folds])
    else:
        rows = store.select(exclude_folds=[int(test_fold)] if test_fold is not None else None)
    return rows if val_rows is None else np.setdiff1d(rows, np.asarray(val_rows, np.int64))


def validation_rows(store: st.Store, checkpoint) -> np.ndarray:
    """Rows a loaded checkpoint validated on that lie in its training folds: those its ``val_fraction``
    drew (a ``val_fold`` is not among the training folds; none without validation)."""
    config = TrainConfig.from_dict({**checkpoint.config, "store": str(store.directory)})
    if config.val_fold is not None or config.val_fraction <= 0:
        return np.zeros(0, np.int64)
    return split_by_fold(store, config).val


def checkpoint_rows(store: st.Store, checkpoint, *, split: str) -> np.ndarray:
    """Store rows of ``split`` for a loaded checkpoint: its test fold, or the rows it trained on.

    Validation rows are left out of the training split: their adversarial examples, mixed into
    retraining, would make the next round's validation accuracy one on data it trained on.
    """
    return split_rows(store, split=split, test_fold=checkpoint.test_fold,
                      train_folds=checkpoint.split.get("train_folds"),
                      val_rows=validation_rows(store, checkpoint) if split == "train" else None)


def choose_rows(rows: np.ndarray, *, limit: int | None, slice: tuple[int, int] | None) -> np.ndarray:
    """Evenly spaced ``limit`` rows (every class stays represented in fold order), then the slice."""
    if limit is not None and limit < len(rows):
        rows = rows[np.linspace(0, len(rows) - 1, limit).round().astype(int)]
    if slice is not None:
        rows = np.array_split(rows, slice[1])[slice[0]]
    return np.asarray(rows, np.int64)


def _versions() -> dict[str, str]:
    return {"advaudio": advaudio.__version__, "torch": torch.__version__, "foolbox": foolbox_version(),
            "numpy": np.__version__, "python": sys.version.split()[0]}


def _owner_differs(results: Path, shard: Path, config: AttackStageConfig, attack: str) -> bool:
    """Whether the results file ``results`` exists, lists ``shard`` and was made with other settings
    for ``attack`` than ``config`` (then replacing the shard would leave that file describing other data).

    A copied store's shards name the results of the store they were copied from, which list those
    other files; a rerun with the same settings rewrites the same clips and budget.
    """
    try:
        document = read_attack_results(results)
    except StoreError:  # gone or damaged: it describes nothing this run could contradict
        return False
    target = str(shard.resolve())
    if not any(r.shard and str(Path(r.shard).resolve()) == target for r in document.records):
        return False

    def settings(d: dict) -> dict:
        d = dict(d)
        d.pop("attacks", None)
        d.pop("batch_size", None)  # how many clips share an attack call changes no clip's result
        d["attack_params"] = (d.get("attack_params") or {}).get(attack)
        # the precision a run used (None: chosen by slicing), so older files without it compare equal
        d["precision"] = d.get("precision") or ("clip" if d.get("slice") else "quantile")
        d["domain"] = d.get("domain") or layout.DOMAINS[0]  # written only when not the default
        return st.jsonable(d)

    return settings(AttackStageConfig.upgrade_dict(dict(document.config or {}))) != settings(config.to_dict())


def _check_shard_owners(feature_store: st.Store, config: AttackStageConfig, ckpt_sha: str,
                        results_path: Path) -> None:
    """StoreError if a shard this run would replace is described by another run's results file
    that was made with other settings (``attack --out elsewhere --limit ...``).

    A shard's name says (round, split, checkpoint, attack), not where its results JSON lives.
    """
    mine = str(results_path.resolve())
    for name in config.attacks:
        stem = layout.shard_stem(round=config.round, split=config.split, checkpoint_sha=ckpt_sha, attack=name,
                                 slice=config.slice, domain=config.domain)
        path = st.shard_path(feature_store.directory, stem)
        if not path.is_file():
            continue
        owner = st.AdversarialShard.open(path).attrs.results
        if owner and owner != mine and _owner_differs(Path(owner), path, config, name):
            raise StoreError(f"{path} belongs to the results in {owner}, made with other settings; attack "
                             f"with --out {Path(owner).parent} to redo that run, or remove {owner} first")


def attack_stage(
    config: AttackStageConfig,
    *,
    checkpoint: str | Path,
    store: str | Path | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    audio_root: str | Path | None = None,
) -> dict[str, Any]:
    """Tune every attack of ``config`` against ``checkpoint`` and write its shard.

    Returns the results document also written to
    ``out_dir/attack-round<K>-<split>[-waveform][-slice…].json`` (``out_dir`` defaults to
    the checkpoint's directory): one record per attack with the budget, norm,
    fooling rate, success rate, perturbation statistics, queries, wall time
    and the shard's path. ``config.domain="waveform"`` decodes the clips again
    (``audio_root``: the dataset's root when it moved since featurize) and attacks
    their samples through the view's front end (:mod:`advaudio.attacks.domain`).
    """
    with progress_log("advaudio.attacks", enabled=progress):  # the attacks' status lines on long runs
        return _attack_stage(config, checkpoint=checkpoint, store=store, out_dir=out_dir, device=device,
                             progress=progress, audio_root=audio_root)


def _attack_stage(
    config: AttackStageConfig,
    *,
    checkpoint: str | Path,
    store: str | Path | None,
    out_dir: str | Path | None,
    device: str,
    progress: bool,
    audio_root: str | Path | None,
) -> dict[str, Any]:
    t_stage = time.perf_counter()
    checkpoint = Path(checkpoint)
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    store_path = Path(store) if store is not None else Path(ckpt.store_path)
    feature_store = st.Store(store_path)
    st.check_same_store(feature_store, ckpt.store_fingerprint, what=f"checkpoint {checkpoint}")
    ckpt.view.check_store(feature_store)
    rows = checkpoint_rows(feature_store, ckpt, split=config.split)
    rows = choose_rows(rows, limit=config.limit, slice=config.slice)
    if len(rows) == 0:
        raise ParameterError("no clips to attack in this split/slice")
    labels = torch.as_tensor(feature_store.labels[rows])
    ckpt_sha = st.sha256_file(checkpoint)
    out_dir = Path(out_dir) if out_dir is not None else checkpoint.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / layout.attack_results_name(round=config.round, split=config.split, slice=config.slice,
                                                        domain=config.domain)
    _check_shard_owners(feature_store, config, ckpt_sha, results_path)
    # The threat model: the model the attacks see and its inputs (feature domain: the classifier on the
    # view's inputs; waveform domain: classifier ∘ front end on the decoded clips, in the attack space).
    domain = make_domain(config.domain, classifier=ckpt.model, view=ckpt.view, store=feature_store, rows=rows,
                         batch_size=config.batch_size or 64, audio_root=audio_root)
    model, inputs = domain.model, domain.inputs

    # Targets keyed by store row: a clip gets the same target in every slice and attack.
    targets = choose_targets(model, inputs, labels, rule=config.target_rule,
                             num_classes=len(ckpt.classes), seed=config.seed, ids=rows)
    batch_size = config.batch_size or auto_batch_size(model, inputs[:1].to(dev))
    precision = config.search_precision()
    tunings = {}  # in the domain's units (waveform: converted), what the records and shards say
    searched = {}  # in the attack's own units: the evaluation checks rerun the attacks there
    shards: dict[str, Path | None] = {}
    for name in config.attacks:
        attack_config = config.attack_config(name)
        if progress:  # what it costs, said before it starts
            # the ceiling: early exits (per-clip search, cw/ead's early abort) use a fraction of it
            print(f"attack {name}: {len(rows)} clips ({config.split} split, round {config.round}), at most "
                  f"{attack_config.evaluations_per_clip():.3g} model evaluations per clip …",
                  file=sys.stderr, flush=True)
        tuning = tune_budget(model, inputs.to(dev), labels.to(dev), config=attack_config,
                             fooling_rate=config.threshold, rtol=config.rtol, targets=targets,
                             batch_size=batch_size, search=config.search, sample_ids=rows,
                             precision=precision)
        searched[name] = tuning
        tuning, waveforms = domain.convert(tuning)
        tunings[name] = tuning
        result = tuning.result
        stem = layout.shard_stem(round=config.round, split=config.split, checkpoint_sha=ckpt_sha, attack=name,
                                 slice=config.slice, domain=config.domain)
        shards[name] = None
        if result is not None:
            within = tuning.within_budget if tuning.within_budget is not None else result.success
            arrays = {
                "adversarial": np.asarray(result.adversarial, np.float32),
                "clean_index": rows,
                "clip_id": np.asarray(feature_store.clip_ids[rows], dtype=object),
                "fold": feature_store.folds[rows],
                "label": result.labels.astype(np.int64),
                "target": (result.targets.astype(np.int64) if result.targets is not None
                           else np.full(len(rows), -1, np.int64)),
                "predicted": result.predicted.astype(np.int64),
                "attacked": result.attacked.astype(bool),
                "success": result.success.astype(bool),
                "within_budget": np.asarray(within, bool),
                **{k: getattr(result, k).astype(np.float64) for k in ("l1", "l2", "linf", "snr_db")},
                **domain.shard_arrays(waveforms),
            }
            if result.minimal_budget is not None:  # per-clip search: what an exact merge needs
                arrays["minimal_budget"] = np.asarray(result.minimal_budget, np.float64)
            if result.minimal_budget_low is not None:  # and how precise each clip's value is
                arrays["minimal_budget_low"] = np.asarray(result.minimal_budget_low, np.float64)
            per_clip = tuning.search == "per-clip"
            low = (tuning.tolerance or {}).get("budget_low")
            attrs = st.ShardAttrs(
                attack=name, attack_config=result.config, kind=tuning.kind, norm=tuning.norm,
                budget=float(tuning.budget), fooling_rate=float(tuning.fooling_rate),
                threshold=config.threshold, targeted=bool(result.targeted),
                round=config.round, split=config.split, slice=config.slice or (0, 1),
                checkpoint=str(checkpoint.resolve()), checkpoint_sha256=ckpt_sha,
                store_fingerprint=feature_store.fingerprint, view=ckpt.view.to_dict(),
                test_fold=ckpt.test_fold if ckpt.test_fold is not None else -1,
                seed=config.seed, versions=_versions(), notes=tuple(tuning.notes),
                search=tuning.search, results=str(results_path.resolve()),
                precision=precision if per_clip else None,
                budget_low=(float(low) if low is not None else math.nan) if per_clip else None,
                **domain.shard_attrs(),
            )
            shards[name] = st.write_adversarial_shard(feature_store.directory, stem, arrays=arrays, attrs=attrs)

    evaluation = None
    if config.checks:
        evaluation = domain.convert_evaluation(evaluation_checks(
            model, inputs.to(dev), labels.to(dev), searched, targets=targets, sample_ids=rows,
            batch_size=batch_size, seed=config.seed, robust_epsilons=domain.robust_epsilons))
    records = tuple(
        domain.record(tuning, tuning.to_record(
            shard=str(shards[name]) if shards[name] else None, n_samples=int(len(rows)), split=config.split,
            round=config.round, slice=config.slice,
            checks=[c for c in evaluation.checks or () if c.about(name)] if evaluation else None))
        for name, tuning in tunings.items()
    )
    results = st.AttackResults(
        records=records,
        checkpoint=str(checkpoint.resolve()),
        checkpoint_sha256=ckpt_sha,
        model=ckpt.model.config,
        view=ckpt.view.name,
        store=str(feature_store.directory.resolve()),
        store_fingerprint=feature_store.fingerprint,
        clean_test_accuracy=(ckpt.test or {}).get("accuracy"),
        config=config.to_dict(),
        device=str(dev),
        batch_size=batch_size,  # the size used (config.batch_size None: chosen for the device)
        precision=precision,
        wall_time_s=time.perf_counter() - t_stage,
        evaluation=evaluation,
        plugins=stage_plugins(ckpt, feature_store, config.attacks),
    )
    results = domain.results(results)
    document = write_attack_results(results_path, results)
    document["results_path"] = str(results_path)
    return document


def stage_plugins(ckpt, feature_store: st.Store, attacks) -> list[dict[str, str]]:
    """The plugins behind a results document: the checkpoint's (model, defense), the store's
    (dataset reader, representations) and the attacks' own, each with its distribution and version."""
    return merge_records(ckpt.raw.get("plugins"), feature_store.config.get("plugins"),
                         used(("advaudio.attacks", name) for name in attacks))


def _results(document: st.AttackResults | dict[str, Any]) -> st.AttackResults:
    """What :func:`attack_stage` (or a merge) returned, typed."""
    if isinstance(document, st.AttackResults):
        return document
    return st.AttackResults.from_json({k: v for k, v in document.items() if k != "results_path"},
                                      document.get("results_path") or "(results document)")


def check_warnings(document: st.AttackResults | dict[str, Any]) -> list[str]:
    """One line per failed evaluation check of a results document (none: all passed or not run)."""
    return [f"warning: evaluation check {c.check} failed: {c.text}" for c in _results(document).failed_checks]


def format_table(document: st.AttackResults | dict[str, Any]) -> str:
    """The results as a fixed-width table for the terminal."""
    head = f"{'attack':<12}{'norm':<6}{'budget':>10}{'fooled':>8}{'success':>9}{'L2 med':>9}{'SNR dB':>8}" \
           f"{'steps':>8}{'time s':>8}  note"
    lines = [head, "-" * len(head)]

    def num(v, fmt):
        width = int("".join(c for c in fmt.split(".")[0] if c.isdigit()) or 0)
        ok = isinstance(v, (int, float)) and math.isfinite(v)
        return format(v, fmt) if ok else "-".rjust(width)

    for r in _results(document).records:
        note = "" if r.reached else (r.reason or "not reached")
        if r.targeted is False:
            note = ("untargeted; " + note).strip("; ")
        lines.append(f"{r.attack:<12}{r.norm:<6}{num(r.budget, '10.4g')}"
                     f"{num(r.fooling_rate, '8.2f')}{num(r.success_rate, '9.2f')}"
                     f"{num(r.stat('l2'), '9.3g')}{num(r.stat('snr_db'), '8.1f')}{num(r.gradient_steps, '8.0f')}"
                     f"{num(r.wall_time_s, '8.1f')}  {note}")
    for r in _results(document).records:
        wb = r.waveform_budgets
        if r.threat_model != "feature" and wb:
            lines.append(f"{r.attack}: waveform budget at the threshold: L-inf {num(wb.get('linf'), '.3g')}, "
                         f"L2 {num(wb.get('l2'), '.3g')}, SNR {num(wb.get('snr_db'), '.1f')} dB "
                         f"({'reached' if wb.get('reached') else 'not reached'}; {wb.get('clips')} clips)")
    return "\n".join(lines)


def unreached_warning(document: st.AttackResults | dict[str, Any]) -> str | None:
    """The line naming the attacks whose budget never reached the threshold (None: all did, or a slice:
    its budget is provisional, ``store merge`` decides)."""
    results = _results(document)
    unreached = [r for r in results.records if not r.reached]
    if not unreached or (results.config or {}).get("slice"):
        return None
    listing = "; ".join(f"{r.attack} ({r.reason or 'not reached'})" for r in unreached)
    threshold = AttackStageConfig.upgrade_dict(dict(results.config or {})).get("threshold", unreached[0].threshold)
    return (f"advaudio: {len(unreached)} of {len(results.records)} attack(s) never reached the fooling-rate "
            f"threshold {threshold:g}: {listing}")


@dataclass
class AttackRun(CommandResult):
    """What :func:`attack` did: :attr:`path` is the results JSON, :attr:`document` its content
    (one record per attack: budget, norm, fooling rate, statistics, shard …)."""

    document: dict[str, Any] = field(default_factory=dict)
    allow_unreached: bool = False

    def lines(self) -> list[str]:
        results = _results(self.document)
        out = [format_table(results)]
        for record in results.records:
            out += [f"  {record.attack}: {note.text}" for note in record.notes]
        if results.plugins:
            out.append(f"plugins: {format_records(results.plugins)}")
        return out

    def warnings(self) -> list[str]:
        line = unreached_warning(self.document)
        return check_warnings(self.document) + ([line] if line else [])  # a failed check is never silent

    @property
    def exit_status(self) -> int:
        return 1 if unreached_warning(self.document) and not self.allow_unreached else 0


@ATTACK.function(AttackRun)
def attack(v: Values) -> AttackRun:
    config = AttackStageConfig(**v.config())
    configure_threads(v.threads)
    document = attack_stage(config, checkpoint=v.checkpoint, store=v.store, out_dir=v.out, device=v.device,
                            progress=v.progress, audio_root=v.audio_root)
    return AttackRun(Path(document["results_path"]), document=document, allow_unreached=v.allow_unreached)
