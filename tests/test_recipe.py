"""Training recipes: resolution and overrides, old checkpoints as the paper recipe, augmented runs that resume."""

import json

import pytest
import torch
from click.testing import CliRunner

from advaudio.cli import cli
from advaudio.errors import ParameterError
from advaudio.training import RECIPES, TrainConfig, evaluate, load_checkpoint, read_checkpoint, train
from advaudio.training.checkpoint import DIGEST_KEY, content_digest
from advaudio.training.config import ADDED_WITH_RECIPES

#: The training parameters of every run before recipes existed, with their values then.
BEFORE_RECIPES = dict(epochs=30, batch_size=32, lr=2e-3, weight_decay=0.05, optimizer="adamw", schedule="onecycle",
                      warmup_fraction=0.3, label_smoothing=0.0, time_shift=0.5)

TINY = dict(view="stft+chroma", model="resnet18", width=0.125, input_size=32, test_fold=5, epochs=2, batch_size=8,
            lr=3e-3, seed=0, workers=0, device="cpu")
AUGMENTED = dict(recipe="default", freq_masks=2, freq_mask_width=0.2, time_masks=1, time_mask_width=0.2, gain_db=6.0,
                 mixing="bc", ema_decay=0.8)


def _old_dict(config: TrainConfig) -> dict:
    """``config`` as a checkpoint written before recipes recorded it."""
    d = config.to_dict()
    for k in ("recipe", *ADDED_WITH_RECIPES):
        d.pop(k)
    return d


def test_recipes_resolve_and_given_values_override():
    paper = TrainConfig(store="-", recipe="paper")
    assert {k: getattr(paper, k) for k in BEFORE_RECIPES} == BEFORE_RECIPES
    assert not paper.augmentation().active and paper.ema_decay == 0
    default = TrainConfig(store="-")
    assert default.recipe == "default"
    assert {k: getattr(default, k) for k in RECIPES["default"]} == RECIPES["default"]
    mine = TrainConfig(store="-", recipe="paper", epochs=7, mixing="mixup", time_shift=0.0)
    assert (mine.epochs, mine.mixing, mine.time_shift, mine.lr) == (7, "mixup", 0.0, 2e-3)
    assert TrainConfig.from_dict(mine.to_dict()) == mine  # what is recorded is what ran
    with pytest.raises(ParameterError, match="recipe"):
        TrainConfig(store="-", recipe="fancy")
    with pytest.raises(ParameterError, match="recalibrate_bn"):
        TrainConfig(store="-", ema_decay=0.9, recalibrate_bn=False)


def test_a_defense_trains_without_pair_mixing(monkeypatch):
    from advaudio.training import DEFENSES, Defense

    monkeypatch.setitem(DEFENSES.builtins, "attacking", Defense)
    defended = TrainConfig(store="-", defense="attacking")  # the default recipe mixes pairs (bc) ...
    assert RECIPES["default"]["mixing"] == "bc" and defended.mixing == "none"  # ... not under a defense
    # the rest of the recipe stays: masks and gain still apply to the clean samples
    assert (defended.freq_masks, defended.gain_db) == (RECIPES["default"]["freq_masks"], RECIPES["default"]["gain_db"])
    assert TrainConfig.from_dict(defended.to_dict()) == defended
    with pytest.raises(ParameterError, match="mixing 'mixup' with defense 'attacking'"):
        TrainConfig(store="-", defense="attacking", mixing="mixup")
    assert TrainConfig(store="-", defense="none").mixing == "bc"


def test_a_configuration_recorded_before_recipes_is_the_paper_recipe():
    old = _old_dict(TrainConfig(store="s", recipe="paper", test_fold=3))
    config = TrainConfig.from_dict(old)
    assert config.recipe == "paper" and not config.augmentation().active and config.ema_decay == 0
    assert config == TrainConfig(store="s", recipe="paper", test_fold=3)
    # ... and hashes as it did then: a study keeps the cells it finished before recipes
    assert config.result_dict() == old
    assert TrainConfig(store="s", recipe="default", test_fold=3).result_dict() != old


def _strip_to_old_format(path):
    """Rewrite a checkpoint as one written before recipes (its config without them, digest renewed)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    obj["train_config"] = _old_dict(TrainConfig.from_dict(obj["train_config"]))
    obj[DIGEST_KEY] = content_digest(obj)
    torch.save(obj, path)


@pytest.mark.slow
def test_an_old_checkpoint_loads_and_resumes(store, tmp_path):
    config = TrainConfig(store=str(store.directory), recipe="paper", **TINY)
    train(config, out_dir=tmp_path / "run", progress=False, stop_after=1)
    _strip_to_old_format(tmp_path / "run" / "checkpoint.pt")
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert "recipe" not in ck.config and TrainConfig.from_dict(ck.config) == config
    assert "ema" not in ck.raw  # a run without weight averaging writes no average
    # the command that started it resumes it: without --recipe, the checkpoint's (paper)
    args = ["train", "--store", str(store.directory), "--out", str(tmp_path / "run"), "--resume", "--view",
            "stft+chroma", "--width", "0.125", "--input-size", "32", "--test-fold", "5", "--epochs", "2",
            "--batch-size", "8", "--lr", "0.003", "--workers", "0", "--device", "cpu", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["complete"] and metrics["config"]["recipe"] == "paper"
    # another recipe is refused with the values that differ
    train(config, out_dir=tmp_path / "again", progress=False, stop_after=1)
    with pytest.raises(ParameterError, match="mixing"):
        train(TrainConfig(store=str(store.directory), recipe="default", **TINY), out_dir=tmp_path / "again",
              resume=True, progress=False)


@pytest.mark.slow
@pytest.mark.floats
def test_an_augmented_run_killed_and_resumed_equals_an_unbroken_one(store, tmp_path):
    config = TrainConfig(store=str(store.directory), **{**TINY, **AUGMENTED})
    assert config.augmentation().active and config.augmentation().mixes
    unbroken = train(config, out_dir=tmp_path / "unbroken", progress=False)
    steps = []
    first = train(config, out_dir=tmp_path / "resumed", progress=False, stop_after=1, callback=steps.append)
    assert not first["complete"]
    assert read_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["ema"]["updates"] == len(steps) > 0
    done = train(config, out_dir=tmp_path / "resumed", resume=True, progress=False)
    a = read_checkpoint(tmp_path / "unbroken" / "checkpoint.pt")
    b = read_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    for key in ("model", "ema"):
        sa = a[key]["state_dict"] if key == "model" else a[key]["weights"]
        sb = b[key]["state_dict"] if key == "model" else b[key]["weights"]
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), key
    assert [h["train_loss"] for h in done["history"]] == [h["train_loss"] for h in unbroken["history"]]
    assert done["test"]["accuracy"] == unbroken["test"]["accuracy"]
    # the clean accuracy on the training clips (the gap's other side) is the final model's
    on_train = [evaluate(tmp_path / "resumed" / "checkpoint.pt", fold=f, device="cpu")
                for f in done["split"]["train_folds"]]
    assert done["train_accuracy"] == pytest.approx(sum(r["accuracy"] * r["n"] for r in on_train)
                                                   / sum(r["n"] for r in on_train))
    # the final model is the average (with its own batch-norm statistics), not the last iterate
    for name, w in a["ema"]["weights"].items():
        assert torch.equal(a["model"]["state_dict"][name], w)
