"""The whole loop through the Python API at toy sizes: featurize → train → attack (test and
train splits) → retrain → report, each command a function of ``import advaudio``.

Run it from a scratch directory (it writes ``cache/`` there)::

    python examples/python_api.py

About a minute on a laptop CPU. The README's "Python API" block is this script's body
(``tests/test_api.py`` checks that they agree, and runs it against the same commands
through the CLI).
"""

import advaudio

store = advaudio.featurize(dataset="synthetic", dataset_option={"clips_per_class": 12, "n_classes": 4,
                           "duration": 1.0}, features=["stft"], workers=0)
model = advaudio.train(store=store.path, model="resnet18", width=0.125, input_size="32x32", epochs=2,
                       batch_size=16, workers=0, out="cache/runs/api")
print(f"test accuracy {model.metrics['test']['accuracy']:.3f}")
for split in ("test", "train"):  # robustness, then the adversarial examples to retrain with
    attack = advaudio.attack(checkpoint=model.path, split=split, attacks=["pgd", "fgsm"], limit=24,
                             param={"pgd": {"steps": 10}})
    print(split, {r["attack"]: r["budget"] for r in attack.document["attacks"]})
retrained = advaudio.retrain(checkpoint=model.path, epochs=1, out="cache/runs/api/round01")
print(f"retrained: test accuracy {retrained.metrics['test']['accuracy']:.3f}")
report = advaudio.report("cache/runs/api", out="cache/report-api", listen=False, max_clips=1)
print(report.path)
