"""What the attack numbers mean: perturbation norms, target classes, budgets, fooling-rate curves,
the budget search's range, and decision-based starting points.

Every expected value is computed here, independently of the code under test: norms of
``adversarial - clean`` with numpy, success by running the model on the stored adversarial, the
budget as the smallest norm that fools the threshold's share of the attacked clips, nearest
starting points by a brute-force loop.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_cnn import NUM_CLASSES, trained_model
from torch import nn

from advaudio.attacks import (
    AttackConfig,
    choose_targets,
    perturbation_norms,
    quantile_budget,
    run_attack,
    tune_budget,
)
from advaudio.attacks.decision import _nearest_valid, _starting_points
from advaudio.attacks.results import AttackResult
from advaudio.attacks.tuning import budget_low, minimisation_budget
from advaudio.errors import ParameterError


@pytest.fixture(scope="module")
def setup():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, x, y = trained_model()
    yield model, x, y
    torch.set_num_threads(before)


def _norms_by_hand(clean, adversarial) -> dict[str, np.ndarray]:
    """L1, L2, L∞ of the perturbation and SNR in dB, one Python loop per clip, in float64."""
    out = {"l1": [], "l2": [], "linf": [], "snr_db": []}
    for x, a in zip(np.asarray(clean, np.float64), np.asarray(adversarial, np.float64)):
        d = (a - x).ravel().tolist()
        energy_d, energy_x = math.fsum(v * v for v in d), math.fsum(v * v for v in x.ravel().tolist())
        out["l1"].append(math.fsum(abs(v) for v in d))
        out["l2"].append(math.sqrt(energy_d))
        out["linf"].append(max(abs(v) for v in d))
        out["snr_db"].append(math.inf if energy_d == 0 else
                             (-math.inf if energy_x == 0 else 10 * math.log10(energy_x / energy_d)))
    return {k: np.array(v) for k, v in out.items()}


def _assert_norms(got: dict, want: dict) -> None:
    # float64 sums of at most 256 terms: relative error below 256 · 2⁻⁵³
    for key in ("l1", "l2", "linf"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=0, err_msg=key)
    np.testing.assert_allclose(got["snr_db"], want["snr_db"], rtol=0, atol=1e-9, err_msg="snr_db")


# --------------------------------------------------------------------------- #
# Perturbation norms
# --------------------------------------------------------------------------- #
def test_perturbation_norms_are_the_textbook_ones():
    rng = np.random.default_rng(0)
    clean = rng.random((8, 1, 4, 5)).astype(np.float32)
    adv = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    adv[1] = clean[1]  # no perturbation: SNR +inf, every norm 0
    adv[2, 0, 3, 4] = clean[2, 0, 3, 4] + 0.5 * (1 if clean[2, 0, 3, 4] < 0.5 else -1)  # one large entry
    clean[3] = 0.0  # a silent clip: SNR -inf
    clean[4] = adv[4] = 0.0  # a silent clip left as it is: no perturbation, SNR +inf
    adv[5] = clean[5]
    clean[5, 0, 0, 0], adv[5, 0, 0, 0] = 0.0, 1.0  # ||δ||² = 1 exactly: an ordinary, finite SNR
    got = perturbation_norms(clean, adv)
    want = _norms_by_hand(clean, adv)
    _assert_norms(got, want)
    assert got["snr_db"][1] == got["snr_db"][4] == math.inf and got["snr_db"][3] == -math.inf
    assert got["l1"][1] == got["l2"][4] == 0 and math.isfinite(got["snr_db"][5]) and got["l2"][5] == 1
    assert got["linf"][2] == pytest.approx(abs(float(adv[2, 0, 3, 4]) - float(clean[2, 0, 3, 4])), rel=1e-12)


@pytest.mark.parametrize("name, norm, epsilon, params", [
    ("pgd", "linf", 0.1, {"steps": 5}),
    ("pgd", "l2", 1.5, {"steps": 5}),
    ("fgsm", "linf", 0.2, {}),
    ("deepfool", "l2", None, {"steps": 20}),
])
def test_an_attack_s_norms_are_those_of_its_adversarials(setup, name, norm, epsilon, params):
    model, x, y = setup
    res = run_attack(model, x, y, config=AttackConfig.create(name, norm=norm, **params), epsilon=epsilon)
    want = _norms_by_hand(x.numpy(), res.adversarial)
    _assert_norms({k: getattr(res, k) for k in want}, want)
    if epsilon is not None:  # within the ε-ball of the attack's norm (float32 inputs: rounding of ε)
        assert np.all(want[norm] <= epsilon * (1 + 1e-5) + 1e-6)
    np.testing.assert_allclose(res.norm_values(), want[norm], rtol=1e-12, atol=0)  # the budget norm


# --------------------------------------------------------------------------- #
# Budgets and fooling-rate curves of minimisation attacks
# --------------------------------------------------------------------------- #
def _budget_by_hand(norms: np.ndarray, rate: float) -> tuple[float, bool]:
    """The smallest norm b with (clips fooled at norm <= b) / clips >= rate; else the largest finite."""
    finite = sorted(v for v in norms.tolist() if math.isfinite(v))
    for b in finite:
        if sum(v <= b for v in norms.tolist()) >= rate * len(norms) - 1e-9:
            return b, True
    return (finite[-1] if finite else math.nan), False


@pytest.mark.parametrize("name, norm, params", [
    ("deepfool", "l2", {"steps": 20}),
    ("fmn", "l1", {"steps": 50}),
    ("fmn", "linf", {"steps": 50}),
])
def test_a_minimisation_budget_is_the_quantile_of_the_clips_norms_in_the_attack_s_norm(setup, name, norm, params):
    model, x, y = setup
    labels = y.clone()
    labels[:3] = (labels[:3] + 1) % NUM_CLASSES  # three clips misclassified: not attacked, not counted
    rate = 0.75
    tune = tune_budget(model, x, labels, config=AttackConfig.create(name, norm=norm, **params), fooling_rate=rate)
    res = tune.result
    with torch.no_grad():
        attacked = (model(x).argmax(1) == labels).numpy()
        predicted = model(torch.from_numpy(res.adversarial)).argmax(1).numpy()
    fooled = attacked & ((predicted == res.targets) if res.targeted else (predicted != labels.numpy()))
    size = _norms_by_hand(x.numpy(), res.adversarial)[norm]
    norms = np.where(fooled, size, np.inf)[attacked]
    budget, reached = _budget_by_hand(norms, rate)
    assert attacked.sum() == 13 and tune.n_attacked == 13 and tune.n_excluded == 3
    assert tune.norm == norm and tune.reached == reached
    assert tune.budget == pytest.approx(budget, rel=1e-12)
    within = fooled & (np.where(fooled, size, np.inf) <= budget * (1 + 1e-12))
    np.testing.assert_array_equal(tune.within_budget, within)
    assert tune.fooling_rate == pytest.approx(within.sum() / 13)
    # the fooling-rate curve: at each clip's minimal norm, the share of attacked clips fooled within it
    finite = np.sort(norms[np.isfinite(norms)])
    assert [e for e, _ in tune.evaluations] == pytest.approx(np.unique(finite).tolist(), rel=1e-12)
    for e, r in tune.evaluations:
        assert r == pytest.approx(np.sum(norms <= e * (1 + 1e-12)) / 13)


def _result(*, norm="l2", values, success, attacked, minimal=None, minimal_low=None, labels=None, predicted=None):
    n = len(values)
    labels = np.zeros(n, int) if labels is None else np.asarray(labels)
    predicted = np.where(success, 1, 0) if predicted is None else np.asarray(predicted)
    values = np.asarray(values, np.float64)
    return AttackResult(
        attack="x", kind="minimisation", norm=norm, epsilon=None, targeted=True, target_rule="random", config={},
        adversarial=np.zeros((n, 1, 1, 1), np.float32), labels=labels, clean_predicted=labels,
        predicted=predicted, targets=np.ones(n, int), attacked=np.asarray(attacked, bool),
        success=np.asarray(success, bool), l1=values * 3, l2=values, linf=values / 2, snr_db=-values,
        queries=1, gradient_queries=0, wall_time_s=0.0,
        minimal_budget=None if minimal is None else np.asarray(minimal, np.float64),
        minimal_budget_low=None if minimal_low is None else np.asarray(minimal_low, np.float64),
    )


def test_budget_rates_and_curve_count_attacked_clips_only():
    values = np.array([0.5, 0.1, 0.4, 0.3, 0.2, 0.9, 0.3, 0.7, 0.6, 0.8])
    success = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1, 0], bool)
    attacked = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)  # two excluded: one "fooled", one not
    res = _result(values=values, success=success, attacked=attacked)
    norms = res.budget_norms()
    np.testing.assert_array_equal(np.isnan(norms), ~attacked)
    np.testing.assert_array_equal(norms[attacked], np.where(success, values, np.inf)[attacked])
    assert res.fooling_rate == pytest.approx(7 / 8) and res.n_attacked == 8 and res.n_excluded == 2
    assert res.misclassification_rate == pytest.approx(7 / 8)  # predicted 1 ≠ label 0 where fooled

    # 8 attacked clips, 7 fooled at 0.1 0.2 0.3 0.3 0.4 0.5 0.7, one never (0.9 failed)
    for rate, budget, fooled in ((0.25, 0.2, 2), (0.5, 0.3, 4), (0.625, 0.4, 5), (0.75, 0.5, 6), (0.875, 0.7, 7)):
        mb = minimisation_budget(res, rate)
        assert (mb.budget, mb.reached, mb.reason) == (budget, True, None)
        np.testing.assert_array_equal(mb.within_budget, success & attacked & (values <= budget))
        assert mb.fooling_rate == pytest.approx(fooled / 8)
        within = success & attacked & (values <= budget)
        assert mb.stats["l2"] == {"mean": pytest.approx(values[within].mean()),
                                  "median": pytest.approx(np.median(values[within]))}
        assert mb.stats["l1"]["mean"] == pytest.approx(3 * values[within].mean())
    # the curve: one step per distinct norm (0.3 twice), out of the 8 attacked clips
    assert minimisation_budget(res, 0.5).evaluations == [
        (0.1, 1 / 8), (0.2, 2 / 8), (0.3, 4 / 8), (0.4, 5 / 8), (0.5, 6 / 8), (0.7, 7 / 8)]
    never = minimisation_budget(res, 1.0)  # 8 of 8 needed, 7 fooled: the largest finite norm, and why
    assert (never.budget, never.reached) == (0.7, False)
    assert "1 of 8 sample(s) not fooled" in never.reason
    # a norm that is no number, no norms, a rate outside (0, 1]: no budget at all
    for norms, rate in (([0.1, np.nan], 0.5), ([], 0.5), ([0.1], 0.0), ([0.1], 1.5)):
        with pytest.raises(ParameterError):
            quantile_budget(norms, rate)


def test_per_clip_minimal_budgets_and_their_lower_bounds():
    minimal = np.array([0.2, np.inf, 0.05, 0.4, 0.1, 0.3])
    low = np.array([0.15, 0.5, 0.04, 0.2, 0.09, 0.25])
    attacked = np.array([1, 1, 1, 1, 1, 0], bool)
    res = _result(values=np.full(6, 9.0), success=np.isfinite(minimal) & attacked, attacked=attacked,
                  minimal=minimal, minimal_low=low)
    norms = res.budget_norms()  # the search's minimal ε, not the norm of the stored adversarial
    np.testing.assert_array_equal(norms[:5], minimal[:5])
    assert math.isnan(norms[5])
    # attacked: 0.05 0.1 0.2 0.4 inf; 60 % of 5 is 3 clips: budget 0.2; its bracket's lower end is the
    # same order statistic of the lower bounds (0.04 0.09 0.15 0.2 0.5): 0.15
    mb = minimisation_budget(res, 0.6)
    assert (mb.budget, mb.reached) == (0.2, True)
    assert budget_low(res, 0.6) == 0.15
    assert budget_low(res, 0.8) == 0.2
    assert budget_low(_result(values=[1.0], success=[True], attacked=[True]), 0.5) is None


# --------------------------------------------------------------------------- #
# The range of the budget search
# --------------------------------------------------------------------------- #
class Unfoolable(nn.Module):
    """A linear classifier whose bias puts every input in [0, 1] in class 0."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(256, NUM_CLASSES)
        with torch.no_grad():
            self.linear.weight.uniform_(-0.01, 0.01)  # |w·x| <= 2.56 < the bias gap
            self.linear.bias.copy_(torch.tensor([100.0, 0.0, 0.0, 0.0]))

    def forward(self, x):
        return self.linear(x.flatten(1))


@pytest.mark.parametrize("norm, largest", [("linf", 1.0), ("l2", 16.0)])  # 16 = √(1·16·16): [0,1]'s diameter
def test_the_search_probes_up_to_the_largest_meaningful_perturbation(setup, norm, largest):
    _, x, _ = setup
    torch.manual_seed(0)
    model = Unfoolable().eval()
    labels = torch.zeros(len(x), dtype=torch.long)
    cfg = AttackConfig.create("pgd", norm=norm, steps=2)
    tune = tune_budget(model, x, labels, config=cfg, fooling_rate=0.5)
    assert not tune.reached and tune.n_attacked == len(x)
    np.testing.assert_array_equal(tune.result.minimal_budget, np.inf)
    np.testing.assert_array_equal(tune.result.minimal_budget_low, largest)  # not fooled up to the largest ε
    assert f"probed up to ε={largest:g}" in tune.reason
    bis = tune_budget(model, x, labels, config=cfg, fooling_rate=0.5, search="bisection")
    assert not bis.reached and max(e for e, _ in bis.evaluations) == largest and bis.budget == largest


# --------------------------------------------------------------------------- #
# Target classes
# --------------------------------------------------------------------------- #
def test_random_targets_are_uniform_over_the_other_classes():
    classes, n = 5, 6000
    labels = np.arange(n) % classes
    targets = choose_targets(None, None, labels, num_classes=classes, seed=7, ids=np.arange(n) + 1000).numpy()
    assert not np.any(targets == labels)
    for c in range(classes):
        counts = np.delete(np.bincount(targets[labels == c], minlength=classes), c)
        expected = n / classes / (classes - 1)
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 16.27, (c, counts)  # χ² with 3 degrees of freedom, p = 0.001


def test_random_targets_are_keyed_by_seed_and_clip_id_not_by_position():
    classes = 4
    rng = np.random.default_rng(3)
    ids = rng.choice(10_000, size=300, replace=False)
    labels = rng.integers(0, classes, size=300)
    whole = choose_targets(None, None, labels, num_classes=classes, seed=5, ids=ids).numpy()
    order = rng.permutation(300)  # other positions, other batch: the same clip, the same target
    np.testing.assert_array_equal(choose_targets(None, None, labels[order], num_classes=classes, seed=5,
                                                 ids=ids[order]).numpy(), whole[order])
    alone = [int(choose_targets(None, None, labels[i:i + 1], num_classes=classes, seed=5, ids=ids[i:i + 1])[0])
             for i in range(0, 300, 37)]
    assert alone == whole[::37].tolist()
    by_position = choose_targets(None, None, labels, num_classes=classes, seed=5).numpy()
    assert np.mean(by_position == whole) < 0.6  # the ids, not the positions, decide
    other_seed = choose_targets(None, None, labels, num_classes=classes, seed=6, ids=ids).numpy()
    assert np.mean(other_seed == whole) < 0.6
    np.testing.assert_array_equal(by_position, choose_targets(None, None, labels, num_classes=classes, seed=5,
                                                              ids=np.arange(300)).numpy())
    np.testing.assert_array_equal(choose_targets(None, None, labels, num_classes=classes).numpy(),
                                  choose_targets(None, None, labels, num_classes=classes, seed=0).numpy())
    two = choose_targets(None, None, labels % 2, num_classes=2, seed=5, ids=ids).numpy()
    np.testing.assert_array_equal(two, 1 - labels % 2)  # two classes: the other one, always
    for bad in ([0, classes], [-1, 0]):  # a label outside the classes has no "other class"
        with pytest.raises(ParameterError, match="labels"):
            choose_targets(None, None, bad, num_classes=classes)


def test_a_random_target_is_the_documented_draw_whatever_the_labels_container():
    """Stored shards record targets: a clip's target is ``(label + k) mod C`` with ``k`` drawn from
    ``default_rng([seed, id]).integers(1, C)``, so a rerun (or a slice) reproduces it exactly."""
    classes, seed = 7, 11
    labels = np.array([0, 3, 6, 2, 5, 1, 4, 6])
    ids = np.array([9, 40, 3, 1000, 77, 5, 12, 2])
    draw = [np.random.default_rng([seed, int(i)]).integers(1, classes) for i in ids]
    expected = (labels + np.array(draw)) % classes
    for container in (labels, labels.tolist(), torch.from_numpy(labels), torch.from_numpy(labels).float()):
        got = choose_targets(None, None, container, num_classes=classes, seed=seed, ids=ids.tolist())
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("call, message", [
    (lambda: choose_targets(None, None, [0, 1], rule="hardest", num_classes=3), "target_rule must be one of"),
    (lambda: choose_targets(None, None, [0, 1]), "needs the model"),
    (lambda: choose_targets(None, None, [0, 0], num_classes=1), "at least 2 classes"),
    (lambda: choose_targets(None, None, [0, 1, 2], num_classes=3, ids=[4, 5]), "ids has 2 entries for 3 labels"),
])
def test_target_choice_refuses_what_it_cannot_do_and_says_why(call, message):
    with pytest.raises(ParameterError, match=message):
        call()


class Logits(nn.Module):
    """Its inputs ``(N, 1, 1, C)`` are its logits."""

    def forward(self, x):
        return x.flatten(1)


def test_least_likely_targets_are_the_lowest_logit_other_than_the_true_class():
    rng = np.random.default_rng(4)
    logits = rng.random((40, 6)).astype(np.float32)
    labels = rng.integers(0, 6, 40)
    labels[:10] = logits[:10].argmin(1)  # the true class is the least likely: the next one is the target
    inputs = torch.from_numpy(logits[:, None, None, :])
    targets = choose_targets(Logits(), inputs, labels, rule="least-likely")
    for i in range(40):
        ranked = sorted(range(6), key=lambda c: logits[i, c])
        assert int(targets[i]) == next(c for c in ranked if c != labels[i]), i
    # the attack stage also names the number of classes: the rule is the same
    assert torch.equal(choose_targets(Logits(), inputs, labels, rule="least-likely", num_classes=6, seed=3), targets)


# --------------------------------------------------------------------------- #
# Starting points of decision-based attacks
# --------------------------------------------------------------------------- #
def _nearest_by_hand(x, candidates, predicted, want, targeted):
    """Per row of ``x``: the index of the nearest (L2) candidate of the wanted class, or None."""
    out = []
    for xi, w in zip(x, want):
        best, best_d = None, math.inf
        for j, (c, p) in enumerate(zip(candidates, predicted)):
            if (p == w) if targeted else (p != w):
                d = math.sqrt(math.fsum(float(v) ** 2 for v in (xi - c).ravel()))
                if d < best_d:
                    best, best_d = j, d
        out.append(best)
    return out


@pytest.mark.parametrize("targeted", [True, False])
def test_the_nearest_candidate_of_the_wanted_class_over_every_chunk(targeted):
    gen = torch.Generator().manual_seed(0)
    x, candidates = torch.rand(9, 1, 3, 3, generator=gen), torch.rand(23, 1, 3, 3, generator=gen)
    predicted = torch.randint(0, 4, (23,), generator=gen)
    predicted[predicted == 3] = 2  # nobody predicted as class 3
    want = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0])
    for batch_size in (4, 23, 100):  # candidates in chunks: the best of every chunk wins
        index, found = _nearest_valid(x, candidates, predicted, want, targeted, batch_size)
        expected = _nearest_by_hand(x.numpy(), candidates.numpy(), predicted.numpy(), want.numpy(), targeted)
        assert found.tolist() == [e is not None for e in expected]
        assert [int(i) if f else None for i, f in zip(index, found)] == expected


def test_starting_points_come_from_the_pool_then_from_noise_then_none():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(12, 1, 1, 4, generator=gen)
    pool = torch.rand(30, 1, 1, 4, generator=gen)
    pool[..., 3] = 0.0  # the pool holds no clip the model puts in class 3
    targets = torch.tensor([0, 1, 2, 3] * 3)
    labels = (targets + 1) % 4
    model = Logits()
    run = SimpleNamespace(pool_x=pool, pool_pred=pool.flatten(1).argmax(1), counter=model, batch_size=7,
                          noise_x=None, noise_pred=None)
    config = AttackConfig.create("hopskipjump", noise_draws=16, seed=3).resolved()
    starts, source = _starting_points(run, x, labels, targets, config)
    noise = run.noise_x  # the seeded noise draws
    assert noise.shape == (16, 1, 1, 4) and float(noise.min()) >= 0 and float(noise.max()) <= 1
    from_pool = _nearest_by_hand(x.numpy(), pool.numpy(), run.pool_pred.numpy(), targets.numpy(), True)
    from_noise = _nearest_by_hand(x.numpy(), noise.numpy(), noise.flatten(1).argmax(1).numpy(), targets.numpy(),
                                  True)
    for i in range(12):
        if from_pool[i] is not None:
            assert source[i] == "pool" and torch.equal(starts[i], pool[from_pool[i]]), i
        elif from_noise[i] is not None:
            assert source[i] == "noise" and torch.equal(starts[i], noise[from_noise[i]]), i
        else:
            assert source[i] == "none" and torch.equal(starts[i], x[i]), i
        if source[i] != "none":  # a start is in the target class
            assert int(starts[i].flatten().argmax()) == int(targets[i])
    assert set(source[targets.numpy() == 3]) <= {"noise", "none"} and "pool" in set(source)
    # without noise draws, class 3 has no starting point; with start_rule "noise", the pool is skipped
    run.noise_x = None
    _, source = _starting_points(run, x, labels, targets, AttackConfig.create("hopskipjump", noise_draws=0).resolved())
    assert set(source[targets.numpy() == 3]) == {"none"} and set(source[targets.numpy() != 3]) == {"pool"}
    run.noise_x = None
    _, source = _starting_points(run, x, labels, targets,
                                 AttackConfig.create("hopskipjump", noise_draws=16, start_rule="noise").resolved())
    assert "pool" not in set(source)
