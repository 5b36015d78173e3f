"""A study's cells: the grid expanded (:func:`expand_cells`) and one cell run (:func:`run_cell`).

A cell is one (dataset × model × view × width × input size × seed × test fold).
Its fingerprint hashes everything its results depend on — the feature store's
fingerprint, the training configuration and, for an attacked cell, the attacks and
rounds — and ends its directory name, so a changed parameter makes a new cell and
never mixes with old results, while cells it does not touch keep theirs (the
training of a cell whose fold is not attacked does not depend on the attacks).

:func:`run_cell` trains (resuming a killed run from its last epoch), runs the
rounds of an attacked cell through :func:`advaudio.stages.rounds.run_rounds` (which
skips finished steps), and commits ``cell.json`` last (:mod:`~advaudio.study.cellfile`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import advaudio
from advaudio import layout
from advaudio import store as st
from advaudio.errors import AdvaudioError, DamagedFileError, DatasetError, ParameterError, StoreError
from advaudio.plugins import used
from advaudio.stages.rounds import is_complete_run, run_rounds
from advaudio.store.documents import read_metrics
from advaudio.store.results import read_attack_results
from advaudio.study import cellfile
from advaudio.study.spec import SHARDS, StudySpec, check_folds
from advaudio.training import TrainConfig, evaluate, train


@dataclass(frozen=True)
class Cell:
    """One cell of a study, with the store it reads."""

    dataset: str  # the [data.<name>] of the study
    model: str
    view: str
    width: float
    input_size: tuple[int, int] | None
    seed: int
    test_fold: int
    attacked: bool
    store_dir: str
    store_fingerprint: str
    fingerprint: str = ""
    #: the on-the-fly defense it trains with ("": the study has no defense axis; "none": clean
    #: training, whose rounds are the ``shards`` defense when the axis lists it)
    defense: str = ""
    rounds: int = 0  # rounds of shard retraining it runs (attacked cells only)
    #: AutoAttack's (norm, ε) evaluated on every round's model (attacked cells of a study that asks);
    #: not in the fingerprint: changing it adds an evaluation and retrains nothing
    autoattack: tuple = ()
    #: the threat model its attacks run in, for an attacked cell of a study with ``[attacks] domains``
    #: ("": no domain axis, the study's ``[attacks] domain``); its own cell, so a waveform-domain round
    #: retrains on waveform-domain shards
    domain: str = ""

    @property
    def cell_id(self) -> str:
        size = "none" if self.input_size is None else f"{self.input_size[0]}x{self.input_size[1]}"
        defense = f"-{self.defense}" if self.defense not in ("", "none") else ""
        domain = f"-{self.domain}" if self.domain not in ("", layout.DOMAINS[0]) else ""
        return (f"{self.dataset}-{self.model}-{self.view.replace('+', '_')}-w{self.width:g}-{size}-s{self.seed}"
                f"-f{self.test_fold}{defense}{domain}-{self.fingerprint[:8]}")

    @property
    def key(self) -> dict[str, Any]:
        key = {"dataset": self.dataset, "model": self.model, "view": self.view, "width": self.width,
               "input_size": list(self.input_size) if self.input_size else None, "seed": self.seed,
               "test_fold": self.test_fold, "attacked": self.attacked}
        if self.defense:
            key["defense"] = self.defense
        if self.domain:
            key["domain"] = self.domain
        return key

    def directory(self, spec: StudySpec) -> Path:
        return layout.study_cell_dir(spec.directory, self.cell_id)


def train_config(spec: StudySpec, cell: Cell, *, device: str | None = None):
    """The :class:`~advaudio.training.TrainConfig` of ``cell``."""
    values = {"workers": 0, **spec.train}  # cells run side by side: no loader processes unless asked
    if cell.defense not in ("", "none"):
        values.update(defense=cell.defense, defense_options=dict(spec.defense_params.get(cell.defense, {})))
    return TrainConfig(store=cell.store_dir, view=cell.view, model=cell.model, width=cell.width,
                       input_size=cell.input_size, test_fold=cell.test_fold, seed=cell.seed,
                       device=device or spec.run.device, **values)


def attack_config(spec: StudySpec, cell: Cell):
    """The :class:`~advaudio.stages.attack.AttackStageConfig` of ``cell``'s rounds (the grid's seed,
    the cell's domain)."""
    return dataclasses.replace(spec.attack, seed=cell.seed, domain=cell.domain or spec.attack.domain)


def _fingerprint(spec: StudySpec, cell: Cell) -> str:
    config = train_config(spec, cell, device="cpu").result_dict()
    for k in ("store", "device", "workers"):  # where and how fast, not what
        config.pop(k, None)
    parts: dict[str, Any] = {"store": cell.store_fingerprint, "train": config, "attacked": cell.attacked}
    if cell.attacked:
        attack = attack_config(spec, cell).to_dict()
        # Hashed under the key the threshold had when studies were first written: their cells keep their ids.
        attack["fooling_rate"] = attack.pop("threshold")
        attack.pop("batch_size", None)  # how many clips share an attack call changes no clip's result
        parts.update(attack=attack, train_limit=spec.train_limit, rounds=cell.rounds,
                     retrain=dataclasses.asdict(spec.retrain))
    plugins = cell_plugins(spec, cell)
    if plugins:  # a plugin's version decides results too (the key is absent for built-ins only)
        parts["plugins"] = plugins
    return st.fingerprint(parts)


def cell_plugins(spec: StudySpec, cell: Cell) -> list[dict[str, str]]:
    """The plugins a cell's results depend on besides its store's: model, defense and, when attacked, attacks."""
    defense = cell.defense if cell.defense not in ("", SHARDS) else spec.train.get("defense", "none")
    entries = [("advaudio.models", cell.model), ("advaudio.defenses", defense)]
    if cell.attacked:
        entries += [("advaudio.attacks", name) for name in spec.attack.attacks]
    return used(entries)


@dataclass(frozen=True)
class StorePlan:
    """A dataset's store: where it is, its fingerprint, its folds, and whether it is complete."""

    name: str
    store_dir: Path
    fingerprint: str
    folds: list[int]
    clips: int
    complete: bool


def plan_stores(spec: StudySpec) -> dict[str, StorePlan]:
    """Every dataset's store, resolved (reads the datasets' metadata, computes nothing)."""
    from advaudio.stages.featurize import plan_featurize  # librosa, numba: only when a study is planned

    plans = {}
    for data in spec.data:
        try:
            plan = plan_featurize(data.featurize, cache=layout.study_stores_dir(spec.directory))
        except DatasetError as exc:  # found before anything runs: named by the file and its table
            raise ParameterError(f"{spec.path}: [data.{data.name}]: {exc}") from None
        folds = sorted({int(c.fold) for c in plan.table.clips})
        check_folds(spec, data, folds)
        plans[data.name] = StorePlan(data.name, plan.store_dir, plan.fingerprint, folds, len(plan.table),
                                     plan.complete)
    return plans


def expand_cells(spec: StudySpec, stores: dict[str, StorePlan] | None = None) -> list[Cell]:
    """The study's cells in a stable order (dataset, model, view, width, size, seed, fold)."""
    stores = stores or plan_stores(spec)
    cells = []
    for data in spec.data:
        sp = stores[data.name]
        attacked = set(spec.protocol.attacked_folds(sp.folds))
        for model in spec.grid.models:
            for view in spec.grid.views:
                for width in spec.grid.widths:
                    for size in spec.grid.input_sizes:
                        for seed in spec.grid.seeds:
                            for fold in spec.protocol.test_folds(sp.folds):
                                for defense in trained_defenses(spec):
                                    hit = fold in attacked
                                    for domain in (spec.domains or ("",)) if hit else ("",):
                                        cell = Cell(data.name, model, view, width, size, seed, fold, hit,
                                                    str(sp.store_dir), sp.fingerprint, defense=defense,
                                                    domain=domain)
                                        cell = dataclasses.replace(cell, rounds=cell_rounds(spec, cell),
                                                                   autoattack=spec.autoattack if hit else ())
                                        cells.append(dataclasses.replace(cell, fingerprint=_fingerprint(spec, cell)))
    return cells


def training_twin(spec: StudySpec, cell: Cell) -> Cell | None:
    """The cell of ``cell``'s grid point in the study's first domain, whose round-0 training is the same
    (the domain changes only the attacks and the rounds after them); None for a cell of that domain."""
    if not cell.domain or not spec.domains or cell.domain == spec.domains[0]:
        return None
    twin = dataclasses.replace(cell, domain=spec.domains[0], fingerprint="")
    return dataclasses.replace(twin, fingerprint=_fingerprint(spec, twin))


def trained_defenses(spec: StudySpec) -> list[str]:
    """The trainings a grid point makes: ``[""]`` without a defense axis; else ``none`` (which ``shards``
    retrains) when the axis has either, and each on-the-fly defense."""
    if not spec.grid.defenses:
        return [""]
    clean = ["none"] if {"none", SHARDS} & set(spec.grid.defenses) else []
    return clean + [d for d in spec.grid.defenses if d not in ("none", SHARDS)]


def cell_rounds(spec: StudySpec, cell: Cell) -> int:
    """Rounds of shard retraining of ``cell``: the [rounds] count for an attacked cell of clean training
    when the study retrains (no defense axis, or ``shards`` on it); 0 otherwise."""
    if not cell.attacked:
        return 0
    if not cell.defense:
        return spec.rounds
    return spec.rounds if cell.defense == "none" and SHARDS in spec.grid.defenses else 0


def find_cell(cells: list[Cell], cell_id: str) -> Cell:
    for cell in cells:
        if cell.cell_id == cell_id:
            return cell
    raise AdvaudioError(f"no cell {cell_id!r} in this study (`advaudio study plan FILE` lists them)")


# --------------------------------------------------------------------------- #
# Running a cell
# --------------------------------------------------------------------------- #
class _Tee(io.TextIOBase):
    """Writes to the cell's log and, when asked, to the console as well."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
            s.flush()
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()

    def isatty(self) -> bool:  # progress bars draw as lines in a log
        return False


@contextlib.contextmanager
def _logged(path: Path, echo: bool) -> Iterator[None]:
    with open(path, "a", buffering=1) as log:
        err = _Tee(log, sys.stderr) if echo else _Tee(log)
        out = _Tee(log, sys.stdout) if echo else _Tee(log)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            yield


def run_cell(spec: StudySpec, cell: Cell, *, device: str | None = None, echo: bool = True,
             progress: bool = True) -> cellfile.CellSummary:
    """Run ``cell`` to the end (resuming where a killed run stopped) and commit its ``cell.json``.

    The feature store must be complete (:func:`advaudio.study.runner.featurize_study`).
    A finished cell is not rerun: its summary is returned. A cell that another process
    is running (it holds ``cell.lock``) is a StoreError, and is left to that process.
    On an error the cell is marked failed (``state.json``: the reason, the log) and
    the error is raised.
    """
    directory = cell.directory(spec)
    done = _finished(cell, directory, locked=False)
    if done is not None:
        return done
    directory.mkdir(parents=True, exist_ok=True)
    run_dir = layout.cell_run_dir(directory)
    with st.exclusive_lock(directory / layout.CELL_LOCK_NAME, what=f"cell {cell.cell_id}"):
        done = _finished(cell, directory, locked=True)  # finished by another run while this one waited?
        if done is not None:
            return done
        return _run_locked(spec, cell, directory, run_dir, device=device, echo=echo, progress=progress)


def _finished(cell: Cell, directory: Path, *, locked: bool) -> cellfile.CellSummary | None:
    """The cell's summary when it is done, else None.

    A damaged ``cell.json`` (truncated, edited, out of range) is not done: holding the
    cell's lock, it is set aside (``cell.json.damaged-<time>``, kept for a look) and the
    summary recomputed from the run directory, whose finished steps are not redone.
    """
    try:
        done = cellfile.read_cell_summary(directory)
    except DamagedFileError as exc:
        if locked:
            aside = st.set_aside(cellfile.summary_path(directory))
            print(f"cell {cell.cell_id}: {exc}; set aside as {aside.name}, the cell's summary is recomputed "
                  "from its run directory", file=sys.stderr, flush=True)
        return None
    if done is None or done.fingerprint != cell.fingerprint:
        return None
    return done if [list(a) for a in done.config.get("autoattack") or []] == [list(a) for a in cell.autoattack] \
        else None


def _run_locked(spec: StudySpec, cell: Cell, directory: Path, run_dir: Path, *, device: str | None, echo: bool,
                progress: bool) -> cellfile.CellSummary:
    cellfile.mark_running(directory)
    t0 = time.perf_counter()
    try:
        with _logged(cellfile.log_path(directory), echo):
            print(f"== cell {cell.cell_id} ({time.strftime('%Y-%m-%d %H:%M:%S')})", file=sys.stderr)
            if not is_complete_run(run_dir) and not _copy_twin_training(spec, cell, run_dir):
                train(train_config(spec, cell, device=device), out_dir=run_dir,
                      resume=layout.checkpoint_path(run_dir).is_file(), progress=progress)
            if cell.attacked:
                run_rounds(run_dir, rounds=cell.rounds, attack_config=attack_config(spec, cell),
                           retrain_config=spec.retrain, train_limit=spec.train_limit,
                           device=device or spec.run.device, progress=progress)
            for k in range(cell.rounds + 1 if cell.autoattack else 0):
                run_autoattack(run_dir, k, cell, device=device or spec.run.device)
            summary = summarise(spec, cell, session_seconds=time.perf_counter() - t0)
            cellfile.write_cell_summary(directory, summary)
            print(f"== cell {cell.cell_id} done in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else (str(exc) or type(exc).__name__)
        cellfile.mark_failed(directory, f"{type(exc).__name__}: {reason}".splitlines()[0][:500])
        raise
    cellfile.clear_state(directory)
    return cellfile.read_cell_summary(directory)


def _copy_twin_training(spec: StudySpec, cell: Cell, run_dir: Path) -> bool:
    """Round 0 of ``cell`` copied from its :func:`training_twin` when that one has finished it (the same
    training; the two domains then attack one model). False: nothing to copy, train."""
    twin = training_twin(spec, cell)
    if twin is None:
        return False
    source = layout.cell_run_dir(twin.directory(spec))
    if not is_complete_run(source):
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    # the checkpoint first: a run is complete only once its metrics.json (checked when read) is there too
    for src, dst in ((layout.checkpoint_path(source), layout.checkpoint_path(run_dir)),
                     (layout.metrics_path(source), layout.metrics_path(run_dir))):
        tmp = dst.with_name(dst.name + ".copying")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    print(f"round 0: trained as in cell {twin.cell_id} ({twin.domain} domain): its checkpoint copied",
          file=sys.stderr)
    return True


def autoattack_path(run_dir: Path, k: int) -> Path:
    return run_dir / f"autoattack-round{k}.json"


def run_autoattack(run_dir: Path, k: int, cell: Cell, *, device: str) -> list[dict[str, Any]]:
    """AutoAttack robust accuracy of round ``k``'s model on the test fold, per (norm, ε) of the cell;
    kept in ``run/autoattack-round<K>.json`` (with the checkpoint's sha256), reused when it matches."""
    checkpoint = layout.checkpoint_path(run_dir, round=k)
    sha = st.sha256_file(checkpoint)
    path = autoattack_path(run_dir, k)
    wanted = [list(a) for a in cell.autoattack]
    try:
        doc = st.read_sealed_json(path, what="AutoAttack results")
        if doc.get("checkpoint_sha256") == sha and [[a["norm"], a["eps"]] for a in doc["autoattack"]] == wanted:
            return doc["autoattack"]
    except (AdvaudioError, KeyError, TypeError):
        pass
    result = evaluate(checkpoint, device=device, autoattack=cell.autoattack, seed=cell.seed)
    doc = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha, "fold": result["fold"], "n": result["n"],
           "accuracy": result["accuracy"], "autoattack": result["autoattack"]}
    st.write_sealed_json(path, doc)
    return doc["autoattack"]


def _clip_norms(shard_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(store rows, per-clip minimal norm, per-clip SNR in dB or None) of the attacked clips of a shard;
    +inf norm / -inf dB: never fooled.  The SNR is given for a waveform-domain shard (the perturbation
    of the clip's samples), where it is the unit a listener hears."""
    shard = st.AdversarialShard.open(shard_path)
    norm = str(shard.attrs.norm)
    waveform = shard.attrs.threat_model != layout.DOMAINS[0]
    keys = ["clean_index", "attacked", "success", norm]
    if "minimal_budget" in shard:
        keys.append("minimal_budget")
    if waveform:
        keys.append("snr_db")
    a = shard.read(keys)
    attacked = np.asarray(a["attacked"], bool)
    success = np.asarray(a["success"], bool)
    if "minimal_budget" in a:  # a fixed-budget attack's per-clip search
        norms = np.asarray(a["minimal_budget"], np.float64)
    else:  # a minimisation attack: the norm of its adversarial, where it succeeded
        norms = np.where(success, np.asarray(a[norm], np.float64), np.inf)
    snr = np.where(success, np.asarray(a["snr_db"], np.float64), -np.inf)[attacked] if waveform else None
    return np.asarray(a["clean_index"], np.int64)[attacked], norms[attacked], snr


def _attack_outcomes(results_path: Path) -> tuple[dict[str, cellfile.AttackOutcome], float]:
    document = read_attack_results(results_path)
    outcomes = {}
    for r in document.records:
        if not r.shard:
            continue
        rows, norms, snr = _clip_norms(Path(r.shard))
        outcomes[r.attack] = cellfile.AttackOutcome(
            attack=r.attack, kind=r.kind, norm=r.norm, search=r.search or "", threshold=float(r.threshold),
            budget=float(r.budget) if r.budget is not None else math.nan, reached=r.reached,
            fooling_rate=float(r.fooling_rate) if r.fooling_rate is not None else math.nan,
            clip_rows=rows, minimal_norms=norms,
            checks=[{"check": c.check, "status": c.status, "text": c.text} for c in r.checks],
            results=str(results_path.resolve()), shard=str(Path(r.shard).resolve()),
            wall_time_s=float(r.wall_time_s or math.nan), gradient_steps=r.gradient_steps,
            domain=document.domain or layout.DOMAINS[0], clip_snr_db=snr)
    return outcomes, float(document.wall_time_s or 0.0)


def summarise(spec: StudySpec, cell: Cell, *, session_seconds: float = math.nan) -> cellfile.CellSummary:
    """The summary of a cell whose run directory is complete, read from its files."""
    run_dir = layout.cell_run_dir(cell.directory(spec))
    rounds, train_s, attack_s, retrain_s = [], 0.0, 0.0, 0.0
    for k in range(cell.rounds + 1 if cell.attacked else 1):
        metrics_file = layout.metrics_path(run_dir, round=k)
        metrics = read_metrics(metrics_file)
        if not metrics.get("complete"):
            raise StoreError(f"{metrics_file} is not a complete run")
        if k == 0:
            train_s += float(metrics.get("wall_seconds") or 0.0)
        else:
            retrain_s += float(metrics.get("wall_seconds") or 0.0)
        attacks = {}
        if cell.attacked:
            domain = attack_config(spec, cell).domain
            attacks, seconds = _attack_outcomes(layout.attack_results_path(run_dir, round=k, split="test",
                                                                           domain=domain))
            attack_s += seconds
            if k < cell.rounds:
                train_doc = read_attack_results(layout.attack_results_path(run_dir, round=k, split="train",
                                                                           domain=domain))
                attack_s += float(train_doc.wall_time_s or 0.0)
        checkpoint = layout.checkpoint_path(run_dir, round=k)
        autoattack = []
        if cell.autoattack:
            path = autoattack_path(run_dir, k)
            autoattack = [{**a, "results": str(path.resolve())}
                          for a in st.read_sealed_json(path, what="AutoAttack results")["autoattack"]]
        rounds.append(cellfile.RoundOutcome(
            round=k, checkpoint=str(checkpoint.resolve()), checkpoint_sha256=st.sha256_file(checkpoint),
            metrics=str(metrics_file.resolve()), test_accuracy=float(metrics["test"]["accuracy"]),
            test_clips=int(metrics["test"]["n"]), attacks=attacks, autoattack=tuple(autoattack)))
    config = {"train": train_config(spec, cell).to_dict()}
    if cell.attacked:
        config.update(attack=attack_config(spec, cell).to_dict(), train_limit=spec.train_limit,
                      rounds=cell.rounds, retrain=dataclasses.asdict(spec.retrain))
    if cell.autoattack:
        config["autoattack"] = [list(a) for a in cell.autoattack]
    return cellfile.CellSummary(
        cell_id=cell.cell_id, fingerprint=cell.fingerprint, key=cell.key, config=st.jsonable(config),
        run_dir=str(run_dir.resolve()), rounds=tuple(rounds),
        # measured by the stages themselves, so a resumed cell still counts the steps of its first session
        wall_time_s={"train": train_s, "rounds": attack_s + retrain_s, "attack": attack_s, "retrain": retrain_s,
                     "total": train_s + attack_s + retrain_s, "last_session": session_seconds},
        versions={"advaudio": advaudio.__version__, "torch": torch.__version__}, finished=time.time())
