"""The stages: one module per command, each reading and writing only files.

=============================  ==========================================================
module                         command
=============================  ==========================================================
:mod:`.featurize`              ``advaudio featurize``: audio → a feature store (Dask)
:mod:`.train`                  ``advaudio train`` / ``evaluate`` (over :mod:`advaudio.training`)
:mod:`.attack`                 ``advaudio attack``: a checkpoint → tuned attacks →
                               adversarial shards and a results JSON
:mod:`.merge`                  ``advaudio store merge``: a job array's slices → one result
:mod:`.retrain`                ``advaudio retrain``: clean + adversarial shards → a new round
:mod:`.rounds`                 ``advaudio rounds``: attack → retrain → attack, K rounds
:mod:`.report`                 ``advaudio report`` (over :mod:`advaudio.reporting`)
:mod:`.listen`                 ``advaudio listen``: adversarial examples as WAV files
:mod:`.demo`                   ``advaudio demo``: the whole loop on the synthetic set
=============================  ==========================================================

Each stage module holds the command as a function of the same name (``attack(**options)``,
the Python API: ``advaudio.attack``) beside the library functions it calls
(``attack_stage(config, …)``). Its options and configuration class live in a light module
beside it, ``<stage>_config`` (``attack_config``: :class:`AttackStageConfig` and
:data:`ATTACK`), which imports no torch, librosa, h5py or Dask: the CLI builds its
``--help`` from those alone. Studies are :mod:`advaudio.study`.
"""
