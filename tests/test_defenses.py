"""On-the-fly adversarial training (pgd-at, trades, fast-at) and AutoAttack's robust accuracy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from advaudio import killpoints
from advaudio.attacks.stepping import gradient_attack, unit_noise
from advaudio.errors import ParameterError
from advaudio.models.base import Classifier
from tests.tiny_cnn import NUM_CLASSES, make_data, make_net


class Tiny(Classifier):
    """tiny_cnn's net as a Classifier (training_loss, main_logits)."""

    def __init__(self):
        super().__init__(1, NUM_CLASSES, 1.0)
        self.net = make_net()
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return self.net(self.bn(x))


def _fit(defense_name: str, *, steps: int = 120, **options) -> Tiny:
    """The tiny model trained with a defense by its loss, as the trainer calls it (seed 0, one thread)."""
    from advaudio.training.defenses import StepContext, create_defense

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x, y = make_data(512, gen)
    model = Tiny()
    defense = create_defense(defense_name, **options)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        i = torch.randint(0, len(x), (64,), generator=gen)
        ctx = StepContext(classifier=model, epoch=0, step=step, seed=0)
        loss = defense.loss(model, x[i], y[i], step_context=ctx)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _pgd_fooling_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[float, float]:
    """Untargeted PGD (20 steps of ε/4, random start) fooling rate of correctly classified clips, and
    the clean accuracy."""
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    accuracy = float(ok.float().mean())
    x, y = x[ok], y[ok]
    noise = unit_noise(tuple(x.shape[1:]), norm="linf", seeds=list(range(len(x))), device=x.device)
    r = gradient_attack(model, x, y, torch.full((len(x),), eps), targeted=False, steps=20, rel_stepsize=0.25,
                        noise=noise, early_stop=False)
    return float(r.success.float().mean()), accuracy


@pytest.mark.slow
def test_each_defense_reduces_the_pgd_fooling_rate():
    torch.set_num_threads(1)
    eps = 0.15
    x, y = make_data(256, torch.Generator().manual_seed(1))
    rates = {}
    for name, options in (("none", {}), ("pgd-at", {"epsilon": eps, "alpha": eps / 3, "steps": 5}),
                          ("trades", {"epsilon": eps, "alpha": eps / 3, "steps": 5}),
                          ("fast-at", {"epsilon": eps})):
        rates[name] = _pgd_fooling_rate(_fit(name, **options), x, y, eps)
    for name in ("pgd-at", "trades", "fast-at"):  # measured: none 0.93, pgd-at 0.53, trades 0.73, fast-at 0.0
        assert rates[name][0] < rates["none"][0] - 0.1, rates
        assert rates[name][1] > 0.45, rates  # a classifier still (clean accuracy: pgd-at 0.51, the others 1.0)


def test_fast_at_without_random_start_at_alpha_epsilon_is_fgsm_training():
    from advaudio.training.defenses import StepContext, create_defense

    torch.set_num_threads(1)
    eps = 0.1
    x, y = make_data(64, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    a = Tiny()
    b = Tiny()
    b.load_state_dict(a.state_dict())
    defense = create_defense("fast-at", epsilon=eps, alpha=eps, random_start=False)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    for step in range(5):
        xb, yb = x[step * 12:(step + 1) * 12], y[step * 12:(step + 1) * 12]
        a.train()
        loss_a = defense.loss(a, xb, yb, step_context=StepContext(classifier=a, epoch=0, step=step, seed=0))
        opt_a.zero_grad()
        loss_a.backward()
        opt_a.step()
        # FGSM training by hand (Goodfellow et al.): the signed input gradient of the eval-mode model
        b.eval()
        xg = xb.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(b(xg), yb), xg)
        x_adv = (xb + eps * g.sign()).clamp(0, 1)
        b.train()
        loss_b = nn.functional.cross_entropy(b(x_adv), yb)
        opt_b.zero_grad()
        loss_b.backward()
        opt_b.step()
        assert torch.allclose(loss_a, loss_b, atol=1e-6)
    for key, value in a.state_dict().items():
        assert torch.allclose(value.float(), b.state_dict()[key].float(), atol=1e-5), key


def _config(store, **values):
    from advaudio.training import TrainConfig

    base = dict(store=store.directory, view="stft", model="resnet18", width=0.125, input_size=(16, 16),
                test_fold=4, epochs=2, batch_size=8, workers=0, device="cpu", seed=1,
                recipe="paper")  # time shifts only: the clean run and a defended one differ by the defense alone
    return TrainConfig(**{**base, **values})


def _train(config, out: Path, **kw):
    from advaudio.training import train

    losses = []
    train(config, out_dir=out, progress=False, callback=lambda r: losses.append(r["loss"]), **kw)
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True), losses


def test_trades_with_beta_zero_is_clean_training_step_for_step(store, tmp_path):
    torch.set_num_threads(1)
    # no final precise-BN pass: the running statistics compared are those the steps left
    clean, clean_losses = _train(_config(store, epochs=1, recalibrate_bn=False), tmp_path / "none")
    trades, trades_losses = _train(_config(store, epochs=1, recalibrate_bn=False, defense="trades",
                                           defense_options={"beta": 0.0, "steps": 2}), tmp_path / "trades")
    assert clean_losses == trades_losses  # every step's loss, exactly
    for key, value in clean["model"]["state_dict"].items():  # BN running statistics included
        assert torch.equal(value, trades["model"]["state_dict"][key]), key
    assert trades["train_config"]["defense_options"] == {"epsilon": 8 / 255, "alpha": 2 / 255, "steps": 2,
                                                         "beta": 0.0, "norm": "linf"}
    # … and with the paper's beta the robust term changes the training
    _, beta6 = _train(_config(store, epochs=1, defense="trades", defense_options={"steps": 2}), tmp_path / "b6")
    assert beta6 != clean_losses


class Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.floats
@pytest.mark.parametrize("defense", ["pgd-at", "trades", "fast-at"])
def test_a_killed_and_resumed_defense_run_equals_an_uninterrupted_one(store, tmp_path, monkeypatch, defense):
    torch.set_num_threads(1)
    options = {"steps": 2} if defense != "fast-at" else {}
    config = _config(store, defense=defense, defense_options=options)
    whole, _ = _train(config, tmp_path / "whole")

    def hook(point, epoch):
        if (point, epoch) == ("epoch", 1):
            raise Killed

    monkeypatch.setattr(killpoints, "HOOK", hook)
    with pytest.raises(Killed):
        _train(config, tmp_path / "killed")
    monkeypatch.setattr(killpoints, "HOOK", None)
    resumed, _ = _train(config, tmp_path / "killed", resume=True)
    for key, value in whole["model"]["state_dict"].items():
        assert torch.equal(value, resumed["model"]["state_dict"][key]), key
    assert [h["train_loss"] for h in whole["history"]] == [h["train_loss"] for h in resumed["history"]]


def test_defense_options_are_checked_and_hashed(store):
    from advaudio.training import TrainConfig

    config = TrainConfig(store="s", defense="pgd-at", defense_options={"steps": 3})
    assert config.to_dict()["defense_options"] == {"epsilon": 8 / 255, "alpha": None, "steps": 3,
                                                   "random_start": True, "norm": "linf"}
    assert config.to_dict() != TrainConfig(store="s", defense="pgd-at").to_dict()
    assert "defense" not in TrainConfig(store="s").to_dict()  # clean runs hash as before
    with pytest.raises(ParameterError, match="epsilon"):
        TrainConfig(store="s", defense="fast-at", defense_options={"epsilon": 2.0})
    with pytest.raises(ParameterError, match="no option"):
        TrainConfig(store="s", defense="trades", defense_options={"gamma": 1})


def test_sample_seeds_follow_the_global_position_under_ddp():
    from advaudio.training.defenses import StepContext

    whole = StepContext(classifier=None, epoch=2, step=5, seed=3).sample_seeds(5, 1)
    shares = [StepContext(classifier=None, epoch=2, step=5, seed=3, rank=r, world_size=2, batch_size=5)
              .sample_seeds(n, 1) for r, n in ((0, 3), (1, 2))]
    assert shares[0] == whole[0::2] and shares[1] == whole[1::2]


def test_train_cli_takes_defense_params():
    from advaudio.stages.train_config import TRAIN, defense_params

    assert defense_params(("defense.epsilon=8/255", "pgd-at.steps=3"), "pgd-at") == {"epsilon": 8 / 255,
                                                                                     "steps": 3}
    # the API's dict of dicts is the same option (train(param={"defense": {...}}))
    assert defense_params({"defense": {"epsilon": "8/255"}, "pgd-at": {"steps": 3}}, "pgd-at") == {
        "epsilon": 8 / 255, "steps": 3}
    with pytest.raises(ParameterError, match="defense.KEY=VALUE"):
        defense_params(("pgd.steps=3",), "pgd-at")
    assert TRAIN.option("param").short == "-p"


# --------------------------------------------------------------------------- AutoAttack
def test_parse_autoattack():
    from advaudio.attacks.autoattack import parse_autoattack

    assert parse_autoattack("linf:8/255, l2:0.5") == (("linf", 8 / 255), ("l2", 0.5))
    for bad in ("linf", "l3:0.1", "linf:-1", "linf:0.1,linf:0.1", ""):
        with pytest.raises(ParameterError):
            parse_autoattack(bad)


def test_the_robust_accuracy_interval_matches_an_independent_computation():
    from scipy.stats import binom, binomtest

    from advaudio.attacks.autoattack import binomial_interval

    for k, n in ((0, 80), (1, 80), (37, 80), (79, 80), (80, 80), (5, 7)):
        lo, hi = binomial_interval(k, n)
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)
        # by definition: each tail beyond a bound holds 2.5 %
        if k > 0:
            assert binom.sf(k - 1, n, lo) == pytest.approx(0.025, abs=1e-7)
        if k < n:
            assert binom.cdf(k, n, hi) == pytest.approx(0.025, abs=1e-7)


@pytest.mark.slow
def test_autoattack_robust_accuracy_is_at_most_pgds_on_the_same_clips():
    pytest.importorskip("pyautoattack", reason="pip install 'advaudio[autoattack]'")
    from advaudio.attacks.autoattack import robust_accuracy
    from tests.tiny_cnn import trained_model

    torch.set_num_threads(1)
    model, x, y = trained_model(held_out=24)
    eps = 0.12
    r = robust_accuracy(model, x, y, norm="linf", eps=eps, num_classes=NUM_CLASSES)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    noise = unit_noise(tuple(x.shape[1:]), norm="linf", seeds=list(range(len(x))), device=x.device)
    pgd = gradient_attack(model, x, y, torch.full((len(x),), eps), targeted=False, steps=40, rel_stepsize=0.1,
                          noise=noise, early_stop=True)
    pgd_robust = int((clean & ~pgd.success).sum())
    assert r.n == len(x) and r.n_correct == int(clean.sum())
    assert r.n_robust <= pgd_robust and r.robust_accuracy == r.n_robust / r.n
    assert 0 < pgd_robust < len(x)  # the ε is one at which the comparison says something (measured: 10 of 24)
    assert r.ci_low <= r.robust_accuracy <= r.ci_high
    assert r.target_classes == NUM_CLASSES - 1 and r.version == "standard"
    assert list(r.per_attack) == ["apgd-ce", "apgd-t", "fab-t", "square"][:len(r.per_attack)]


@pytest.mark.slow
def test_evaluate_json_holds_autoattack(store, tmp_path, capsys):
    pytest.importorskip("pyautoattack", reason="pip install 'advaudio[autoattack]'")
    from advaudio.cli import main

    torch.set_num_threads(1)
    _train(_config(store, epochs=1), tmp_path / "run")
    capsys.readouterr()
    main(["evaluate", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--autoattack", "linf:8/255",
          "--threads", "1", "--json"])
    d = json.loads(capsys.readouterr().out)
    (a,) = d["autoattack"]
    assert {"norm", "eps", "robust_accuracy", "ci_low", "ci_high", "n"} <= set(a)
    assert a["norm"] == "linf" and math.isclose(a["eps"], 8 / 255) and a["n"] == d["n"]
    assert a["robust_accuracy"] <= d["accuracy"]
    assert (tmp_path / "run" / "autoattack.json").is_file()


@pytest.mark.slow
@pytest.mark.floats
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("defense", ["pgd-at", "trades"])
def test_a_defense_under_torchrun_matches_one_process(store, tmp_path, defense):
    """Two ranks (gloo) make the same adversarial examples and end at the same weights as one process
    (float64, the tolerances of tests/test_ddp.py: the attack runs per sample in eval mode, its random
    starts seeded by global position; TRADES's adversarial forward goes through synchronised BN)."""
    from advaudio.training import TrainConfig, train
    from tests import test_ddp as ddp

    torch.set_num_threads(1)
    base = {**ddp.BASE, "epochs": 2}
    options = {"steps": 2}
    single = tmp_path / "single"
    train(TrainConfig(store=str(store.directory), **base, **ddp.F64, defense=defense, defense_options=options),
          out_dir=single, progress=False)
    cli = [*ddp.CLI, *ddp.F64_CLI, "--defense", defense, "-p", "defense.steps=2"]
    cli[cli.index("--epochs") + 1] = "2"
    ddp._torchrun(store, tmp_path / "ddp", cli=cli)
    distance = ddp._relative_distance(ddp._state(tmp_path / "ddp" / "checkpoint.pt"),
                                      ddp._state(single / "checkpoint.pt"))
    assert distance <= ddp.WEIGHT_TOLERANCE, distance


@pytest.mark.slow
def test_the_report_shows_autoattack_with_its_interval_and_flags(store, tmp_path, capsys):
    pytest.importorskip("pyautoattack", reason="pip install 'advaudio[autoattack]'")
    from advaudio.reporting import write_report
    from advaudio.training import evaluate
    from advaudio.training.evaluation import write_autoattack

    torch.set_num_threads(1)
    _train(_config(store, epochs=1), tmp_path / "run")
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    write_autoattack(checkpoint, evaluate(checkpoint, device="cpu", autoattack="linf:8/255,l2:0.5"))
    path = tmp_path / "run" / "autoattack.json"
    doc = json.loads(path.read_text())
    doc.pop("sha256")  # edited on purpose: read as a file without a digest
    doc["autoattack"][0]["warnings"] = ["it seems to be a randomized defense! Please use version=\"rand\"."]
    path.write_text(json.dumps(doc))
    md = write_report(tmp_path / "run", tmp_path / "report", listen=False).read_text()
    assert "## Robust accuracy under AutoAttack" in md
    a = doc["autoattack"][0]
    assert f"[{100 * a['ci_low']:.1f}, {100 * a['ci_high']:.1f}] %" in md
    assert "| l2 | 0.5 |" in md and "| linf | 0.03137 |" in md
    assert "AutoAttack: it seems to be a randomized defense" in md.split("## Warnings")[1]


@pytest.mark.parametrize("classes, targets", [(4, 3), (10, 9), (50, 9)])
def test_autoattack_runs_the_standard_version_with_the_right_targets(monkeypatch, classes, targets):
    pyautoattack = pytest.importorskip("pyautoattack", reason="pip install 'advaudio[autoattack]'")
    from advaudio.attacks.autoattack import robust_accuracy

    seen = {}

    def run(self, x, y, *, batch_size=250, state_path=None):
        seen.update(version=self.version, attacks=list(self.attacks_to_run), norm=self.norm, eps=self.epsilon,
                    apgd_t=self.apgd_targeted.n_target_classes, fab_t=self.fab.n_target_classes, n=len(x))
        return x.clone(), y.clone()  # nothing fooled

    monkeypatch.setattr(pyautoattack.AutoAttack, "run_standard_evaluation", run)
    y = torch.tensor([0, 1, 2, 3, 1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, classes, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[:4, :4] = torch.eye(4)
    x = torch.zeros(5, 1, 2, 2)
    x.view(5, 4)[torch.arange(5), y] = 1.0
    x[4] = 0  # all-zero logits: argmax 0, misclassified (label 1), so not attacked
    r = robust_accuracy(model, x, y, norm="l2", eps=0.5, num_classes=classes)
    assert seen == {"version": "standard", "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "norm": "L2",
                    "eps": 0.5, "apgd_t": targets, "fab_t": targets, "n": 4}
    assert (r.n, r.n_correct, r.n_robust, r.robust_accuracy) == (5, 4, 4, 0.8)
