"""The stages: one module per command, each reading and writing only files.

=============================  ==========================================================
module                         command
=============================  ==========================================================
:mod:`.featurize`              ``advaudio featurize``: audio → a feature store (Dask)
:mod:`.attack`                 ``advaudio attack``: a checkpoint → tuned attacks →
                               adversarial shards and a results JSON
:mod:`.merge`                  ``advaudio store merge``: a job array's slices → one result
:mod:`.retrain`                ``advaudio retrain``: clean + adversarial shards → a new round
:mod:`.rounds`                 ``advaudio rounds``: attack → retrain → attack, K rounds
:mod:`.listen`                 ``advaudio listen``: adversarial examples as WAV files
:mod:`.demo`                   ``advaudio demo``: the whole loop on the synthetic set
=============================  ==========================================================

Training (``train``, ``evaluate``) is :mod:`advaudio.training`; reports are
:mod:`advaudio.reporting`; studies :mod:`advaudio.study`.
"""
