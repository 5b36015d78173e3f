"""advaudio: adversarial training and evaluation of audio classifiers.

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

__version__ = "0.1.0"
