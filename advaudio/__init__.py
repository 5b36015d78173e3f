"""advaudio: adversarial training and evaluation of audio classifiers.

Stages follow the data flow: :mod:`~advaudio.datasets` → :mod:`~advaudio.features`
→ :mod:`~advaudio.store` (via :mod:`~advaudio.featurize`) → :mod:`~advaudio.models`
→ :mod:`~advaudio.training` → :mod:`~advaudio.attacks` → report.
"""

__version__ = "0.1.0"
