"""What a study's numbers mean: its defaults, which cells it makes, and what each cell trains,
attacks and retrains with (the README's "The whole study" section states them)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from advaudio.stages.attack import AttackStageConfig
from advaudio.stages.retrain import RetrainConfig
from advaudio.study.cells import StorePlan, attack_config, expand_cells, train_config
from advaudio.study.examples import EXAMPLES, example_study
from advaudio.study.spec import GridSpec, read_study
from advaudio.training import TrainConfig

MINIMAL = """
[data.synth]
dataset = "synthetic"
"""


def _spec(tmp_path: Path, text: str = MINIMAL):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return read_study(path)


def _cells(spec, folds=(1, 2, 3, 4, 5)):
    """The cells of ``spec`` over a store with ``folds`` (described here: nothing is read or featurized)."""
    stores = {d.name: StorePlan(d.name, Path("/stores") / d.name, "f" * 16, list(folds), 100, True)
              for d in spec.data}
    return expand_cells(spec, stores)


def test_a_minimal_study_file_takes_the_documented_defaults(tmp_path):
    spec = _spec(tmp_path)
    # [protocol]: every fold is a test fold once; the highest test fold is attacked and retrained
    assert (spec.protocol.cv, spec.protocol.attack_folds) == ("all", "last")
    # [grid]: one resnet18 on the STFT at full width, 128×128 inputs, seed 0
    assert spec.grid == GridSpec(models=("resnet18",), views=("stft",), widths=(1.0,), input_sizes=((128, 128),),
                                 seeds=(0,))
    # [train]: nothing set, so every cell trains with TrainConfig's own defaults
    assert spec.train == {}
    # [attacks]: pgd and deepfool tuned to 90 % on every clip of the fold; every clip's minimal ε
    # to the tolerance ("clip"), since the report's bootstrap resamples clips
    stage = AttackStageConfig(attacks=("pgd", "deepfool"), precision="clip")
    assert spec.attack == stage and stage.threshold == 0.9 and stage.limit is None
    assert spec.attack.search_precision() == "clip" and AttackStageConfig().search_precision() == "quantile"
    assert spec.train_limit is None
    # [rounds]: one round, half of every batch adversarial, fine-tuned at a tenth of the learning rate
    assert spec.rounds == 1 and spec.retrain == RetrainConfig() == RetrainConfig(mix=0.5, mode="fine-tune")
    assert (spec.run.executor, spec.run.device) == ("local", "auto")
    assert spec.directory == tmp_path / "study"


def test_cells_cover_every_fold_and_attack_the_highest_by_default(tmp_path):
    spec = _spec(tmp_path)
    cells = _cells(spec)
    assert [(c.test_fold, c.attacked) for c in cells] == [(1, False), (2, False), (3, False), (4, False), (5, True)]
    for cell in cells:
        config = train_config(spec, cell)
        assert config.test_fold == cell.test_fold and config.seed == cell.seed == 0
        assert (config.model, config.view, config.width, config.input_size) == ("resnet18", "stft", 1.0, (128, 128))
        assert config.store == "/stores/synth" and config.workers == 0  # cells run side by side
        defaults = TrainConfig(store="/stores/synth", workers=0, test_fold=cell.test_fold)
        assert config == defaults  # nothing else differs from a plain `advaudio train --test-fold`
    # on a dataset of 10 folds (UrbanSound8K), "last" is fold 10
    assert [c.test_fold for c in _cells(spec, range(1, 11)) if c.attacked] == [10]


@pytest.mark.parametrize("protocol, tested, attacked", [
    ('cv = [2, 4]', [2, 4], [4]),  # "last": the highest of the cv folds, not of the dataset
    ('cv = [2, 4]\nattack_folds = "all"', [2, 4], [2, 4]),
    ('cv = [4, 2]\nattack_folds = [2]', [2, 4], [2]),
    ('attack_folds = "none"', [1, 2, 3, 4, 5], []),
])
def test_the_protocol_decides_the_tested_and_attacked_folds(tmp_path, protocol, tested, attacked):
    spec = _spec(tmp_path, MINIMAL + "[protocol]\n" + protocol + "\n")
    cells = _cells(spec)
    assert [c.test_fold for c in cells] == tested
    assert [c.test_fold for c in cells if c.attacked] == attacked


def test_each_cell_trains_and_attacks_with_its_own_seed_and_the_shared_settings(tmp_path):
    spec = _spec(tmp_path, MINIMAL + """
[grid]
models = ["resnet18", "googlenet"]
views = ["stft", "stft+chroma"]
seeds = [0, 3]
input_sizes = ["64x64"]
widths = [0.25]
[data.synth.features]
representations = ["stft", "chroma"]
[train]
epochs = 4
lr = 1e-3
val_fraction = 0.1
[protocol]
cv = [1, 2]
[attacks]
names = ["fgsm"]
test_clips = 10
train_clips = 20
fooling_rate = 0.8
[rounds]
count = 2
mode = "from-scratch"
""")
    cells = _cells(spec)
    assert len(cells) == 2 * 2 * 2 * 2  # models × views × seeds × folds
    for cell in cells:
        config = train_config(spec, cell)
        assert (config.model, config.view, config.seed, config.test_fold) == \
            (cell.model, cell.view, cell.seed, cell.test_fold)
        assert (config.epochs, config.lr, config.val_fraction, config.width, config.input_size) == \
            (4, 1e-3, 0.1, 0.25, (64, 64))
        attack = attack_config(spec, cell)
        assert attack.seed == cell.seed  # targets and random starts follow the grid's seed
        assert (attack.attacks, attack.limit, attack.threshold, attack.precision) == (("fgsm",), 10, 0.8, "clip")
    assert spec.train_limit == 20 and spec.rounds == 2 and spec.retrain.mode == "from-scratch"
    assert {c.attacked for c in cells if c.test_fold == 2} == {True}
    assert {c.attacked for c in cells if c.test_fold == 1} == {False}


def test_changing_the_attacks_changes_only_the_attacked_cells(tmp_path):
    before = {(c.test_fold, c.attacked): c.fingerprint for c in _cells(_spec(tmp_path))}
    after = {(c.test_fold, c.attacked): c.fingerprint
             for c in _cells(_spec(tmp_path, MINIMAL + '[attacks]\nnames = ["pgd"]\n'))}
    assert before.keys() == after.keys()
    for key in before:
        assert (before[key] == after[key]) is (not key[1]), key
    trained = {(c.test_fold, c.attacked): c.fingerprint
               for c in _cells(_spec(tmp_path, MINIMAL + "[train]\nepochs = 3\n"))}
    assert all(trained[k] != before[k] for k in before)  # training changes every cell


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_examples_state_their_defaults_truly(tmp_path, name):
    spec = _spec(tmp_path, example_study(name, file="s.toml"))
    assert spec.attack.precision == "clip"  # "the default here", says the synthetic example
    assert spec.retrain.mode == "fine-tune" and spec.retrain.mix == 0.5 and spec.rounds == 1
    if name != "synthetic":  # the paper's protocol: every official fold tested once, fold 5 attacked
        cells = _cells(spec)
        assert [c.test_fold for c in cells if c.model == cells[0].model and c.view == cells[0].view] == [1, 2, 3, 4, 5]
        assert {c.test_fold for c in cells if c.attacked} == {5}
    else:  # two test folds of four, both attacked
        cells = _cells(spec, [1, 2, 3, 4])
        assert sorted({c.test_fold for c in cells}) == sorted({c.test_fold for c in cells if c.attacked}) == [3, 4]


def test_a_changed_precision_is_kept(tmp_path):
    spec = _spec(tmp_path, MINIMAL + '[attacks]\nprecision = "quantile"\n')
    assert spec.attack.precision == "quantile"
    assert dataclasses.replace(spec.attack, slice=(0, 2)).search_precision() == "quantile"
