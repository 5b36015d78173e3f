"""advaudio: adversarial training and evaluation of audio classifiers.

Every command is a function with the command's options as keyword arguments (dashes as
underscores), its arguments positional; each returns a result whose ``.path`` is what the
command prints last::

    import advaudio

    store = advaudio.featurize(dataset="synthetic", dataset_option={"clips_per_class": 8}, workers=0).path
    run = advaudio.train(store=store, model="resnet18", width=0.25, input_size="64x64", out="cache/runs/r")
    advaudio.attack(checkpoint=run.path, attacks=["pgd"], param={"pgd": {"steps": 20}})

:func:`featurize`, :func:`train`, :func:`evaluate`, :func:`attack`, :func:`merge` (``store
merge``), :func:`retrain`, :func:`rounds`, :func:`report`, :func:`listen`, :func:`demo`, and
``advaudio.study.init | plan | run | status | report``.

Libraries, in data-flow order (each package's docstring maps its modules):

* :mod:`~advaudio.datasets` — dataset readers → a table of clips; audio decoding; the synthetic set
* :mod:`~advaudio.features` — representations (stft, dwt, chroma, tonnetz) as pure functions
* :mod:`~advaudio.store` — every on-disk format of a feature store and its one reader/writer:
  feature shards, ``store.h5``, the manifest, adversarial shards
* :mod:`~advaudio.views` — stored representations → normalised model inputs in [0, 1]
* :mod:`~advaudio.data` — batches streamed from a store (and adversarial shards) to torch
* :mod:`~advaudio.models` — the six CNNs and the ``create_model(name)`` registry
* :mod:`~advaudio.training` — configuration, DDP, the checkpoint format, the loop, evaluation
* :mod:`~advaudio.attacks` — per-attack parameters, Foolbox specs by family, engine, budget tuning
* :mod:`~advaudio.layout` — the run directory and every run-file name

Stages (one per command; each reads and writes only files):
:mod:`~advaudio.stages.featurize`, training (:func:`advaudio.training.train`),
:mod:`~advaudio.stages.attack` (attack), :mod:`~advaudio.stages.merge` (job-array slices),
:mod:`~advaudio.stages.retrain` (retrain, rounds), :mod:`~advaudio.reporting`,
:mod:`~advaudio.reporting.listening`, :mod:`~advaudio.stages.demo`; :mod:`~advaudio.cli` parses and calls them.

Shared helpers: :mod:`~advaudio.errors`, :mod:`~advaudio.validation`,
:mod:`~advaudio.threads`, :mod:`~advaudio.progress`, :mod:`~advaudio.cluster`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: The Python API: every command as a function of the same name (``advaudio.attack(checkpoint=…)``),
#: its options as keyword arguments; each imported when first used, so that ``import advaudio``
#: (and ``advaudio path``) stays light. ``advaudio.study`` is the package of the study commands.
API = {
    "featurize": "advaudio.stages.featurize",
    "train": "advaudio.stages.train",
    "evaluate": "advaudio.stages.train",
    "attack": "advaudio.stages.attack",
    "merge": "advaudio.stages.merge",
    "retrain": "advaudio.stages.retrain",
    "rounds": "advaudio.stages.rounds",
    "report": "advaudio.stages.report",
    "listen": "advaudio.stages.listen",
    "demo": "advaudio.stages.demo",
}
__all__ = [*API, "study"]


def __getattr__(name: str) -> Any:
    if name == "study":
        return importlib.import_module("advaudio.study")
    if name not in API:
        raise AttributeError(f"module 'advaudio' has no attribute {name!r}")
    function = getattr(importlib.import_module(API[name]), name)
    globals()[name] = function
    return function


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
