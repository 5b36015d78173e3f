"""Attack results files: their typed records, their one writer and their checked reader.

An attack results file (``attack-round<K>-<split>[-slice…].json``, written by
:mod:`advaudio.stages.attack` and :mod:`advaudio.stages.merge`) is an :class:`AttackResults`::

    checkpoint, checkpoint_sha256, model, view, store, store_fingerprint,
    clean_test_accuracy, config, device, batch_size, precision, wall_time_s,
    evaluation (an Evaluation: checks[], robust_accuracy) or null,
    attacks[] (one AttackRecord per attack: attack, kind, norm, threshold, budget,
    reached, reason, fooling_rate, success_rate, evaluations [[ε, rate] …], stats,
    n_samples, n_attacked, n_excluded, queries, gradient_queries, wall_time_s,
    tolerance, converged, notes, search, checks, config, targeted, shard, split,
    round, slice[, merged_from]),
    plugins, [merged_from], sha256

Names: ``threshold`` is the fooling rate a budget was tuned to (requested);
``fooling_rate`` is always a measured rate. (The stage ``config`` of an earlier
release may call the threshold ``fooling_rate``; the stage that reads a config
maps it, :meth:`advaudio.stages.attack.AttackStageConfig.upgrade_dict`.)

The file is sealed (:mod:`advaudio.store.sealed`) and every value a reader uses
faces its schema check (:mod:`advaudio.store.schema`) in the same pass that builds
the typed record (:meth:`AttackResults.from_json`): an out-of-range or mistyped
value, or a missing key every release wrote, is a DamagedFileError naming the
file and the key; no stage or report ever sees such a value.

Files of earlier releases and of newer ones: a key an earlier release did not
write reads as its default and is remembered as ``absent``; a key this release
does not know is kept in ``extra``. Both are written back as they were, so a file
read and written again (a merge of slices) keeps its keys:
``AttackResults.from_json(d, path).to_json() == d``.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from advaudio.store.schema import Fields
from advaudio.store.sealed import DIGEST_KEY, read_sealed_json, write_sealed_json

__all__ = ["KINDS", "RESULTS_FILE", "SPLITS", "AttackRecord", "AttackResults", "Check", "Evaluation", "Note",
           "excluded_note", "notes_of", "read_attack_results", "write_attack_results"]

#: How messages name the file.
RESULTS_FILE = "attack results file"
SPLITS = ("test", "train")
KINDS = ("fixed-budget", "minimisation")


# --------------------------------------------------------------------------- #
# Notes and evaluation checks
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class Note:
    """A remark on a run: a stable ``code``, the ``counts`` it is about, and ``text``.

    Codes written by advaudio: ``excluded-misclassified`` (count, of),
    ``untargeted`` (the attack cannot be targeted), ``fgsm-targeted-step``,
    ``targets-given``, ``targets-ignored``, ``const-retries`` (retried,
    const_retries, last_const, last_steps, failed), ``const-bracket`` (pilot,
    start_const, growth), ``starting-points`` (pool, noise, noise_draws, none),
    ``query-budget`` (max_queries, most_used, queries_per_clip, exhausted, attacked),
    ``no-starting-point`` (count), ``reached-at-eps-low``
    (eps_low), ``bisection-max-iter`` (max_iter, bracket), ``bisection-one-epsilon`` (an
    attack without per-clip ε was bisected), ``merged`` (count), ``merged-precision``
    (budget_low, width), ``mixed-budgets`` (budgets); a note of one slice of a merged
    set also has ``slice`` ([index, count]).  ``note`` marks a plain string from a
    file written before notes had codes. Programs read the code and counts, people
    the text; nothing parses the text back.

    JSON form (:meth:`to_json`): ``{"code": ..., **counts, "text": ...}``.
    """

    code: str
    text: str
    counts: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, **self.counts, "text": self.text}

    @classmethod
    def from_json(cls, value: Any) -> Note:
        """Inverse of :meth:`to_json`; also reads the plain strings of older files."""
        if isinstance(value, Note):
            return value
        if isinstance(value, Mapping):
            counts = {k: v for k, v in value.items() if k not in ("code", "text")}
            return cls(code=str(value.get("code", "note")), text=str(value.get("text", "")), counts=counts)
        text = str(value)
        # Older files: the one note a merge must recognise, by its text (they had no codes).
        m = _LEGACY_EXCLUDED.match(text)
        if m:
            return excluded_note(int(m["count"]), int(m["of"]))
        return cls(code="note", text=text)


_LEGACY_EXCLUDED = re.compile(
    r"^(?P<count>\d+) of (?P<of>\d+) sample\(s\) misclassified when clean: not attacked, excluded from the rates$"
)


def excluded_note(count: int, of: int) -> Note:
    """The note of ``count`` of ``of`` samples not attacked because misclassified when clean."""
    return Note("excluded-misclassified",
                f"{count} of {of} sample(s) misclassified when clean: not attacked, excluded from the rates",
                {"count": int(count), "of": int(of)})


def notes_of(values: Sequence[Any] | None) -> tuple[Note, ...]:
    """Notes as a file holds them (structured, or an older file's plain strings)."""
    return tuple(Note.from_json(v) for v in values or ())


@dataclass(frozen=True)
class Check:
    """One evaluation check (Carlini et al. 2019; :mod:`advaudio.attacks.checks`) as a file holds it.

    JSON form: ``{"check", "status": "pass"|"warn", "attacks", "text", **values}``;
    ``values`` are the numbers the check measured (their names depend on the check).
    """

    check: str
    status: str
    attacks: tuple[str, ...] | None = None  # the attacks it compares (None: a file without the key)
    text: str | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def about(self, attack: str) -> bool:
        """Whether the check concerns ``attack``."""
        return attack in (self.attacks or ())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "status": self.status}
        if self.attacks is not None:
            out["attacks"] = list(self.attacks)
        return {**out, "text": self.text, **self.values}

    @classmethod
    def from_fields(cls, f: Fields) -> Check:
        attacks = f.items("attacks", optional=True)
        if attacks is not None and not all(isinstance(a, str) for a in attacks):
            f.fail("attacks", f"must be a list of attack names, got {attacks!r}")
        return cls(check=f.string("check"), status=f.string("status"),
                   attacks=tuple(attacks) if attacks is not None else None,
                   text=f.string("text", optional=True, nullable=True),
                   values={k: v for k, v in f.data.items() if k not in ("check", "status", "attacks", "text")})


@dataclass(frozen=True)
class Evaluation:
    """A results file's ``evaluation``: its checks and the robust accuracy per norm
    (:func:`advaudio.attacks.checks.evaluation_checks`)."""

    checks: tuple[Check, ...] | None = ()
    robust_accuracy: Mapping[str, Any] | None = None  # norm → {attacks, epsilons, accuracy, accuracy_low}
    extra: Mapping[str, Any] = field(default_factory=dict)

    def failed(self) -> list[Check]:
        return [c for c in self.checks or () if not c.passed]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.checks is not None:
            out["checks"] = [c.to_json() for c in self.checks]
        if self.robust_accuracy is not None:
            out["robust_accuracy"] = self.robust_accuracy
        return {**out, **self.extra}

    @classmethod
    def from_fields(cls, f: Fields) -> Evaluation:
        checks = f.items("checks", optional=True, nullable=True)
        ra = f.mapping("robust_accuracy", optional=True)
        return cls(checks=None if checks is None else tuple(Check.from_fields(c) for c in f.objects("checks")),
                   robust_accuracy=ra.data if ra is not None else None,
                   extra={k: v for k, v in f.data.items() if k not in ("checks", "robust_accuracy")})


# --------------------------------------------------------------------------- #
# The records
# --------------------------------------------------------------------------- #
class _Keyed:
    """What the two record types share: JSON keys named as their fields, ``extra`` and ``absent``."""

    KEYS: ClassVar[tuple[str, ...]]  # the JSON keys, in the order of the fields
    REQUIRED: ClassVar[tuple[str, ...]]  # keys every release wrote: a file without one is refused
    extra: Mapping[str, Any]
    absent: frozenset[str]

    @classmethod
    def _absent(cls, data: Mapping[str, Any]) -> frozenset[str]:
        return frozenset(k for k in cls.KEYS if k not in data)

    @classmethod
    def _extra(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in cls.KEYS and k != DIGEST_KEY}

    def _written(self, values: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in values.items() if k not in self.absent}
        out.update(self.extra)
        return out

    def with_values(self, **changes: Any) -> Any:
        """A copy with ``changes`` (fields); a key given here is written even where the original lacked it."""
        return dataclasses.replace(self, **changes, absent=self.absent - changes.keys())


@dataclass(frozen=True)
class AttackRecord(_Keyed):
    """One attack's entry of a results file (``attacks[i]``), see the module docstring.

    ``budget`` is None when no budget was found (stored as null; NaN never reaches a
    file); ``evaluations`` are (ε, fooling rate) pairs: the probes of a bisection or the
    empirical CDF of the per-clip minimal budgets; ``stats`` maps l1/l2/linf/snr_db to
    {mean, median} over the clips fooled within the budget; ``tolerance`` is the budget
    search's (rtol, atol[, precision, budget_low]); ``config`` the attack's configuration;
    ``shard`` the adversarial shard's path (None: no clip attacked); ``slice`` (I, N) of a
    job-array run; ``merged_from`` (``{budget_source, slices}``) only in merged records.
    Checked and kept in ``extra``: ``gradient_steps``, ``misclassification_rate``.
    """

    attack: str
    kind: str
    norm: str
    threshold: float
    budget: float | None
    reached: bool
    reason: str | None = None
    fooling_rate: float | None = None
    success_rate: float | None = None
    evaluations: tuple[tuple[float | None, float | None], ...] = ()
    stats: Mapping[str, Mapping[str, float | None]] | None = None
    n_samples: int | None = None
    n_attacked: int | None = None
    n_excluded: int | None = None
    queries: int | None = None
    gradient_queries: int | None = None
    wall_time_s: float | None = None
    tolerance: Mapping[str, Any] | None = None
    converged: bool | None = None
    notes: tuple[Note, ...] = ()
    search: str | None = None
    checks: tuple[Check, ...] = ()
    config: Mapping[str, Any] | None = None
    targeted: bool | None = None
    shard: str | None = None
    split: str | None = None
    round: int | None = None
    slice: tuple[int, int] | None = None
    merged_from: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: keys not written (a file of an earlier release lacked them; a fresh record is no merge)
    absent: frozenset[str] = frozenset({"merged_from"})

    KEYS: ClassVar[tuple[str, ...]] = (
        "attack", "kind", "norm", "threshold", "budget", "reached", "reason", "fooling_rate", "success_rate",
        "evaluations", "stats", "n_samples", "n_attacked", "n_excluded", "queries", "gradient_queries",
        "wall_time_s", "tolerance", "converged", "notes", "search", "checks", "config", "targeted", "shard",
        "split", "round", "slice", "merged_from")
    REQUIRED: ClassVar[tuple[str, ...]] = ("attack", "kind", "norm", "threshold", "budget", "reached")

    @property
    def slice_label(self) -> str | None:
        """``"I/N"`` of a job-array slice's record, None otherwise."""
        return f"{self.slice[0]}/{self.slice[1]}" if self.slice is not None else None

    @property
    def gradient_steps(self) -> float:
        """Input-gradient evaluations per attacked clip."""
        return float(self.gradient_queries or 0) / max(1, self.n_attacked or 1)

    def stat(self, norm: str, key: str = "median") -> float | None:
        """A perturbation statistic (``stats[norm][key]``), None when not recorded."""
        return ((self.stats or {}).get(norm) or {}).get(key)

    def to_json(self) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in self.KEYS}
        values.update(
            evaluations=[list(p) for p in self.evaluations], notes=[n.to_json() for n in self.notes],
            checks=[c.to_json() for c in self.checks], slice=list(self.slice) if self.slice is not None else None,
        )
        return self._written(values)

    @classmethod
    def from_json(cls, data: Any, path: str | os.PathLike, prefix: str = "") -> AttackRecord:
        """The record ``data`` of the file ``path`` (at ``prefix``, for messages), after its schema checks."""
        return cls.from_fields(Fields(data, path=path, what=RESULTS_FILE, prefix=prefix))

    @classmethod
    def from_fields(cls, r: Fields) -> AttackRecord:
        v: dict[str, Any] = dict(
            attack=r.string("attack", nonempty=True),
            kind=r.string("kind", choices=KINDS),
            norm=r.string("norm", nonempty=True),
            threshold=r.number("threshold", low=0.0, high=1.0),
            budget=r.number("budget", low=0.0, nullable=True),
            reached=r.boolean("reached"),
            reason=r.string("reason", optional=True, nullable=True),
            fooling_rate=r.rate("fooling_rate", optional=True, nullable=True),
            success_rate=r.rate("success_rate", optional=True, nullable=True),
            converged=r.boolean("converged", optional=True, nullable=True),
            targeted=r.boolean("targeted", optional=True, nullable=True),
            search=r.string("search", optional=True, nullable=True),
            n_samples=r.count("n_samples", optional=True),
            n_attacked=r.count("n_attacked", optional=True),
            n_excluded=r.count("n_excluded", optional=True),
            queries=r.count("queries", optional=True),
            gradient_queries=r.count("gradient_queries", optional=True),
            wall_time_s=r.seconds("wall_time_s", optional=True, nullable=True),
            shard=r.string("shard", optional=True, nullable=True),
            split=r.string("split", choices=SPLITS, optional=True),
            round=r.count("round", optional=True),
        )
        r.rate("misclassification_rate", optional=True, nullable=True)
        r.number("gradient_steps", low=0.0, optional=True, nullable=True)
        if v["n_samples"] is not None and v["n_attacked"] is not None and v["n_attacked"] > v["n_samples"]:
            r.fail("n_attacked", f"is {v['n_attacked']}, more than n_samples ({v['n_samples']})")
        sl = r.items("slice", optional=True, nullable=True)
        if sl is not None and not (len(sl) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in sl)
                                   and 0 <= sl[0] < sl[1]):
            r.fail("slice", f"must be [I, N] with 0 <= I < N, got {sl!r}")
        v["slice"] = tuple(sl) if sl is not None else None
        evaluations = []
        for i, pair in enumerate(r.items("evaluations", optional=True, nullable=True) or []):
            if not (isinstance(pair, list) and len(pair) == 2):
                r.fail(f"evaluations[{i}]", f"must be a pair [epsilon, fooling rate], got {pair!r}")
            point = Fields({"epsilon": pair[0], "rate": pair[1]}, path=r.path, what=r.what,
                           prefix=r.name(f"evaluations[{i}]"))
            evaluations.append((point.number("epsilon", low=0.0, nullable=True), point.rate("rate", nullable=True)))
        v["evaluations"] = tuple(evaluations)
        stats = r.mapping("stats", optional=True, nullable=True)
        if stats is not None:
            for norm in ("l1", "l2", "linf", "snr_db"):
                values = stats.mapping(norm, optional=True, nullable=True)
                if values is not None:
                    for key in ("mean", "median"):
                        values.number(key, low=None if norm == "snr_db" else 0.0, optional=True, nullable=True)
        v["stats"] = stats.data if stats is not None else None
        tolerance = r.mapping("tolerance", optional=True, nullable=True)
        v["tolerance"] = tolerance.data if tolerance is not None else None
        v["notes"] = notes_of(r.items("notes", optional=True, nullable=True))
        v["checks"] = tuple(Check.from_fields(c) for c in r.objects("checks", optional=True, nullable=True))
        config = r.mapping("config", optional=True, nullable=True)
        v["config"] = config.data if config is not None else None
        merged = r.mapping("merged_from", optional=True, nullable=True)
        v["merged_from"] = merged.data if merged is not None else None
        return cls(**v, extra=cls._extra(r.data), absent=cls._absent(r.data))


@dataclass(frozen=True)
class AttackResults(_Keyed):
    """A whole attack results file, see the module docstring.

    ``records`` are the file's ``attacks``; ``config`` the stage configuration as the
    writing release recorded it; ``evaluation`` None when the checks were not run;
    ``merged_from`` (``{results: [slice files]}``) only in a merge's file.
    """

    records: tuple[AttackRecord, ...]
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    model: Mapping[str, Any] | None = None
    view: str | None = None
    store: str | None = None
    store_fingerprint: str | None = None
    clean_test_accuracy: float | None = None
    config: Mapping[str, Any] | None = None
    device: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    wall_time_s: float | None = None
    evaluation: Evaluation | None = None
    plugins: Sequence[Mapping[str, Any]] | None = None
    merged_from: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)
    absent: frozenset[str] = frozenset({"merged_from"})

    KEYS: ClassVar[tuple[str, ...]] = (
        "attacks", "checkpoint", "checkpoint_sha256", "model", "view", "store", "store_fingerprint",
        "clean_test_accuracy", "config", "device", "batch_size", "precision", "wall_time_s", "evaluation",
        "plugins", "merged_from")
    REQUIRED: ClassVar[tuple[str, ...]] = ("attacks",)

    def record(self, attack: str) -> AttackRecord | None:
        """The record of ``attack`` (the first, should a file hold two), None when there is none."""
        return next((r for r in self.records if r.attack == attack), None)

    @property
    def failed_checks(self) -> list[Check]:
        return self.evaluation.failed() if self.evaluation is not None else []

    def to_json(self) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in self.KEYS if k != "attacks"}
        values["attacks"] = [r.to_json() for r in self.records]
        values["evaluation"] = self.evaluation.to_json() if self.evaluation is not None else None
        return self._written(values)

    @classmethod
    def from_json(cls, data: Any, path: str | os.PathLike) -> AttackResults:
        """The results document ``data`` read from ``path``, after its schema checks
        (DamagedFileError naming the file and the key otherwise)."""
        f = Fields(data, path=path, what=RESULTS_FILE)
        records = tuple(AttackRecord.from_fields(r) for r in f.objects("attacks"))
        evaluation = f.mapping("evaluation", optional=True, nullable=True)
        v = dict(
            checkpoint=f.string("checkpoint", optional=True, nullable=True),
            checkpoint_sha256=f.sha256("checkpoint_sha256", optional=True, nullable=True),
            view=f.string("view", optional=True, nullable=True),
            store=f.string("store", optional=True, nullable=True),
            store_fingerprint=f.string("store_fingerprint", optional=True, nullable=True),
            clean_test_accuracy=f.rate("clean_test_accuracy", optional=True, nullable=True),
            device=f.string("device", optional=True, nullable=True),
            batch_size=f.count("batch_size", optional=True, nullable=True),
            precision=f.string("precision", optional=True, nullable=True),
            wall_time_s=f.seconds("wall_time_s", optional=True, nullable=True),
            evaluation=Evaluation.from_fields(evaluation) if evaluation is not None else None,
            plugins=f.items("plugins", optional=True, nullable=True),
        )
        for key in ("model", "config", "merged_from"):
            m = f.mapping(key, optional=True, nullable=True)
            v[key] = m.data if m is not None else None
        return cls(records=records, **v, extra=cls._extra(data), absent=cls._absent(data))

    @classmethod
    def read(cls, path: str | os.PathLike) -> AttackResults:
        """The results file at ``path`` after its checksum and schema checks (DamagedFileError
        otherwise; StoreError: no file)."""
        return cls.from_json(read_sealed_json(path, what=RESULTS_FILE), Path(path))

    def write(self, path: str | os.PathLike) -> dict[str, Any]:
        """Commit the file atomically, sealed; returns its JSON as written (digest aside)."""
        written = write_sealed_json(path, self.to_json())
        written.pop(DIGEST_KEY)
        return written


def read_attack_results(path: str | os.PathLike) -> AttackResults:
    """An attack results file after its checksum and schema checks (:meth:`AttackResults.read`)."""
    return AttackResults.read(path)


def write_attack_results(path: str | os.PathLike, results: AttackResults) -> dict[str, Any]:
    """Commit an attack results file atomically, sealed (:meth:`AttackResults.write`)."""
    return results.write(path)
