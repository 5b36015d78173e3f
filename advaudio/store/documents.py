"""The JSON documents of a run directory: ``metrics.json`` and attack results files.

Their one writer and their checked reader. Both are sealed (:mod:`advaudio.store.sealed`):
a file changed after it was written is refused; and both are schema-checked
(:mod:`advaudio.store.schema`) whether sealed or not (files of earlier releases are
not): an accuracy or a rate outside [0, 1], a negative budget, a string where a number
belongs is a :class:`~advaudio.errors.DamagedFileError` naming the file and the key,
so no stage and no report ever uses such a value.

``metrics.json`` (written by :mod:`advaudio.training`, after every epoch and at the end)::

    complete, epochs_done, epochs, history[] {train_loss, train_accuracy, val_accuracy,
    seconds, samples …}, samples_per_second, wall_seconds, device, model, parameters,
    view, store {path, fingerprint, dataset}, split, config, checkpoint, round,
    world_size, distributed, [test {n, accuracy, per_class_accuracy, confusion_matrix,
    loss, fold, seconds}, test_accuracy, per_class_accuracy, confusion_matrix],
    [val_accuracy], sha256

An attack results file (``attack-round<K>-<split>[-slice…].json``, written by
:mod:`advaudio.stages.attack` and :mod:`advaudio.stages.merge`)::

    checkpoint, checkpoint_sha256, model, view, store, store_fingerprint,
    clean_test_accuracy, config, device, batch_size, precision, wall_time_s,
    evaluation {checks[], …}, attacks[] (one record per attack: attack, kind, norm,
    threshold, budget, reached, reason, fooling_rate, success_rate, evaluations
    [[ε, rate] …], stats, n_samples, n_attacked, n_excluded, queries,
    gradient_queries, gradient_steps, wall_time_s, shard, split, round, slice, notes,
    checks …), [merged_from], sha256

Only the keys readers use are checked; others (a newer writer's) pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from advaudio.store.schema import Fields
from advaudio.store.sealed import read_sealed_json, write_sealed_json

__all__ = ["METRICS_FILE", "RESULTS_FILE", "check_attack_results", "check_metrics", "read_attack_results",
           "read_metrics", "write_attack_results", "write_metrics"]

#: How messages name the two kinds of file.
METRICS_FILE = "metrics file"
RESULTS_FILE = "attack results file"

_SPLITS = ("test", "train")
_KINDS = ("fixed-budget", "minimisation")


# --------------------------------------------------------------------------- #
# metrics.json
# --------------------------------------------------------------------------- #
def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> None:
    """Commit ``metrics.json`` atomically, sealed."""
    write_sealed_json(path, metrics)


def read_metrics(path: str | os.PathLike) -> dict[str, Any]:
    """``metrics.json`` after its checksum and schema checks (DamagedFileError otherwise; StoreError: no file)."""
    data = read_sealed_json(path, what=METRICS_FILE)
    check_metrics(data, Path(path))
    return data


def _test_metrics(test: Fields, *, complete: bool) -> None:
    n = test.count("n")
    accuracy = test.rate("accuracy", nullable=True)
    if accuracy is None and complete and n:
        test.fail("accuracy", f"is null although {n} test clips were evaluated")
    test.number("loss", low=0.0, optional=True, nullable=True)
    test.seconds("seconds", optional=True, nullable=True)
    per_class = test.mapping("per_class_accuracy", optional=True, nullable=True)
    for name in per_class.data if per_class is not None else ():
        per_class.rate(name, nullable=True)
    matrix = test.items("confusion_matrix", optional=True) or []
    for i, row in enumerate(matrix):
        if not isinstance(row, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                 for v in row):
            test.fail(f"confusion_matrix[{i}]", "must be a list of counts")
    if matrix and n is not None and sum(sum(row) for row in matrix) != n:
        test.fail("confusion_matrix", f"counts {sum(sum(row) for row in matrix)} clips, n says {n}")


def check_metrics(data: dict[str, Any], path: Path) -> None:
    """DamagedFileError unless ``data`` is a metrics document whose values lie in range."""
    f = Fields(data, path=path, what=METRICS_FILE)
    complete = f.boolean("complete")
    f.count("epochs_done", optional=True)
    f.count("epochs", optional=True)
    f.count("round", optional=True)
    f.number("samples_per_second", low=0.0, optional=True, nullable=True)
    f.seconds("wall_seconds", optional=True, nullable=True)
    f.rate("val_accuracy", optional=True, nullable=True)
    for key in ("model", "view", "store", "split", "config"):
        f.mapping(key, optional=True, nullable=True)
    for epoch in f.objects("history", optional=True):
        epoch.number("train_loss", low=0.0, optional=True, nullable=True)
        epoch.rate("train_accuracy", optional=True, nullable=True)
        epoch.rate("val_accuracy", optional=True, nullable=True)
        epoch.seconds("seconds", optional=True, nullable=True)
        epoch.count("samples", optional=True)
    test = f.mapping("test", optional=True, nullable=True)
    if test is not None:
        _test_metrics(test, complete=bool(complete))
    elif complete:
        f.fail("test", "is missing although the run is complete")
    accuracy = f.rate("test_accuracy", optional=True, nullable=True)
    if test is not None and "test_accuracy" in data and accuracy != test.get("accuracy"):
        f.fail("test_accuracy", f"is {accuracy!r} but test.accuracy is {test.get('accuracy')!r}")


# --------------------------------------------------------------------------- #
# Attack results
# --------------------------------------------------------------------------- #
def write_attack_results(path: str | os.PathLike, document: dict[str, Any]) -> None:
    """Commit an attack results file atomically, sealed."""
    write_sealed_json(path, document)


def read_attack_results(path: str | os.PathLike) -> dict[str, Any]:
    """An attack results file after its checksum and schema checks (DamagedFileError otherwise)."""
    data = read_sealed_json(path, what=RESULTS_FILE)
    check_attack_results(data, Path(path))
    return data


def _check(check: Fields) -> None:
    for key in ("check", "status", "text"):
        check.string(key, optional=key == "text", nullable=key == "text")


def _record(r: Fields) -> None:
    r.string("attack", nonempty=True)
    r.string("kind", choices=_KINDS, optional=True)
    r.string("norm", optional=True)
    r.number("threshold", low=0.0, high=1.0, optional=True)
    r.number("budget", low=0.0, optional=True, nullable=True)
    for key in ("fooling_rate", "success_rate", "misclassification_rate"):
        r.rate(key, optional=True, nullable=True)
    r.boolean("reached", optional=True)
    r.boolean("converged", optional=True)
    r.boolean("targeted", optional=True, nullable=True)
    r.string("reason", optional=True, nullable=True)
    r.string("search", optional=True, nullable=True)
    n = r.count("n_samples", optional=True)
    attacked = r.count("n_attacked", optional=True)
    r.count("n_excluded", optional=True)
    if n is not None and attacked is not None and attacked > n:
        r.fail("n_attacked", f"is {attacked}, more than n_samples ({n})")
    r.count("queries", optional=True)
    r.count("gradient_queries", optional=True)
    r.number("gradient_steps", low=0.0, optional=True, nullable=True)
    r.seconds("wall_time_s", optional=True, nullable=True)
    r.string("shard", optional=True, nullable=True)
    r.string("split", choices=_SPLITS, optional=True)
    r.count("round", optional=True)
    sl = r.items("slice", optional=True, nullable=True)
    if sl is not None and not (len(sl) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in sl)
                               and 0 <= sl[0] < sl[1]):
        r.fail("slice", f"must be [I, N] with 0 <= I < N, got {sl!r}")
    for i, pair in enumerate(r.items("evaluations", optional=True, nullable=True) or []):
        if not (isinstance(pair, list) and len(pair) == 2):
            r.fail(f"evaluations[{i}]", f"must be a pair [epsilon, fooling rate], got {pair!r}")
        point = Fields({"epsilon": pair[0], "rate": pair[1]}, path=r.path, what=r.what,
                       prefix=r.name(f"evaluations[{i}]"))
        point.number("epsilon", low=0.0, nullable=True)
        point.rate("rate", nullable=True)
    stats = r.mapping("stats", optional=True, nullable=True)
    if stats is not None:
        for norm in ("l1", "l2", "linf", "snr_db"):
            values = stats.mapping(norm, optional=True, nullable=True)
            if values is not None:
                for key in ("mean", "median"):
                    values.number(key, low=None if norm == "snr_db" else 0.0, optional=True, nullable=True)
    r.items("notes", optional=True, nullable=True)
    for check in r.objects("checks", optional=True, nullable=True):
        _check(check)
    r.mapping("config", optional=True, nullable=True)


def check_attack_results(data: dict[str, Any], path: Path) -> None:
    """DamagedFileError unless ``data`` is an attack results document whose values lie in range."""
    f = Fields(data, path=path, what=RESULTS_FILE)
    for record in f.objects("attacks"):
        _record(record)
    f.string("checkpoint", optional=True, nullable=True)
    f.sha256("checkpoint_sha256", optional=True, nullable=True)
    f.string("store_fingerprint", optional=True, nullable=True)
    f.rate("clean_test_accuracy", optional=True, nullable=True)
    f.mapping("config", optional=True, nullable=True)
    f.seconds("wall_time_s", optional=True, nullable=True)
    evaluation = f.mapping("evaluation", optional=True, nullable=True)
    if evaluation is not None:
        for check in evaluation.objects("checks", optional=True, nullable=True):
            _check(check)
