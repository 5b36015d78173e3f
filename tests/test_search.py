"""Per-clip minimal-ε search, per-sample gradient steps, fmn and the evaluation checks.

The same tiny 2-layer CNN as test_attacks (1×16×16 inputs, a bright square per
class), trained for about a second; 16 held-out clips.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from tiny_cnn import NUM_CLASSES, trained_model
from torch import nn

from advaudio import progress
from advaudio.attacks import AttackConfig, run_attack, tune_budget
from advaudio.attacks._model import attack_mode
from advaudio.attacks.checks import evaluation_checks, robust_accuracy
from advaudio.attacks.stepping import gradient_attack
from advaudio.errors import ParameterError


class Masked(nn.Module):
    """The model behind an input quantiser: its input gradient is 0 (gradient masking)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


@pytest.fixture(scope="module")
def setup():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, x, y = trained_model()
    yield model, x, y
    torch.set_num_threads(before)


def test_per_sample_steps_equal_foolbox_at_a_common_eps(setup):
    model, x, y = setup
    ref = run_attack(model, x, y, config=AttackConfig.create("bim", steps=5, step_size=0.2), epsilon=0.1)
    with attack_mode(model):
        ours = gradient_attack(model, x, torch.as_tensor(ref.targets), torch.full((16,), 0.1), targeted=True,
                               steps=5, rel_stepsize=0.2, early_stop=False)
    np.testing.assert_allclose(ours.adversarial.numpy(), ref.adversarial, atol=1e-6)
    np.testing.assert_array_equal(ours.success.numpy(), ref.success)
    # per-sample ε: each sample stays within its own ball
    eps = torch.linspace(0.5, 8.0, 16)
    with attack_mode(model):
        r = gradient_attack(model, x, y, eps, targeted=False, norm="l2", steps=5, rel_stepsize=0.3)
    l2 = (r.adversarial - x).flatten(1).norm(dim=1)
    assert torch.all(l2 <= eps * (1 + 1e-5)) and r.success.any()


def test_per_clip_search_matches_a_brute_force_sweep_and_the_bisection(setup):
    model, x, y = setup
    cfg = AttackConfig.create("bim", steps=5, seed=2)
    rtol, step = 0.05, 0.004
    tune = tune_budget(model, x, y, config=cfg, fooling_rate=0.8, rtol=rtol, eps_high=0.5, precision="clip")
    assert tune.search == "per-clip" and tune.converged and tune.reached
    minimal = tune.result.minimal_budget
    # brute force: every clip at every ε of a fine grid (same targets, early stopping)
    grid = step * np.arange(1, 126)
    targets = torch.as_tensor(tune.result.targets)
    with attack_mode(model):
        fooled = np.stack([gradient_attack(model, x, targets, torch.full((16,), float(e)), targeted=True,
                                           steps=5, rel_stepsize=0.2).success.numpy() for e in grid])
    first = np.where(fooled.any(0), grid[np.argmax(fooled, axis=0)], np.inf)
    for i in range(16):  # each clip's minimal ε within the tolerance (plus the grid's step)
        assert abs(minimal[i] - first[i]) <= rtol * minimal[i] + step + 1e-9, (i, minimal[i], first[i])
    # the quantile equals the batch bisection's budget within the tolerance
    bis = tune_budget(model, x, y, config=cfg, fooling_rate=0.8, rtol=rtol, eps_high=0.5, search="bisection")
    assert abs(tune.budget - bis.budget) <= rtol * max(tune.budget, bis.budget) + 1e-9
    # the fooling-rate curve is the exact empirical CDF of the minimal budgets
    for e, rate in tune.evaluations:
        assert rate == pytest.approx(np.mean(minimal <= e))
    # fewer gradient steps than the bisection
    assert tune.gradient_queries < bis.gradient_queries


@pytest.mark.floats
def test_per_clip_search_is_the_same_in_any_batch(setup):
    model, x, y = setup
    cfg = AttackConfig.create("pgd", steps=10, seed=3)
    whole = tune_budget(model, x, y, config=cfg, fooling_rate=0.8, sample_ids=np.arange(16) + 100,
                        precision="clip")
    parts = [tune_budget(model, x[s], y[s], config=cfg, fooling_rate=0.8, sample_ids=np.arange(16)[s] + 100,
                         targets=whole.result.targets[s], batch_size=3, precision="clip")
             for s in (slice(0, 5), slice(5, 11), slice(11, 16))]
    np.testing.assert_array_equal(np.concatenate([p.result.minimal_budget for p in parts]),
                                  whole.result.minimal_budget)
    np.testing.assert_array_equal(np.concatenate([p.result.minimal_budget_low for p in parts]),
                                  whole.result.minimal_budget_low)


def _brute_force(model, x, targets, grid, *, steps, rel_stepsize):
    """Each clip's smallest ε of ``grid`` at which the early-stopped attack fools it (+inf: none)."""
    with attack_mode(model):
        fooled = np.stack([gradient_attack(model, x, targets, torch.full((len(x),), float(e)), targeted=True,
                                           steps=steps, rel_stepsize=rel_stepsize).success.numpy() for e in grid])
    return np.where(fooled.any(0), grid[np.argmax(fooled, axis=0)], np.inf), fooled


def test_quantile_precision_brackets_the_brute_force_quantile_with_fewer_steps(setup):
    model, x, y = setup
    cfg = AttackConfig.create("bim", steps=5, seed=2)
    rtol, step, q = 0.05, 0.002, 0.8
    tune = tune_budget(model, x, y, config=cfg, fooling_rate=q, rtol=rtol, eps_high=0.5)  # the default precision
    assert tune.tolerance["precision"] == "quantile" and tune.converged and tune.reached
    res = tune.result
    hi, lo = res.minimal_budget, res.minimal_budget_low
    first, fooled = _brute_force(model, x, torch.as_tensor(res.targets), step * np.arange(1, 251),
                                 steps=5, rel_stepsize=0.2)
    # every clip's bracket holds its brute-force minimal ε (within the grid's step)
    assert np.all(lo < first + 1e-9) and np.all(first <= hi + step + 1e-9), np.c_[lo, first, hi]
    # the budget's bracket: (L, B] holds the brute-force quantile and is within the tolerance
    low, budget = tune.tolerance["budget_low"], tune.budget
    true_q = np.sort(first)[math.ceil(q * 16) - 1]
    assert low - step < true_q <= budget + step and budget - low <= rtol * budget + 1e-12
    # at the budget the fooling rate reaches the threshold (brute force at the nearest grid point above)
    assert fooled[np.searchsorted(step * np.arange(1, 251), budget - 1e-12)].mean() >= q
    # clips far from the quantile keep coarse brackets: fewer steps than every clip refined
    clip = tune_budget(model, x, y, config=cfg, fooling_rate=q, rtol=rtol, eps_high=0.5, precision="clip")
    assert tune.gradient_queries < clip.gradient_queries
    assert abs(tune.budget - clip.budget) <= rtol * max(tune.budget, clip.budget) + 1e-9
    assert np.sum(hi - lo > rtol * hi + 1e-12) > 0  # some bracket left wide, on purpose


def test_quantile_precision_grows_unfooled_clips_to_eps_high(setup):
    model, x, y = setup
    # a threshold reached by some clips only: the others are still probed up to eps_high,
    # so +inf keeps meaning "not fooled at any ε tried"
    cfg = AttackConfig.create("bim", steps=5)
    tune = tune_budget(model, x, y, config=cfg, fooling_rate=0.2, eps_high=0.12)
    res = tune.result
    never = ~np.isfinite(res.minimal_budget)
    assert tune.reached and never.any() and np.all(res.minimal_budget_low[never] == 0.12)
    with attack_mode(model):
        r = gradient_attack(model, x[never], torch.as_tensor(res.targets[never]), torch.full((int(never.sum()),), 0.12),
                            targeted=True, steps=5, rel_stepsize=0.2)
    assert not r.success.any()


def test_the_search_says_how_far_it_is_after_each_probe_round(setup, caplog, monkeypatch):
    """Progress lines (one per probe round when due; here every time) whose counts are the search's."""
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    model, x, y = setup
    caplog.set_level(logging.INFO, logger="advaudio.attacks")
    tune = tune_budget(model, x, y, config=AttackConfig.create("bim", steps=5), fooling_rate=0.2, eps_high=0.12)
    lines = [r.getMessage() for r in caplog.records if r.name == "advaudio.attacks.search"]
    res = tune.result
    attacked, fooled = int(res.attacked.sum()), int(np.isfinite(res.minimal_budget).sum())
    assert 0 < fooled < attacked and len(lines) >= 2
    assert [m.split(" done")[0] for m in lines] == [f"bim: ε search round {k}" for k in range(1, len(lines) + 1)]
    counts = [int(m.split(": ")[2].split(" of ")[0]) for m in lines]
    assert counts == sorted(counts) and counts[-1] == fooled  # found clips stay found
    assert all(f" of {attacked} fooled at some ε so far (" in m for m in lines)


def test_precision_is_checked(setup):
    model, x, y = setup
    with pytest.raises(ParameterError, match="precision"):
        tune_budget(model, x, y, config=AttackConfig.create("bim"), precision="exact")


def test_fmn_reaches_its_targets(setup):
    model, x, y = setup
    for norm in ("l2", "linf"):
        tune = tune_budget(model, x, y, config=AttackConfig.create("fmn", norm=norm, steps=50), fooling_rate=0.9)
        res = tune.result
        assert tune.reached and res.targeted and res.success.mean() >= 0.9
        with torch.no_grad():
            pred = model(torch.from_numpy(res.adversarial)).argmax(1).numpy()
        np.testing.assert_array_equal(pred[res.success], res.targets[res.success])
        norms = res.budget_norms()
        assert tune.budget == pytest.approx(np.sort(norms)[math.ceil(0.9 * 16) - 1])


def _status(evaluation, check):
    return [c.status for c in evaluation.checks if c.check == check]


def test_evaluation_checks_pass_on_a_normal_run(setup):
    model, x, y = setup
    tunings = {name: tune_budget(model, x, y, config=AttackConfig.create(name, norm="l2", **kw), fooling_rate=0.8)
               for name, kw in (("pgd", {"steps": 20}), ("hopskipjump",
                                {"steps": 8, "gradient_eval_steps": 40, "max_gradient_eval_steps": 160}))}
    ev = evaluation_checks(model, x, y, tunings, targets=tunings["pgd"].result.targets)
    assert _status(ev, "success-at-large-eps") == ["pass", "pass"]
    assert _status(ev, "iterative-beats-fgsm") == ["pass"]
    assert _status(ev, "more-steps-no-gain") == ["pass"]
    assert _status(ev, "black-box-not-better") == ["pass"]
    ra = ev.robust_accuracy["l2"]
    worst = np.minimum(tunings["pgd"].result.budget_norms(), tunings["hopskipjump"].result.budget_norms())
    assert ra["accuracy"] == [float((worst > e).mean()) for e in ra["epsilons"]]


def test_evaluation_checks_fail_on_purpose(setup):
    model, x, y = setup
    # (a) a budget range too small to fool every clip
    small = {"pgd": tune_budget(model, x, y, config=AttackConfig.create("pgd", steps=10), fooling_rate=0.5,
                                eps_high=0.12)}
    assert small["pgd"].success_rate < 0.99
    assert _status(evaluation_checks(model, x, y, small, targets=small["pgd"].result.targets),
                   "success-at-large-eps") == ["warn"]
    # (b), (c) an under-run iterative attack: 2 steps of 0.05·ε reach a tenth of the ball
    weak = {"bim": tune_budget(model, x, y, config=AttackConfig.create("bim", steps=2, step_size=0.05),
                               fooling_rate=0.5, eps_high=4.0)}
    ev = evaluation_checks(model, x, y, weak, targets=weak["bim"].result.targets)
    assert _status(ev, "iterative-beats-fgsm") == ["warn"]
    assert _status(ev, "more-steps-no-gain") == ["warn"]
    # (d) a masked gradient: the decision-based attack beats the white-box one
    masked = Masked(model).eval()
    runs = {name: tune_budget(masked, x, y, config=AttackConfig.create(name, norm="l2", **kw), fooling_rate=0.5)
            for name, kw in (("pgd", {"steps": 10}), ("hopskipjump",
                             {"steps": 8, "gradient_eval_steps": 40, "max_gradient_eval_steps": 160}))}
    ev = evaluation_checks(masked, x, y, runs, targets=runs["pgd"].result.targets)
    assert _status(ev, "black-box-not-better") == ["warn"]
    assert "warn" in _status(ev, "success-at-large-eps")


def test_check_d_without_a_white_box_attack_of_its_norm_warns_and_says_why(setup):
    model, x, y = setup
    hsj = {"hopskipjump": tune_budget(model, x, y, config=AttackConfig.create(
        "hopskipjump", norm="l2", steps=8, gradient_eval_steps=40, max_gradient_eval_steps=160), fooling_rate=0.5)}
    # a white-box attack of another norm does not count
    hsj["pgd"] = tune_budget(model, x, y, config=AttackConfig.create("pgd", steps=10), fooling_rate=0.5)
    ev = evaluation_checks(model, x, y, hsj, targets=hsj["pgd"].result.targets)
    (d,) = [c for c in ev.checks if c.check == "black-box-not-better"]
    assert d.status == "warn" and d.attacks == ("hopskipjump",)
    assert "no white-box l2 attack" in d.text and d.values["white_box"] is None
    assert d.values["budget"] == hsj["hopskipjump"].budget


def test_robust_accuracy_counts_misclassified_clips_as_not_robust(setup):
    model, x, y = setup
    wrong = (y + 1) % NUM_CLASSES
    wrong[8:] = y[8:]  # half the labels wrong: those clips are excluded from the attack
    t = tune_budget(model, x, wrong, config=AttackConfig.create("pgd", steps=10), fooling_rate=0.5)
    ra = robust_accuracy({"pgd": t}, robust_epsilons={"linf": (0.0, 1.0)})
    assert ra["linf"]["accuracy"][0] == pytest.approx(0.5)  # the 8 attacked clips, at ε = 0
    assert ra["linf"]["accuracy"][1] == pytest.approx(np.mean(np.nan_to_num(t.result.budget_norms()) > 1.0))
