"""The attacks' per-clip economy: torch CW/EAD against Foolbox's, early abort against the long run, clips that
cannot be fooled, the decision-based query budget, check (c) of cw/ead, and the study's cost model.

Tiny model (tests/tiny_cnn.py), one thread: each test takes a few seconds at most.
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
from advaudio.attacks._foolbox import foolbox
from advaudio.attacks._model import attack_mode
from advaudio.attacks.checks import evaluation_checks
from advaudio.attacks.constsearch import _Run, const_search, pilot_rows
from advaudio.attacks.params import BoundaryParams, CarliniWagnerParams, EADParams, HopSkipJumpParams, PGDParams

#: one torch thread for the whole module (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(one_thread):
    model, x, y = trained_model(held_out=24)
    with torch.no_grad():
        assert (model(x).argmax(1) == y).all()
    return model, x, y, (y + 1) % NUM_CLASSES


class Unreachable(nn.Module):
    """The tiny model with one class it can never predict (its logit is -1e6 whatever the input)."""

    def __init__(self, model: nn.Module, never: int):
        super().__init__()
        self.model, self.never = model, never

    def forward(self, x):
        z = self.model(x)
        return z.index_fill(1, torch.tensor([self.never]), -1e6)


class Recorder(nn.Module):
    """Counts every sample the wrapped model evaluates, independently of advaudio's counters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.samples, self.calls = model, 0, []

    def forward(self, x):
        self.samples += len(x)
        self.calls.append(len(x))
        return self.model(x)


@pytest.mark.parametrize("method", ["cw", "ead"])
def test_torch_const_search_is_foolboxs_arithmetic(setup, method):
    """Same constants, steps and step size, no early abort: the same per-clip perturbations as Foolbox."""
    model, x, _, targets = setup
    fb = foolbox()
    with attack_mode(model):
        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        if method == "cw":
            attack = fb.attacks.L2CarliniWagnerAttack(binary_search_steps=4, steps=60, stepsize=1e-2,
                                                      initial_const=1e-2, abort_early=False)
        else:
            attack = fb.attacks.EADAttack(binary_search_steps=4, steps=60, initial_stepsize=1e-2, initial_const=1e-2,
                                          regularization=1e-2, abort_early=False)
        raw, _, _ = attack(fmodel, x, fb.criteria.TargetedMisclassification(targets), epsilons=None)
        ours = const_search(model, x, targets, targeted=True, method=method, steps=60, step_size=1e-2,
                            binary_search_steps=4, initial_const=1e-2, abort_early=False)
    fooled = (model(raw).argmax(1) == targets).detach()  # Foolbox returns zeros where it failed
    assert fooled.sum() >= 16
    assert torch.equal(torch.isfinite(ours.norm), fooled)
    d_fb, d_ours = (raw - x).flatten(1)[fooled], (ours.adversarial - x).flatten(1)[fooled]
    for norm in (lambda d: d.norm(dim=1), lambda d: d.abs().sum(1)):
        np.testing.assert_allclose(norm(d_ours).numpy(), norm(d_fb).numpy(), rtol=1e-4, atol=1e-5)
    assert int(ours.steps.min()) == int(ours.steps.max()) == 4 * 60  # no early abort: every step


@pytest.mark.slow  # the long run: 9 × 1000 steps of 24 clips (~10 s per attack on a quiet core)
@pytest.mark.parametrize("name", ["cw", "ead"])
def test_early_abort_never_finds_larger_minimal_norms_than_the_long_run(setup, name):
    """Per clip, the defaults (early abort; cw: learned bracket, few constants, polish) stay within 5 % of
    the long run (9 × 1000 steps, no early exit) in the budget's norm, at a fraction of its gradient steps
    (measured here: cw ×1.002 at 8.0 %, ead ×1.005 at 17 % before its polish)."""
    model, x, y, targets = setup
    cheap = run_attack(model, x, y, config=AttackConfig.create(name), targets=targets)
    long = run_attack(model, x, y, config=AttackConfig.create(name, steps=1000, binary_search_steps=9,
                                                              abort_early=False, pilot=0, polish_steps=0),
                      targets=targets)
    assert cheap.success.all() and long.success.all()
    ratio = cheap.budget_norms() / long.budget_norms()
    assert ratio.max() <= 1.05, np.round(ratio, 3)
    if name == "cw":  # the polish's share: ×1.002 at most measured, ×1.04 without it (polish_steps=0)
        assert ratio.max() <= 1.01, np.round(ratio, 3)
    # ead: its search (17 %) and the polish's two whole 1000-step runs (2000 / 9000 by construction)
    share = {"cw": 0.1, "ead": 0.2 + 2 * 1000 / 9000}[name]
    assert cheap.gradient_steps <= share * long.gradient_steps, (cheap.gradient_steps, long.gradient_steps)


def test_ead_polish_runs_the_whole_decaying_schedule(setup):
    """EAD's default polish never aborts within its 1000 steps (FISTA's L1 keeps shrinking as its step decays):
    each fooled clip takes exactly 2 × 1000 steps more than the search alone, and keeps its smaller norm."""
    model, x, _, targets = setup
    p = EADParams()
    assert p.polish_steps == 1000 and p.polish_patience >= p.polish_steps
    common = dict(targeted=True, method="ead", steps=p.steps, step_size=p.step_size,
                  binary_search_steps=p.binary_search_steps, initial_const=p.initial_const,
                  patience=p.patience, loss_patience=p.loss_patience, min_improvement=p.min_improvement)
    bare = const_search(model, x, targets, polish_steps=0, **common)
    polished = const_search(model, x, targets, polish_steps=p.polish_steps, polish_patience=p.polish_patience,
                            polish_min_improvement=p.polish_min_improvement, **common)
    fooled = torch.isfinite(bare.const)
    assert fooled.all()
    torch.testing.assert_close(polished.steps - bare.steps, torch.full_like(bare.steps, 2 * p.polish_steps))
    assert (polished.norm <= bare.norm).all()


@pytest.mark.slow  # an EAD search with its polish and a 1000-step cold run of 24 clips
def test_ead_polish_starts_from_the_clean_clip_as_eads_own_constants_do(setup, monkeypatch):
    """EAD's polish runs its clip's smallest fooling constant from the clean clip, whole (the long run's own
    run at that constant, FISTA's shrinkage building a sparse perturbation from zero): no clip ends above
    that cold run, computed here on its own; its second run, and both with cw's "best", start from the best point."""
    model, x, _, targets = setup
    p = EADParams()
    assert p.polish_start == "clean" and CarliniWagnerParams().polish_start == "best"
    starts = []  # where each run at a constant starts: True from the clip's best point, False clean
    at_constants = _Run.at_constants
    monkeypatch.setattr(_Run, "at_constants", lambda run, rows, consts: (starts.append(run.warm_start),
                                                                         at_constants(run, rows, consts))[1])
    common = dict(targeted=True, method="ead", steps=p.steps, step_size=p.step_size,
                  binary_search_steps=p.binary_search_steps, initial_const=p.initial_const,
                  patience=p.patience, loss_patience=p.loss_patience, min_improvement=p.min_improvement,
                  polish_patience=p.polish_patience, polish_min_improvement=p.polish_min_improvement)
    out = const_search(model, x, targets, polish_steps=p.polish_steps, polish_start=p.polish_start, **common)
    assert torch.isfinite(out.const).all()
    assert starts[-2:] == [False, True] and not any(starts[:-2])  # the search's constants start clean too
    starts.clear()
    const_search(model, x, targets, polish_steps=5, polish_start="best", **common)
    assert starts[-2:] == [True, True]
    run = _Run(model, x, targets, targeted=True, method="ead", steps=p.polish_steps, step_size=p.step_size,
               confidence=p.confidence, regularization=p.regularization, decision_rule=p.decision_rule,
               abort_early=False, patience=1, min_improvement=0.0)
    at_constants(run, torch.arange(len(x)), out.const)
    assert (out.norm <= run.best_norm).all()


@pytest.mark.parametrize("name", ["cw", "ead"])
def test_a_clip_that_cannot_be_fooled_stays_infinite(setup, name):
    model, x, y, targets = setup
    never = Unreachable(model, never=3)
    keep = y != 3  # clips of class 3 are misclassified by this model: not attacked
    x, y = x[keep], y[keep]
    t = torch.where(y == 0, 1, 0)  # reachable targets …
    t[:3] = 3  # … but the first three clips aim at the class the model never predicts
    res = run_attack(never, x, y, config=AttackConfig.create(name, const_retries=1), targets=t)
    assert res.attacked.all()
    norms = res.budget_norms()
    assert np.isinf(norms[:3]).all() and not res.success[:3].any()
    np.testing.assert_array_equal(res.adversarial[:3], x[:3].numpy())  # the clean input, not zeros
    assert np.isfinite(norms[3:]).all() and res.success[3:].all()
    assert [n for n in res.notes if n.code == "const-retries"][0].counts["failed"] == 3


def test_pilot_learns_the_bracket_for_the_other_clips(setup):
    model, x, _, targets = setup
    out = const_search(model, x, targets, targeted=True, method="cw", steps=200, step_size=1e-2,
                       binary_search_steps=4, initial_const=1e-2, pilot=4, pilot_extra=3)
    assert list(out.pilot) == list(pilot_rows(len(x), 4)) and len(out.pilot) == 4
    pilot_consts = out.const[torch.as_tensor(out.pilot)]
    assert out.start_const == pytest.approx(float(torch.exp(torch.log(pilot_consts).median())))
    assert torch.isfinite(out.const).all() and torch.isfinite(out.norm).all()


def test_a_long_search_says_how_far_it_is_after_each_constant_and_polish_run(setup, caplog, monkeypatch):
    """Progress lines (one per constant and polish run when due; here every time) whose counts are
    the search's own: the clips fooled and the gradient steps per clip so far."""
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    model, x, y, targets = setup
    model = Unreachable(model, never=3)  # clips aiming at class 3 are never fooled: the counts differ
    x, targets = x[y != 3], targets[y != 3]
    caplog.set_level(logging.INFO, logger="advaudio.attacks")
    out = const_search(model, x, targets, targeted=True, method="cw", steps=60, step_size=1e-2,
                       binary_search_steps=3, initial_const=1e-2, pilot=4, pilot_extra=2, polish_steps=40)
    lines = [r.getMessage() for r in caplog.records if r.name == "advaudio.attacks.constsearch"]
    assert [m.split(" done")[0] for m in lines] == (
        [f"cw: pilot constant {k} of 5" for k in range(1, 6)] + [f"cw: constant {k} of 3" for k in range(1, 4)]
        + ["cw: polish run 1 of 2", "cw: polish run 2 of 2"])
    fooled = torch.isfinite(out.const)
    assert 0 < int(fooled.sum()) < len(x)
    rest = torch.as_tensor(np.setdiff1d(np.arange(len(x)), out.pilot))
    assert f"on {len(rest)} clips of the batch: {int(torch.isfinite(out.norm[rest]).sum())} fooled," in lines[7]
    assert f"on {int(fooled.sum())} clips of the batch: {int(fooled.sum())} fooled, " \
           f"{float(out.steps[fooled].double().mean()):.0f} gradient steps per clip, " in lines[-1]
    caplog.clear()
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 3600.0)  # short work says nothing
    const_search(model, x[:4], targets[:4], targeted=True, method="cw", steps=20, step_size=1e-2,
                 binary_search_steps=2, initial_const=1e-2)
    assert not [r for r in caplog.records if r.name.startswith("advaudio.attacks")]


def test_a_given_start_constant_makes_each_clips_search_its_own(setup):
    """With ``start_const`` (no pilot) a clip's result does not depend on the clips beside it: a
    job-array slice gives what the whole batch gives."""
    model, x, y, targets = setup
    cfg = AttackConfig.create("cw", start_const=0.5, steps=200)
    whole = run_attack(model, x, y, config=cfg, targets=targets)
    part = run_attack(model, x[5:13], y[5:13], config=cfg, targets=targets[5:13])
    np.testing.assert_allclose(part.budget_norms(), whole.budget_norms()[5:13], rtol=1e-4)
    assert not [n for n in whole.notes if n.code == "const-bracket"]  # nothing learned: no pilot


@pytest.mark.parametrize("name, extra", [("hopskipjump", {}), ("boundary", {}),
                                         ("hopskipjump", {"norm": "linf"})])
def test_the_query_budget_is_respected_and_recorded(setup, name, extra):
    model, x, y, targets = setup
    n = len(x)
    results = {}
    for budget in (60, 600):
        rec = Recorder(model)
        cfg = AttackConfig.create(name, max_queries=budget, noise_draws=32, **extra)
        t = tune_budget(rec, x, y, config=cfg, targets=targets)
        note = next(nt for nt in t.notes if nt.code == "query-budget")
        # per clip: its start's check and every Foolbox call; the clean pass, the noise pool and the
        # final verification are the engine's
        assert note.counts["most_used"] <= budget and note.counts["queries_per_clip"] <= budget
        assert note.counts["exhausted"] == n  # these steps need more than the budget
        assert rec.samples <= n + 32 + budget * n + n, rec.calls
        assert t.queries <= 32 + n + budget * n  # what the result says it used
        assert t.result.gradient_queries == 0 and t.reached and t.success_rate == 1.0
        results[budget] = t
    assert results[600].budget < results[60].budget  # the budget is what limits the attack here


def test_check_c_of_cw_passes_when_converged_and_warns_when_under_run(setup):
    model, x, y, targets = setup
    checks = {}
    # under-run: two Adam steps at one constant (measured here: 96 % of the clips fooled, the median clip's
    # norm far above its converged one); at threshold 0.5 the budget's clip is one many clips lie near, so
    # twice the effort moves several of them below it (measured +21 pp), where the defaults move none
    under_run = {"steps": 2, "binary_search_steps": 1, "step_size": 0.2, "initial_const": 1.0,
                 "abort_early": False, "pilot": 0, "polish_steps": 0}
    for label, params in (("default", {}), ("under-run", under_run)):
        t = tune_budget(model, x, y, config=AttackConfig.create("cw", **params), fooling_rate=0.5, targets=targets)
        assert t.reached
        ev = evaluation_checks(model, x, y, {"cw": t}, targets=targets)
        checks[label] = next(c for c in ev.checks if c.check == "more-steps-no-gain")
    assert checks["default"].passed, checks["default"].text
    assert not checks["under-run"].passed, checks["under-run"].text
    assert checks["under-run"].values["rate_doubled"] > checks["under-run"].values["rate"]


def test_check_c_of_cw_reruns_the_clips_above_the_budget_nearest_first(setup, monkeypatch):
    """A rerun keeps each clip's smaller norm, so only a clip above the budget can change sides: those,
    nearest first, are what check (c) reruns, and the doubled rate counts them over every attacked clip."""
    import advaudio.attacks.checks as checks_module

    model, x, y, targets = setup
    t = tune_budget(model, x, y, config=AttackConfig.create("cw", polish_steps=0), fooling_rate=0.75,
                    targets=targets)
    norms = t.result.budget_norms()
    above = np.flatnonzero(~(norms <= t.budget))
    assert len(above) == len(x) - math.ceil(0.75 * len(x))  # the quantile's clip and those below stay
    seen = []

    def spy(model_, xs, ys, **kw):
        seen.append(xs.clone())
        return run_attack(model_, xs, ys, **kw)

    monkeypatch.setattr(checks_module, "run_attack", spy)
    for limit in (len(above), 2):
        seen.clear()
        monkeypatch.setattr(checks_module, "EFFORT_CLIPS", limit)
        ev = evaluation_checks(model, x, y, {"cw": t}, targets=targets)
        check = next(c for c in ev.checks if c.check == "more-steps-no-gain")
        nearest = above[np.argsort(norms[above], kind="stable")[:limit]]
        (rerun,) = seen
        assert torch.equal(rerun, x[np.sort(nearest)])  # the clips above, nearest the budget first
        assert check.values["clips"] == limit and check.values["clips_above"] == len(above)
        assert check.values["rate"] == pytest.approx((norms <= t.budget).mean())
        assert check.values["rate_doubled"] >= check.values["rate"]
    # at a threshold of 1 the budget is the largest norm: no clip can cross it, nothing is rerun
    seen.clear()
    everything = tune_budget(model, x, y, config=AttackConfig.create("cw", polish_steps=0), fooling_rate=1.0,
                             targets=targets)
    ev = evaluation_checks(model, x, y, {"cw": everything}, targets=targets)
    check = next(c for c in ev.checks if c.check == "more-steps-no-gain")
    assert seen == [] and check.passed and check.values["clips_above"] == 0
    assert check.values["rate"] == check.values["rate_doubled"] == 1.0


def test_cost_model_scales_the_measured_costs_with_the_parameters():
    from advaudio.study.costs import ATTACK_COSTS, attack_work

    g, f = attack_work("cw", CarliniWagnerParams())
    assert (g, f) == (ATTACK_COSTS["cw"].gradient, 0.0)  # the measured defaults, early exits included
    g, _ = attack_work("cw", CarliniWagnerParams(steps=1000, binary_search_steps=9, abort_early=False,
                                                 polish_steps=0))
    assert g == 9000  # no early abort: every step of every constant
    polish = ATTACK_COSTS["cw"].polish
    assert 0 < polish < ATTACK_COSTS["cw"].gradient
    g2, _ = attack_work("cw", CarliniWagnerParams(binary_search_steps=2 * CarliniWagnerParams().binary_search_steps))
    assert g2 == pytest.approx(2 * (ATTACK_COSTS["cw"].gradient - polish) + polish)  # twice the search, one polish
    g0, _ = attack_work("cw", CarliniWagnerParams(polish_steps=0))
    assert g0 == pytest.approx(ATTACK_COSTS["cw"].gradient - polish)
    g3, _ = attack_work("cw", CarliniWagnerParams(polish_patience=2 * CarliniWagnerParams().polish_patience))
    assert g3 == pytest.approx(ATTACK_COSTS["cw"].gradient + polish)  # twice the patience, twice the polish
    from advaudio.study.costs import EFFORT_CLIPS, _check_work

    g, _ = attack_work("cw", CarliniWagnerParams())
    # check (c) reruns the clips above the budget (4 of 40 at 90 %, 10 of 100 capped) at 4x the steps
    assert _check_work("cw", CarliniWagnerParams(), 40, "quantile", 0.9) == (pytest.approx(4 * 4 * g), 0.0)
    assert _check_work("cw", CarliniWagnerParams(), 34, "quantile", 0.9)[0] == pytest.approx(3 * 4 * g)
    assert _check_work("cw", CarliniWagnerParams(), 100, "quantile", 0.9)[0] == pytest.approx(EFFORT_CLIPS * 4 * g)
    g, f = attack_work("ead", EADParams())
    assert f == ATTACK_COSTS["ead"].forward > 0  # EAD's plain forward per step
    assert attack_work("hopskipjump", HopSkipJumpParams(max_queries=300)) == (0.0, 300.0)
    assert attack_work("boundary", BoundaryParams())[1] <= BoundaryParams().max_queries
    clip, _ = attack_work("pgd", PGDParams(), precision="clip")
    quantile, _ = attack_work("pgd", PGDParams(), precision="quantile")
    assert quantile < clip
    assert attack_work("pgd", PGDParams(steps=20), precision="clip")[0] == pytest.approx(clip / 2)
    assert math.isfinite(clip)
