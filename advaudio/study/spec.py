"""The study file: a TOML document → :class:`StudySpec`, checked before anything runs.

One table per concern (``[study]``, ``[data.<name>]``, ``[grid]``, ``[train]``,
``[protocol]``, ``[attacks]``, ``[rounds]``, ``[run]``); see
:mod:`advaudio.study.examples` for commented examples. Every key is checked: an
unknown key, a wrong type, a view whose representation a dataset does not store,
a fold the dataset lacks, are one :class:`~advaudio.errors.ParameterError` naming
the file and the key. The per-stage parameters are built into the stages' own
config classes (:class:`~advaudio.stages.featurize.FeaturizeConfig`,
:class:`~advaudio.training.TrainConfig`,
:class:`~advaudio.stages.attack.AttackStageConfig`,
:class:`~advaudio.stages.retrain.RetrainConfig`), so their validation and defaults are the
stages' and nothing is written twice.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from advaudio import layout, validation
from advaudio.cluster import ClusterConfig
from advaudio.errors import AdvaudioError, ParameterError
from advaudio.training.config import defense_names

EXECUTORS = ("local", "dask", "slurm")
#: The paper's defense on the defense axis: retraining on stored adversarial examples ([rounds]).
SHARDS = "shards"
#: TrainConfig fields the grid, the protocol or the run set per cell (not in ``[train]``).
_CELL_TRAIN_FIELDS = ("store", "view", "model", "width", "input_size", "test_fold", "seed", "device",
                      "extra_sources", "mix", "init_checkpoint", "provenance")
#: AttackStageConfig fields the cell's loop sets (not in ``[attacks]``).
_LOOP_ATTACK_FIELDS = ("attacks", "split", "round", "slice", "limit", "attack_params", "seed")


@dataclass(frozen=True)
class DataSpec:
    """One dataset of the study: its reader and feature parameters (``[data.<name>]``)."""

    name: str
    featurize: Any  # FeaturizeConfig

    @property
    def dataset(self) -> str:
        return self.featurize.dataset


@dataclass(frozen=True)
class GridSpec:
    """The axes crossed into cells (``[grid]``)."""

    models: tuple[str, ...] = ("resnet18",)
    views: tuple[str, ...] = ("stft",)
    widths: tuple[float, ...] = (1.0,)
    input_sizes: tuple[tuple[int, int] | None, ...] = ((128, 128),)
    seeds: tuple[int, ...] = (0,)
    #: The defense axis (empty: none, the [train] table's training and the [rounds] as given).
    #: ``none``: clean training; ``shards``: the paper's retraining on stored adversarial examples
    #: (the rounds of the clean cell); any other: an on-the-fly defense of the trainer
    #: (:mod:`advaudio.training.defenses`), its options from ``[defenses.<name>]``.
    defenses: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProtocolSpec:
    """Cross-validation (``[protocol]``): test folds trained on, and those attacked.

    ``cv``: ``"all"`` (every fold of the dataset) or a list of test folds;
    ``attack_folds``: the test folds whose models are attacked and retrained
    (``"all"``, a list, ``"none"``, or ``"last"`` — the highest test fold, the default).
    """

    cv: str | tuple[int, ...] = "all"
    attack_folds: str | tuple[int, ...] = "last"

    def test_folds(self, available: list[int]) -> list[int]:
        return list(available) if self.cv == "all" else list(self.cv)

    def attacked_folds(self, available: list[int]) -> list[int]:
        folds = self.test_folds(available)
        if self.attack_folds == "all":
            return folds
        if self.attack_folds == "none":
            return []
        if self.attack_folds == "last":
            return [max(folds)]
        return list(self.attack_folds)


@dataclass(frozen=True)
class RunSpec:
    """Where and how cells run (``[run]``).

    Parameters
    ----------
    out : study directory (relative paths: to the study file's directory)
    executor : ``"local"`` (cells one after another here), ``"dask"`` (cells as tasks on a
        Dask cluster: ``scheduler`` address, dask-jobqueue SLURM workers (``cluster``), or local
        worker processes) or ``"slurm"`` (one batch job per cell, chained after featurize)
    device : ``"auto"``, ``"cpu"``, ``"cuda"``: the cells' device (Dask: one GPU per worker)
    workers : Dask worker processes (local cluster), or dask-jobqueue jobs
    threads : CPU threads per cell (None: the CPUs this process may use, divided among
        the Dask workers on this machine)
    featurize_workers : Dask worker processes of the featurize step
    scheduler : address of a running Dask scheduler (``executor = "dask"``)
    cluster : dask-jobqueue options for ``executor = "dask"`` on a batch system
        (:class:`~advaudio.cluster.ClusterConfig` fields); empty: no batch jobs
    slurm : options of the ``slurm`` executor: ``partition``, ``account``, ``resources``
        (sbatch options of each cell job), ``featurize_resources``, ``setup`` (shell lines
        run first in each job), ``python``
    """

    out: str = "study"
    executor: str = "local"
    device: str = "auto"
    workers: int = 2
    threads: int | None = None
    featurize_workers: int = 2
    scheduler: str | None = None
    cluster: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StudySpec:
    """A whole study, as read from its file."""

    name: str
    path: Path  # the study file
    data: tuple[DataSpec, ...]
    grid: GridSpec
    train: dict  # TrainConfig fields shared by every cell
    protocol: ProtocolSpec
    attack: Any  # AttackStageConfig (attacks, thresholds, clips), for attacked cells
    train_limit: int | None  # training clips attacked per round
    rounds: int
    retrain: Any  # RetrainConfig
    run: RunSpec
    defense_params: dict = field(default_factory=dict)  # [defenses.<name>]: options per defense
    autoattack: tuple = ()  # [attacks] autoattack: ((norm, ε), …) evaluated on attacked cells
    #: [attacks] domains: the threat models an attacked grid point runs in, a cell each (empty: the
    #: study has no domain axis; its attacked cells run in ``attack.domain``)
    domains: tuple[str, ...] = ()

    @property
    def directory(self) -> Path:
        out = Path(os.path.expanduser(self.run.out))
        return out if out.is_absolute() else (self.path.parent / out)

    def to_dict(self) -> dict[str, Any]:
        """What the study runs with, JSON-able (``study.json``)."""
        return {
            "name": self.name, "path": str(self.path),
            "data": {d.name: d.featurize.to_dict() for d in self.data},
            "grid": dataclasses.asdict(self.grid), "train": dict(self.train),
            "protocol": dataclasses.asdict(self.protocol), "attack": self.attack.to_dict(),
            "train_limit": self.train_limit, "rounds": self.rounds,
            "retrain": dataclasses.asdict(self.retrain), "run": dataclasses.asdict(self.run),
            "defenses": {k: dict(v) for k, v in self.defense_params.items()},
            "autoattack": [list(a) for a in self.autoattack],
            **({"domains": list(self.domains)} if self.domains else {}),
        }


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #
_TABLES = {
    "study": {"name"},
    "data": None,  # one sub-table per dataset
    "grid": {"models", "views", "widths", "input_sizes", "seeds", "defenses"},
    "train": None,  # TrainConfig fields
    "protocol": {"cv", "attack_folds"},
    "attacks": None,  # AttackStageConfig fields + names, params, test_clips, train_clips, domains, autoattack
    "rounds": {"count", "mix", "mode", "epochs", "lr"},
    "run": {f.name for f in dataclasses.fields(RunSpec)},
    "defenses": None,  # one sub-table of options per defense of [grid] defenses
}
_DATA_KEYS = {"dataset", "root", "options", "features", "folds", "limit_per_class", "shard_size", "compression"}


class _Where:
    """Error messages that name the file and the key."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, message: str) -> ParameterError:
        return ParameterError(f"{self.path}: {key}: {message}")

    def unknown(self, table: str, given: Mapping[str, Any], known: set[str] | tuple[str, ...]) -> None:
        extra = sorted(set(given) - set(known))
        if extra:
            raise self.error(f"[{table}] {extra[0]}", f"unknown key (known: {', '.join(sorted(known))})")

    def table(self, doc: Mapping[str, Any], name: str) -> dict[str, Any]:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            raise self.error(name, f"must be a table ([{name}]), got {type(value).__name__}")
        return dict(value)

    def as_list(self, key: str, value: Any, kind: type | tuple[type, ...]) -> tuple:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.error(key, "must not be empty")
        for v in items:
            if not isinstance(v, kind) or isinstance(v, bool) and kind is not bool:
                names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
                raise self.error(key, f"must be a {names} or a list of them, got {v!r}")
        return tuple(items)

    def build(self, key: str, cls, **values):
        """``cls(**values)`` with its errors (an unknown field, a bad value) named by ``key``."""
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(values) - known)
        if extra:
            raise self.error(f"{key} {extra[0]}", f"unknown key (known: {', '.join(sorted(known))})")
        try:
            return cls(**values)
        except AdvaudioError as exc:
            raise self.error(key, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise self.error(key, f"invalid value ({exc})") from None


def read_study(path: str | os.PathLike) -> StudySpec:
    """Read and check the study file ``path``; the one entry point of this module."""
    path = Path(path)
    where = _Where(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"{path}: no such study file (write one with `advaudio study init {path}`)") from None
    except OSError as exc:
        raise ParameterError(f"{path}: cannot read the study file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"{path}: not valid TOML ({exc})") from None
    where.unknown("study file", {k: 0 for k in doc}, tuple(_TABLES))
    for name, keys in _TABLES.items():
        if keys is not None:
            where.unknown(name, where.table(doc, name), keys)

    study = where.table(doc, "study")
    name = study.get("name", path.stem)
    if not isinstance(name, str) or not name.strip():
        raise where.error("[study] name", "must be a non-empty string")

    data = _read_data(where, where.table(doc, "data"))
    grid = _read_grid(where, where.table(doc, "grid"))
    train = _read_train(where, where.table(doc, "train"))
    protocol = _read_protocol(where, where.table(doc, "protocol"))
    attacks = where.table(doc, "attacks")
    autoattack = _read_autoattack(where, attacks.pop("autoattack", None))
    domains = _read_domains(where, attacks)
    attack, train_limit = _read_attacks(where, attacks)
    rounds, retrain = _read_rounds(where, where.table(doc, "rounds"))
    run = _read_run(where, where.table(doc, "run"))
    defense_params = _read_defenses(where, grid, train, where.table(doc, "defenses"))
    spec = StudySpec(name=name.strip(), path=path.resolve(), data=data, grid=grid, train=train, protocol=protocol,
                     attack=attack, train_limit=train_limit, rounds=rounds, retrain=retrain, run=run,
                     defense_params=defense_params, autoattack=autoattack, domains=domains)
    _check_grid_against_data(where, spec)
    return spec


def _read_data(where: _Where, table: dict[str, Any]) -> tuple[DataSpec, ...]:
    from advaudio.features import FeatureConfig
    from advaudio.stages.featurize import FeaturizeConfig

    if not table:
        raise where.error("[data]", "no dataset: add a [data.<name>] table (e.g. [data.synthetic])")
    specs = []
    for name, entry in table.items():
        key = f"[data.{name}]"
        if not isinstance(entry, dict):
            raise where.error(key, "must be a table")
        where.unknown(f"data.{name}", entry, _DATA_KEYS)
        features = entry.get("features", {})
        if not isinstance(features, dict):
            raise where.error(f"{key} features", "must be a table of feature parameters")
        features = dict(features)
        if "representations" in features:
            features["representations"] = where.as_list(f"{key} features.representations",
                                                        features["representations"], str)
        feature_config = where.build(f"[data.{name}.features]", FeatureConfig, **features)
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise where.error(f"{key} options", "must be a table of reader options")
        root = entry.get("root")
        if root is not None:
            root = os.path.expanduser(str(root))
            root = root if os.path.isabs(root) else str((where.path.parent / root).resolve())
        folds = entry.get("folds")
        values = dict(dataset=entry.get("dataset", name), root=root, dataset_options=dict(options),
                      folds=where.as_list(f"{key} folds", folds, int) if folds is not None else None,
                      features=feature_config)
        for k in ("limit_per_class", "shard_size", "compression"):
            if k in entry:
                values[k] = entry[k]
        specs.append(DataSpec(name=name, featurize=where.build(key, FeaturizeConfig, **values)))
    return tuple(specs)


def _read_grid(where: _Where, table: dict[str, Any]) -> GridSpec:
    from advaudio.models import list_models
    from advaudio.views import parse_input_size, parse_view

    g = GridSpec()
    models = tuple(m.strip().lower() for m in where.as_list("[grid] models", table.get("models", list(g.models)), str))
    known = list_models()
    for m in models:
        if m not in known:
            raise where.error("[grid] models", f"unknown model {m!r} (known: {', '.join(known)})")
    views = []
    for v in where.as_list("[grid] views", table.get("views", list(g.views)), str):
        try:
            views.append("+".join(parse_view(v)))
        except AdvaudioError as exc:
            raise where.error("[grid] views", str(exc)) from None
    widths = where.as_list("[grid] widths", table.get("widths", list(g.widths)), (int, float))
    for w in widths:
        if not w > 0:
            raise where.error("[grid] widths", f"must be positive, got {w}")
    sizes = []
    for s in where.as_list("[grid] input_sizes", table.get("input_sizes", ["128x128"]), (str, int)):
        try:
            sizes.append(parse_input_size(s))
        except AdvaudioError as exc:
            raise where.error("[grid] input_sizes", str(exc)) from None
    seeds = where.as_list("[grid] seeds", table.get("seeds", list(g.seeds)), int)
    defenses = ()
    if "defenses" in table:

        known = defense_names()
        defenses = tuple(d.strip().lower() for d in where.as_list("[grid] defenses", table["defenses"], str))
        for d in defenses:
            if d != SHARDS and d not in known:
                raise where.error("[grid] defenses", f"unknown defense {d!r} (known: {SHARDS}, {', '.join(known)})")
    for axis, values in (("models", models), ("views", views), ("widths", widths), ("seeds", seeds),
                         ("defenses", defenses)):
        if len(set(values)) != len(values):
            raise where.error(f"[grid] {axis}", "lists a value twice")
    return GridSpec(models=models, views=tuple(views), widths=tuple(float(w) for w in widths),
                    input_sizes=tuple(sizes), seeds=tuple(seeds), defenses=defenses)


def _read_defenses(where: _Where, grid: GridSpec, train: dict[str, Any],
                   table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``[defenses.<name>]``: each defense's options, checked as the trainer checks them."""
    from advaudio.training import TrainConfig

    if grid.defenses and ("defense" in train or "defense_options" in train):
        raise where.error("[train] defense", "is set per cell by [grid] defenses (options: [defenses.<name>])")
    out = {}
    for name, options in table.items():
        key = f"[defenses.{name}]"
        if not isinstance(options, dict):
            raise where.error(key, "must be a table of the defense's options")
        if name not in grid.defenses:
            raise where.error(key, f"{name!r} is not among [grid] defenses {list(grid.defenses)}")
        if name == SHARDS:
            raise where.error(key, "shards takes its parameters from [rounds] and [attacks]")
        where.build(key, TrainConfig, store="-", defense=name, defense_options=dict(options))
        out[name] = dict(options)
    return out


def _read_autoattack(where: _Where, value: Any) -> tuple[tuple[str, float], ...]:
    """``[attacks] autoattack = "linf:8/255"`` (or a list): the (norm, ε) of AutoAttack's robust accuracy."""
    if value is None:
        return ()
    from advaudio.attacks.autoattack import parse_autoattack

    items = where.as_list("[attacks] autoattack", value, str)
    try:
        return parse_autoattack(",".join(items))
    except AdvaudioError as exc:
        raise where.error("[attacks] autoattack", str(exc)) from None


def _read_train(where: _Where, table: dict[str, Any]) -> dict[str, Any]:
    from advaudio.training import TrainConfig

    for k in table:
        if k in _CELL_TRAIN_FIELDS:
            raise where.error(f"[train] {k}", "is set per cell by [grid], [protocol] or [run], not in [train]")
    if "percentiles" in table:
        table["percentiles"] = tuple(table["percentiles"])
    # Built once with a placeholder store to check every value; the cells rebuild it.
    where.build("[train]", TrainConfig, store="-", **table)
    return table


def _read_protocol(where: _Where, table: dict[str, Any]) -> ProtocolSpec:
    def folds(key: str, value: Any, words: tuple[str, ...]):
        if isinstance(value, str):
            if value not in words:
                raise where.error(f"[protocol] {key}", f"must be {' or '.join(map(repr, words))} or a list of folds,"
                                                       f" got {value!r}")
            return value
        items = where.as_list(f"[protocol] {key}", value, int)
        if len(set(items)) != len(items):
            raise where.error(f"[protocol] {key}", "lists a fold twice")
        return tuple(sorted(items))

    return ProtocolSpec(cv=folds("cv", table.get("cv", "all"), ("all",)),
                        attack_folds=folds("attack_folds", table.get("attack_folds", "last"), ("all", "last", "none")))


def _read_domains(where: _Where, table: dict[str, Any]) -> tuple[str, ...]:
    """``[attacks] domains = ["feature", "waveform"]`` (popped from ``table``): the threat models."""
    if "domains" not in table:
        return ()
    if "domain" in table:
        raise where.error("[attacks] domain", "give either domain (one threat model) or domains (the axis)")
    domains = tuple(d.strip().lower() for d in where.as_list("[attacks] domains", table.pop("domains"), str))
    for d in domains:
        if d not in layout.DOMAINS:
            raise where.error("[attacks] domains", f"unknown domain {d!r} (known: {', '.join(layout.DOMAINS)})")
    if len(set(domains)) != len(domains):
        raise where.error("[attacks] domains", f"lists a domain twice: {list(domains)}")
    return domains


def _read_attacks(where: _Where, table: dict[str, Any]):
    from advaudio.stages.attack import AttackStageConfig

    table = dict(table)
    if "fooling_rate" in table:  # the key's name in earlier study files
        if "threshold" in table:
            raise where.error("[attacks] fooling_rate", "is the older name of threshold: give one of them")
        table["threshold"] = table.pop("fooling_rate")
    for k in table:
        if k in _LOOP_ATTACK_FIELDS:
            raise where.error(f"[attacks] {k}", "is set per step by the cell's loop (use names, params, test_clips)")
    names = where.as_list("[attacks] names", table.pop("names", ["pgd", "deepfool"]), str)
    params = table.pop("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
        raise where.error("[attacks] params", "must be tables of parameters per attack, e.g. [attacks.params.pgd]")
    test_clips = table.pop("test_clips", None)
    train_clips = table.pop("train_clips", None)
    for key, value in (("test_clips", test_clips), ("train_clips", train_clips)):
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise where.error(f"[attacks] {key}", f"must be a positive integer (omit it for every clip), got {value!r}")
    # The report's bootstrap resamples clips, so every clip's minimal ε must meet the tolerance
    # ("quantile" precision refines only the clips near the budget: cheaper, but its intervals are bounds).
    table.setdefault("precision", "clip")
    config = where.build("[attacks]", AttackStageConfig, attacks=names, attack_params=params, limit=test_clips,
                         **table)
    return config, train_clips


def _read_rounds(where: _Where, table: dict[str, Any]):
    from advaudio.stages.retrain import RetrainConfig

    count = table.pop("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise where.error("[rounds] count", f"must be an integer >= 0, got {count!r}")
    return count, where.build("[rounds]", RetrainConfig, **table)


def _read_run(where: _Where, table: dict[str, Any]) -> RunSpec:
    run = where.build("[run]", RunSpec, **table)
    if not isinstance(run.out, str) or not run.out.strip():
        raise where.error("[run] out", f"must be the study directory's path, got {run.out!r}")
    out = Path(os.path.expanduser(run.out))
    out = out if out.is_absolute() else where.path.parent / out
    if out.exists() and not out.is_dir():
        raise where.error("[run] out", f"{out} exists and is not a directory")
    from advaudio.training.distributed import resolve_device

    try:
        resolve_device(run.device, check_available=False)  # whether it is one; CUDA is looked for when cells run
    except AdvaudioError as exc:
        raise where.error("[run] device", str(exc)) from None
    try:
        validation.choice("executor", run.executor, EXECUTORS)
        validation.integer("workers", run.workers)
        validation.integer("featurize_workers", run.featurize_workers, minimum=0)
        if run.threads is not None:
            validation.integer("threads", run.threads)
    except AdvaudioError as exc:
        raise where.error("[run]", str(exc)) from None
    known_slurm = {"partition", "account", "resources", "featurize_resources", "report_resources", "setup", "python"}
    where.unknown("run.slurm", run.slurm, known_slurm)
    if run.cluster:

        where.build("[run.cluster]", ClusterConfig, **run.cluster)
    return run


def _check_grid_against_data(where: _Where, spec: StudySpec) -> None:
    """Views the datasets cannot serve, folds they lack: one error before anything runs."""
    from advaudio.views import parse_view

    for data in spec.data:
        stored = set(data.featurize.features.representations)
        for view in spec.grid.views:
            missing = [r for r in parse_view(view) if r not in stored]
            if missing:
                raise where.error("[grid] views", f"view {view!r} needs {', '.join(missing)}, which "
                                                    f"[data.{data.name}] does not featurize (features.representations "
                                                    f"= {sorted(stored)})")
    from advaudio.models import create_model

    for model in spec.grid.models:  # a model too deep for an input size fails here, not after featurizing
        smallest = create_model(model, in_channels=1, num_classes=2, width=0.0625).min_input_size
        for size in spec.grid.input_sizes:
            if size is not None and min(size) < smallest:
                raise where.error("[grid] input_sizes", f"{model} needs inputs of at least {smallest}x{smallest}, "
                                                         f"got {size[0]}x{size[1]}")
    if spec.protocol.attack_folds not in ("all", "last", "none") and spec.protocol.cv != "all":
        outside = sorted(set(spec.protocol.attack_folds) - set(spec.protocol.cv))
        if outside:
            raise where.error("[protocol] attack_folds", f"fold(s) {outside} are not among the cv folds {list(spec.protocol.cv)}")


def check_folds(spec: StudySpec, data: DataSpec, available: list[int]) -> None:
    """ParameterError when the protocol names a fold ``data`` lacks."""
    where = _Where(spec.path)
    for key, value in (("cv", spec.protocol.cv), ("attack_folds", spec.protocol.attack_folds)):
        if isinstance(value, tuple):
            missing = sorted(set(value) - set(available))
            if missing:
                raise where.error(f"[protocol] {key}", f"dataset {data.name!r} has no fold {missing[0]} "
                                                        f"(its folds: {', '.join(map(str, available))})")
