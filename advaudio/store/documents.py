"""The JSON documents of a run directory: ``metrics.json`` (and attack results files, see below).

Its one writer and its checked reader. Like every run file it is sealed (:mod:`advaudio.store.sealed`):
a file changed after it was written is refused; and it is schema-checked
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

Attack results files (``attack-round<K>-<split>[-slice…].json``) are typed records:
:mod:`advaudio.store.results` owns them (:class:`~advaudio.store.results.AttackResults`);
their reader and writer are re-exported here.

Only the keys readers use are checked; others (a newer writer's) pass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from advaudio.store.results import RESULTS_FILE, read_attack_results, write_attack_results
from advaudio.store.schema import Fields
from advaudio.store.sealed import read_sealed_json, write_sealed_json

__all__ = ["METRICS_FILE", "RESULTS_FILE", "check_metrics", "read_attack_results", "read_metrics",
           "write_attack_results", "write_metrics"]

#: How messages name the file.
METRICS_FILE = "metrics file"


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
