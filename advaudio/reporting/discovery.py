"""Run discovery: the metrics and attack results below run directories, grouped by round.

A **run directory** holds a model and the attacks on it, round after round::

    RUN_DIR/
      checkpoint.pt, metrics.json               round 0: trained on clean data
      attack-round00-test.json                  attacks on round 0's test fold
      attack-round00-train.json                 attacks on the training folds (retraining data)
      round01/checkpoint.pt, round01/metrics.json
      round01/attack-round01-test.json …

:func:`collect_runs` finds every ``metrics.json`` and ``attack-round*-*.json``
below each RUN_DIR (recursively, any layout; file names from :mod:`advaudio.layout`)
and groups them by round:

* an attack record's round is its ``round`` (else the file's
  ``config.round``, else the ``roundNN`` of its file name);
* a ``metrics.json``'s round is its top-level ``"round"``; else the round of the
  attack results that attacked the checkpoint beside it (same resolved path, or
  results files in the same directory); else a ``roundNN`` directory name; else 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advaudio import layout
from advaudio.errors import ParameterError, StoreError
from advaudio.store.documents import read_metrics
from advaudio.store.results import AttackRecord, AttackResults, read_attack_results

__all__ = ["AttackEntry", "MetricsEntry", "RunData", "ReportData", "collect_runs"]


@dataclass
class MetricsEntry:
    """One ``metrics.json`` (a trained checkpoint) and the round it belongs to."""

    path: Path
    round: int
    round_from: str  # "metrics.json", "attack results", "directory name", "default"
    data: dict


@dataclass
class AttackEntry:
    """One attack record (one attack of one results file)."""

    path: Path  # the results JSON
    index: int  # position in its "attacks" list
    round: int
    split: str
    attack: str
    slice: str | None
    record: AttackRecord
    document: AttackResults  # the whole results file (shared between its records)

    @property
    def pointer(self) -> str:
        return f"/attacks/{self.index}"

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.split, self.attack, self.slice)

    @property
    def label(self) -> str:
        return self.attack if self.slice is None else f"{self.attack} [slice {self.slice}]"


@dataclass
class RunData:
    """Everything found below one run directory."""

    path: Path
    label: str
    metrics: dict[int, MetricsEntry] = field(default_factory=dict)
    attacks: list[AttackEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def rounds(self) -> list[int]:
        return sorted(set(self.metrics) | {a.round for a in self.attacks})

    def _first(self, from_metrics: Callable[[dict], Any], from_results: Callable[[AttackResults], Any]) -> Any:
        """The first value found: in the metrics, round by round, then in the attack results."""
        for r in sorted(self.metrics):
            v = from_metrics(self.metrics[r].data)
            if v:
                return v
        for a in self.attacks:
            v = from_results(a.document)
            if v:
                return v
        return None

    @property
    def model(self) -> dict:
        return self._first(lambda d: d.get("model") if isinstance(d.get("model"), dict) else None,
                           lambda doc: dict(doc.model) if doc.model else None) or {}

    @property
    def model_label(self) -> str:
        m = self.model
        name = str(m.get("name", "?"))
        width = m.get("width")
        if isinstance(width, (int, float)) and width != 1:
            name += f" (width {width:g})"
        return name

    @property
    def view(self) -> str:
        def get(d):
            v = d.get("view")
            return v.get("name") if isinstance(v, dict) else v

        return str(self._first(get, lambda doc: doc.view) or "?")

    @property
    def test_fold(self) -> int | None:
        return self._first(lambda d: (d.get("split") or {}).get("test_fold")
                           if isinstance(d.get("split"), dict) else None,
                           lambda doc: None)  # a results file does not record it


@dataclass
class ReportData:
    runs: list[RunData]
    warnings: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[Path]:
        files = []
        for run in self.runs:
            files += [m.path for m in run.metrics.values()]
            files += sorted({a.path for a in run.attacks})
        return files


def _read_checked(read: Callable[[Path], Any], path: Path, warnings: list[str]) -> Any:
    """``read(path)`` (a checked reader of :mod:`advaudio.store.documents`), or None with a warning
    naming the file and what is wrong with it: a damaged file's numbers are never shown."""
    try:
        return read(path)
    except StoreError as exc:
        warnings.append(f"skipped: {exc}")
        return None


def _resolved(p: Any) -> str | None:
    if not p:
        return None
    try:
        return str(Path(p).resolve())
    except (OSError, ValueError):
        return str(p)


def _labels(paths: list[Path]) -> list[str]:
    """Short unique labels: the directory name, with parents added until unique."""
    parts = [p.resolve().parts for p in paths]
    depth = 1
    while True:
        labels = ["/".join(pt[-depth:]) if pt else str(p) for pt, p in zip(parts, paths)]
        if len(set(labels)) == len(labels) or depth > max((len(pt) for pt in parts), default=1):
            return labels
        depth += 1


def collect_runs(run_dirs: Sequence[str | Path] | str | Path) -> ReportData:
    """Find and group the metrics and attack results below each run directory (see the module docstring).

    Raises ParameterError when a run directory does not exist or none holds any result.
    Files that fail their checksum or schema check (:mod:`advaudio.store.documents`: damaged,
    edited, a value out of range) are skipped with a warning naming them (``ReportData.warnings``).
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ParameterError("give at least one run directory")
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ParameterError(f"no run directory at {', '.join(missing)}")
    runs = []
    for d, label in zip(dirs, _labels(dirs)):
        run = RunData(path=d, label=label)
        # ---- attack results first: they also date the checkpoints beside them
        for path in sorted(d.rglob(layout.ATTACK_RESULTS_GLOB)):
            if not path.is_file() or ".tmp" in path.name:
                continue
            doc = _read_checked(read_attack_results, path, run.warnings)
            if doc is None:
                continue
            if doc.threat_model != layout.DOMAINS[0]:
                # budgets in waveform units: never compared with, nor mistaken for, the feature domain's
                run.warnings.append(f"skipped {path}: {doc.threat_model}-domain results (budgets in waveform "
                                    "units) are not in the report yet; it compares feature-domain budgets only")
                continue
            cfg = doc.config or {}
            named = layout.parse_attack_results_name(path.name)
            file_round = cfg.get("round", named.round if named else 0)
            for i, rec in enumerate(doc.records):
                run.attacks.append(AttackEntry(
                    path=path, index=i, round=rec.round if rec.round is not None else int(file_round or 0),
                    split=rec.split or str(cfg.get("split", "test")), attack=rec.attack,
                    slice=rec.slice_label, record=rec, document=doc,
                ))
        # duplicates (same round, split, attack, slice from two files): the newest file wins
        seen: dict[tuple, AttackEntry] = {}
        for a in sorted(run.attacks, key=lambda a: (a.path.stat().st_mtime, str(a.path))):
            k = (a.round,) + a.key
            if k in seen:
                run.warnings.append(f"{a.label} round {a.round} ({a.split}) appears in {seen[k].path} and "
                                    f"{a.path}; the newer file ({a.path.name}) is used")
            seen[k] = a
        run.attacks = sorted(seen.values(), key=lambda a: (a.round, a.split != "test", a.split, a.path.name,
                                                           a.index))
        # A job array's slices are represented by their merged results once those exist.
        merged = {(a.round, a.split, a.attack) for a in run.attacks if a.slice is None}
        run.attacks = [a for a in run.attacks if a.slice is None or (a.round, a.split, a.attack) not in merged]
        by_ckpt: dict[str, set[int]] = {}
        by_dir: dict[str, set[int]] = {}
        for a in run.attacks:
            c = _resolved(a.document.checkpoint)
            if c:
                by_ckpt.setdefault(c, set()).add(a.round)
            by_dir.setdefault(str(a.path.parent.resolve()), set()).add(a.round)
        # ---- metrics
        for path in sorted(d.rglob(layout.METRICS_NAME), key=lambda p: (len(p.parts), str(p))):
            data = _read_checked(read_metrics, path, run.warnings)
            if data is None:
                continue
            if "test" not in data and "history" not in data and "model" not in data:
                run.warnings.append(f"skipped {path}: not a training metrics file")
                continue
            rnd, source = None, None
            if isinstance(data.get("round"), (int, float)) and not isinstance(data.get("round"), bool):
                rnd, source = int(data["round"]), "metrics.json"
            else:
                ckpt = _resolved(layout.checkpoint_path(path.parent))
                cands = by_ckpt.get(ckpt) or by_dir.get(str(path.parent.resolve()))
                if cands and len(cands) == 1:
                    rnd, source = next(iter(cands)), "attack results"
                else:
                    named = layout.round_of_directory(path.parent.name)
                    rnd, source = (named, "directory name") if named is not None else (0, "default")
            if rnd in run.metrics:
                run.warnings.append(f"two metrics files for round {rnd}: {run.metrics[rnd].path} and {path}; "
                                    f"the first is used")
                continue
            run.metrics[rnd] = MetricsEntry(path=path, round=rnd, round_from=source, data=data)
        if not run.metrics and not run.attacks:
            run.warnings.append(f"{d}: no {layout.METRICS_NAME} and no {layout.ATTACK_RESULTS_GLOB} found")
        runs.append(run)
    data = ReportData(runs=runs, warnings=[w for r in runs for w in r.warnings])
    if not any(r.metrics or r.attacks for r in runs):
        raise ParameterError(f"no {layout.METRICS_NAME} or attack results below {', '.join(map(str, dirs))}")
    return data
