"""A study cell's files: the one writer and reader of ``cell.json`` and ``state.json``.

``cell.json`` is a cell's summary, written atomically as the cell's last step: its
presence (with the cell's fingerprint) is what "done" means. It holds what the
study report needs, copied from the run directory's own files, with the path of each
source so every number can be traced back::

    format "advaudio-study-cell", version 1
    cell_id, fingerprint            the cell's name and the hash of everything it ran with
    key                             dataset, model, view, width, input_size, seed, test_fold, attacked
    config                          train / attack / rounds configuration as run
    run_dir                         the cell's run directory
    rounds[]                        per round K (0: clean training):
        round, checkpoint, checkpoint_sha256, metrics (path), test_accuracy, test_clips
        attacks{name}               attacks on the test fold (attacked cells only):
            attack, kind, norm, search, threshold, budget, reached, fooling_rate,
            clip_rows[]             store rows of the attacked clips (correctly classified)
            minimal_norms[]         per attacked clip, in ``norm``; null: not fooled at any budget tried
            checks[]                evaluation checks {check, status, text}
            results, shard          the attack results JSON and the adversarial shard
            wall_time_s, gradient_steps
        autoattack[]                AutoAttack robust accuracy per (norm, eps) (attacked cells of a study
                                    with [attacks] autoattack): norm, eps, robust_accuracy, ci_low,
                                    ci_high, n, n_correct, n_robust, warnings[], seconds, results (path)
    wall_time_s                     {"train": …, "rounds": …, "total": …}, measured
    versions, finished

``cell.json`` is sealed (:mod:`advaudio.store.sealed`: the digest of its content under
``sha256``) and schema-checked when read; a damaged one is a DamagedFileError, which
``study run`` answers by setting the file aside and recomputing the summary.

``state.json`` says a cell is running (host, pid, start time) or failed (the reason
and the log's path); it is advisory, ``cell.json`` alone decides "done".
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advaudio import layout
from advaudio.errors import DamagedFileError, StoreError
from advaudio.store import Fields, read_sealed_json, write_json_atomic, write_sealed_json

FORMAT = "advaudio-study-cell"
VERSION = 1


@dataclass(frozen=True)
class AttackOutcome:
    """One attack on a cell's test fold in one round (see the module docstring)."""

    attack: str
    kind: str
    norm: str
    search: str
    threshold: float
    budget: float
    reached: bool
    fooling_rate: float
    clip_rows: np.ndarray  # int64, store rows of the attacked clips
    minimal_norms: np.ndarray  # float64, +inf: not fooled at any budget tried
    checks: tuple[dict, ...] = ()
    results: str = ""
    shard: str = ""
    wall_time_s: float = math.nan
    gradient_steps: float = math.nan
    domain: str = "feature"  # the threat model (budgets of the waveform domain are in waveform units)
    #: waveform domain: per attacked clip, the SNR of its adversarial waveform in dB (-inf: not fooled)
    clip_snr_db: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "clip_rows", np.asarray(self.clip_rows, np.int64).reshape(-1))
        if self.clip_snr_db is not None:
            snr = np.asarray([-math.inf if v is None else v for v in np.asarray(self.clip_snr_db, object).reshape(-1)],
                             np.float64)
            if len(snr) != len(self.clip_rows) or np.isnan(snr).any():
                raise StoreError(f"attack {self.attack}: {len(snr)} SNRs (NaN-free) for {len(self.clip_rows)} clips")
            object.__setattr__(self, "clip_snr_db", snr)
        norms = np.asarray([math.inf if v is None else v for v in np.asarray(self.minimal_norms, object).reshape(-1)],
                           np.float64)
        object.__setattr__(self, "minimal_norms", norms)
        object.__setattr__(self, "checks", tuple(dict(c) for c in self.checks))
        if len(self.clip_rows) != len(self.minimal_norms):
            raise StoreError(f"attack {self.attack}: {len(self.clip_rows)} clip rows but "
                             f"{len(self.minimal_norms)} minimal norms")
        if np.isnan(self.minimal_norms).any():
            raise StoreError(f"attack {self.attack}: minimal norms hold NaN (only attacked clips belong here)")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["clip_rows"] = self.clip_rows.tolist()
        d["minimal_norms"] = [None if not math.isfinite(v) else float(v) for v in self.minimal_norms]
        d["checks"] = list(self.checks)
        if self.clip_snr_db is None:  # the feature domain's outcome: as before the axis
            d.pop("clip_snr_db")
        else:
            d["clip_snr_db"] = [None if not math.isfinite(v) else float(v) for v in self.clip_snr_db]
        if self.domain == "feature":
            d.pop("domain")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AttackOutcome:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @property
    def failed_checks(self) -> list[dict]:
        return [c for c in self.checks if c.get("status") != "pass"]


@dataclass(frozen=True)
class RoundOutcome:
    """One round of a cell: its checkpoint, clean test accuracy, and the attacks on its test fold."""

    round: int
    checkpoint: str
    checkpoint_sha256: str
    metrics: str
    test_accuracy: float
    test_clips: int
    attacks: dict[str, AttackOutcome] = field(default_factory=dict)
    autoattack: tuple[dict, ...] = ()  # AutoAttack robust accuracy per (norm, eps)

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("attacks", "autoattack")}
        d["attacks"] = {name: a.to_json() for name, a in self.attacks.items()}
        if self.autoattack:
            d["autoattack"] = [dict(a) for a in self.autoattack]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoundOutcome:
        values = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("attacks", "autoattack")}
        return cls(**values, attacks={n: AttackOutcome.from_json(a) for n, a in (d.get("attacks") or {}).items()},
                   autoattack=tuple(dict(a) for a in d.get("autoattack") or ()))


@dataclass(frozen=True)
class CellSummary:
    """What a finished cell produced (``cell.json``)."""

    cell_id: str
    fingerprint: str
    key: dict[str, Any]
    config: dict[str, Any]
    run_dir: str
    rounds: tuple[RoundOutcome, ...]
    wall_time_s: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    finished: float = 0.0
    path: str = ""  # where it was read from (not written)

    def round(self, k: int) -> RoundOutcome | None:
        return next((r for r in self.rounds if r.round == k), None)

    @property
    def last_round(self) -> RoundOutcome:
        return max(self.rounds, key=lambda r: r.round)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "cell_id": self.cell_id, "fingerprint": self.fingerprint,
                "key": self.key, "config": self.config, "run_dir": self.run_dir,
                "rounds": [r.to_json() for r in self.rounds], "wall_time_s": self.wall_time_s,
                "versions": self.versions, "finished": self.finished}


def summary_path(cell_dir: str | os.PathLike) -> Path:
    return Path(cell_dir) / layout.CELL_SUMMARY_NAME


def write_cell_summary(cell_dir: str | os.PathLike, summary: CellSummary) -> Path:
    """Commit ``cell.json`` atomically (a kill leaves either no file or the whole one)."""
    path = summary_path(cell_dir)
    write_sealed_json(path, summary.to_json())
    return path


def read_cell_summary(cell_dir: str | os.PathLike) -> CellSummary | None:
    """The summary of a finished cell; None when the cell has none (not done).

    A file that is not a cell summary of this format, fails its checksum or its schema
    (truncated, edited, a value out of range) is a DamagedFileError naming it; one of a
    newer version is a StoreError (not damaged: read it with that release).
    """
    path = summary_path(cell_dir)
    if not path.is_file() and not path.is_symlink():
        return None
    d = read_sealed_json(path, what=WHAT)
    if d.get("format") != FORMAT:
        raise DamagedFileError(f"{WHAT} {path} is damaged: its format is {d.get('format')!r}, not {FORMAT!r}")
    version = d.get("version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise StoreError(f"{path} has cell-summary version {d.get('version')}; this advaudio reads up to {VERSION}")
    check_summary(d, path)
    try:
        return CellSummary(cell_id=d["cell_id"], fingerprint=d["fingerprint"], key=d["key"], config=d["config"],
                           run_dir=d["run_dir"], rounds=tuple(RoundOutcome.from_json(r) for r in d["rounds"]),
                           wall_time_s=d.get("wall_time_s") or {}, versions=d.get("versions") or {},
                           finished=float(d.get("finished") or 0.0), path=str(path))
    except (KeyError, TypeError, StoreError) as exc:
        raise DamagedFileError(f"{WHAT} {path} is damaged: {exc}") from None


#: How messages name ``cell.json``.
WHAT = "cell summary"


def check_summary(d: dict[str, Any], path: Path) -> None:
    """DamagedFileError unless ``d`` is a cell summary whose values lie in range."""
    f = Fields(d, path=path, what=WHAT)
    f.count("version")
    for key in ("cell_id", "fingerprint", "run_dir"):
        f.string(key, nonempty=True)
    for key in ("key", "config"):
        f.mapping(key)
    for key in ("wall_time_s", "versions"):
        f.mapping(key, optional=True, nullable=True)
    f.number("finished", low=0.0, optional=True, nullable=True)
    rounds = f.objects("rounds")
    if not rounds:
        f.fail("rounds", "is empty")
    for r in rounds:
        r.count("round")
        for key in ("checkpoint", "metrics"):
            r.string(key)
        r.sha256("checkpoint_sha256")
        r.rate("test_accuracy")
        r.count("test_clips")
        attacks = r.mapping("attacks", optional=True)
        for name in attacks.data if attacks is not None else ():
            a = attacks.mapping(name)
            for key in ("attack", "kind", "norm"):
                a.string(key)
            a.string("search", optional=True)
            a.number("threshold", low=0.0, high=1.0)
            a.number("budget", low=0.0, nullable=True)
            a.boolean("reached")
            a.rate("fooling_rate", nullable=True)
            a.number("wall_time_s", low=0.0, optional=True, nullable=True)
            a.number("gradient_steps", low=0.0, optional=True, nullable=True)
            rows = a.items("clip_rows")
            norms = a.items("minimal_norms")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in rows):
                a.fail("clip_rows", "must be a list of store rows (integers >= 0)")
            if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf)
                       for v in norms):
                a.fail("minimal_norms", "must be a list of norms (numbers >= 0, or null: never fooled)")
            if len(rows) != len(norms):
                a.fail("minimal_norms", f"has {len(norms)} values for {len(rows)} clip rows")
            a.string("domain", choices=layout.DOMAINS, optional=True)
            snr = a.items("clip_snr_db", optional=True)
            if snr is not None:
                if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
                           for v in snr):
                    a.fail("clip_snr_db", "must be a list of SNRs in dB (numbers, or null: never fooled)")
                if len(snr) != len(rows):
                    a.fail("clip_snr_db", f"has {len(snr)} values for {len(rows)} clip rows")
            a.objects("checks", optional=True)
        for a in r.objects("autoattack", optional=True):
            a.string("norm")
            a.number("eps", low=0.0)
            for key in ("robust_accuracy", "ci_low", "ci_high"):
                a.rate(key, nullable=True)
            for key in ("n", "n_correct", "n_robust"):
                a.count(key)
            a.items("warnings", optional=True)


# --------------------------------------------------------------------------- #
# state.json
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class CellState:
    """``running`` or ``failed`` (with ``reason``); ``done`` and ``pending`` are not written."""

    status: str
    host: str = ""
    pid: int = 0
    started: float = 0.0
    ended: float = 0.0
    reason: str = ""
    log: str = ""

    @property
    def alive(self) -> bool | None:
        """For ``running``: whether its process still exists (None: on another host, unknown)."""
        if self.status != "running":
            return False
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def state_path(cell_dir: str | os.PathLike) -> Path:
    return Path(cell_dir) / layout.CELL_STATE_NAME


def log_path(cell_dir: str | os.PathLike) -> Path:
    return Path(cell_dir) / layout.CELL_LOG_NAME


def mark_running(cell_dir: str | os.PathLike) -> None:
    write_json_atomic(state_path(cell_dir), {"status": "running", "host": socket.gethostname(), "pid": os.getpid(),
                                              "started": time.time(), "log": str(log_path(cell_dir))})


def mark_failed(cell_dir: str | os.PathLike, reason: str) -> None:
    before = read_cell_state(cell_dir)
    write_json_atomic(state_path(cell_dir), {"status": "failed", "host": socket.gethostname(), "pid": os.getpid(),
                                              "started": before.started if before else 0.0, "ended": time.time(),
                                              "reason": reason, "log": str(log_path(cell_dir))})


def clear_state(cell_dir: str | os.PathLike) -> None:
    state_path(cell_dir).unlink(missing_ok=True)


def read_cell_state(cell_dir: str | os.PathLike) -> CellState | None:
    path = state_path(cell_dir)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return CellState(status="failed", reason=f"{path} is damaged")
    return CellState(**{k: d[k] for k in CellState.__dataclass_fields__ if k in d})
