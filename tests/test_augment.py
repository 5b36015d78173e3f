"""Augmentation in model space: masks, gain, mixup, between-class mixing, on known inputs and in batches."""

import math

import h5py
import numpy as np
import pytest
import torch

from advaudio.augment import (
    Augmentation,
    RowProfile,
    apply_gain_,
    apply_masks_,
    bc_coefficient,
    draw_gains,
    draw_masks,
    mix_inputs,
    mix_targets,
    plan_mixing,
    row_profile,
)
from advaudio.data import SOURCE_STORE, StoreBatches
from advaudio.errors import ParameterError
from advaudio.models import create_model
from advaudio.views import fit_view

BATCH = 8


@pytest.fixture(scope="module")
def rows(store):
    return store.select(exclude_folds=[5])


@pytest.fixture(scope="module")
def view(store, rows):
    return fit_view(store, "stft+chroma", rows=rows, input_size=(24, 20))


@pytest.fixture(scope="module")
def exact_view(store, rows):
    """No resize: every model-input row is one band of one representation."""
    return fit_view(store, "stft+chroma", rows=rows, input_size=None)


# --------------------------------------------------------------------------- #
# Masks
# --------------------------------------------------------------------------- #
def test_masks_have_the_configured_widths_and_land_inside_the_input():
    aug = Augmentation(freq_masks=3, freq_mask_width=0.25, time_masks=2, time_mask_width=0.1)
    h, w, total = 24, 40, 500
    d = draw_masks(total, h, w, aug, torch.Generator().manual_seed(0))
    assert d.freq_width.shape == (total, 3) and d.time_width.shape == (total, 2)
    assert int(d.freq_width.max()) == 6 and int(d.time_width.max()) == 4  # round(0.25·24), round(0.1·40): reached
    assert int(d.freq_width.min()) == 0 and int(d.time_width.min()) == 0
    assert (d.freq_start >= 0).all() and (d.freq_start + d.freq_width <= h).all()
    assert (d.time_start >= 0).all() and (d.time_start + d.time_width <= w).all()
    # starts cover every place where a mask fits
    assert set(d.freq_start[d.freq_width == 6].tolist()) == set(range(h - 6 + 1))

    x = torch.rand(total, 1, h, w, generator=torch.Generator().manual_seed(1))
    mean = x.mean(dim=(1, 2, 3))
    out = apply_masks_(x.clone(), d)
    for n in range(0, total, 37):
        masked = torch.zeros(h, w, dtype=torch.bool)
        for s, k in zip(d.freq_start[n].tolist(), d.freq_width[n].tolist()):
            masked[s:s + k, :] = True
        for s, k in zip(d.time_start[n].tolist(), d.time_width[n].tolist()):
            masked[:, s:s + k] = True
        assert torch.equal(out[n, 0][masked], mean[n].expand(int(masked.sum())))  # the sample's mean
        assert torch.equal(out[n, 0][~masked], x[n, 0][~masked])  # the rest untouched


@pytest.mark.parametrize("extra", [False, True])
def test_masks_and_gain_in_batches_are_seeded_and_spare_adversarial_samples(store, rows, view, tmp_path, extra):
    adv = tmp_path / "adv.h5"
    with store.reader() as f, h5py.File(adv, "w") as g:
        g["adversarial"] = view.read(f, rows[:6]).numpy()
        g["label"] = store.labels[rows[:6]]
    kw = dict(batch_size=BATCH, shuffle=True, seed=2, extra_sources=[{"path": str(adv)}], mix=0.25)
    aug = Augmentation(freq_masks=2, freq_mask_width=0.3, time_masks=2, time_mask_width=0.3, gain_db=10.0,
                       extra=extra)
    ds = StoreBatches(store, view, rows, augmentation=aug, **kw)
    a, b, ref = ds[0, 1], StoreBatches(store, view, rows, augmentation=aug, **kw)[0, 1], \
        StoreBatches(store, view, rows, **kw)[0, 1]
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], ref["y"]) and "target" not in a  # reproducible
    changed = (a["x"] != ref["x"]).flatten(1).any(1)
    is_store = a["source"] == SOURCE_STORE
    assert changed[is_store].all()
    assert changed[~is_store].all() if extra else not changed[~is_store].any()  # only with extra
    assert not torch.equal(ds[1, 1]["x"], a["x"])  # another epoch, other draws


def test_inactive_augmentation_builds_the_batches_of_before():
    aug = Augmentation(freq_masks=2, freq_mask_width=0.0, time_masks=0, time_mask_width=0.5)
    assert not aug.active and not aug.masks and not aug.mixes
    with pytest.raises(ParameterError, match="mixing"):
        Augmentation(mixing="cutmix")
    with pytest.raises(ParameterError, match="freq_mask_width"):
        Augmentation(freq_mask_width=1.5)


# --------------------------------------------------------------------------- #
# Gain
# --------------------------------------------------------------------------- #
def test_row_profile_and_gain_move_only_the_db_rows(exact_view):
    profile = row_profile(exact_view)
    stft_bands = exact_view.shapes[0][0]
    assert profile.db.tolist() == [True] * stft_bands + [False] * exact_view.shapes[1][0]
    span = exact_view.high[0] - exact_view.low[0]
    assert torch.allclose(profile.span[:stft_bands], torch.full((stft_bands,), span, dtype=torch.float64))

    gains = draw_gains(1000, 6.0, torch.Generator().manual_seed(0))
    assert float(gains.abs().max()) <= 6.0 and float(gains.min()) < -5.5 and float(gains.max()) > 5.5

    h, w = exact_view.output_shape[1:]
    x = torch.full((2, 1, h, w), 0.5)
    out = apply_gain_(x.clone(), torch.tensor([3.0, -90.0], dtype=torch.float64), profile)
    torch.testing.assert_close(out[0, 0, :stft_bands], torch.full((stft_bands, w), 0.5 + 3.0 / span))
    assert torch.equal(out[1, 0, :stft_bands], torch.zeros(stft_bands, w))  # clipped at the bound
    assert torch.equal(out[:, 0, stft_bands:], x[:, 0, stft_bands:])  # chroma does not depend on the level


def test_row_profile_through_the_resize(store, rows):
    view = fit_view(store, "stft+chroma", rows=rows, input_size=(96, 20))
    profile = row_profile(view)
    # stft rows on top, chroma rows under them; a border row counts as what dominates it: the
    # resize (bilinear, antialiased: torch's interpolate) of an image that is 1 on the stft bands
    bands = [b for b, _ in view.shapes]
    indicator = torch.zeros(1, 1, sum(bands), view.frames)
    indicator[:, :, :bands[0]] = 1.0
    stft_weight = torch.nn.functional.interpolate(indicator, size=(96, 20), mode="bilinear", antialias=True,
                                                  align_corners=False)[0, 0, :, 0]
    assert profile.db.tolist() == (stft_weight > 0.5).tolist()
    assert profile.db[:90].all() and not profile.db[-2:].any()  # 12 of 525 bands: the last 2.2 rows
    assert torch.equal(profile.low, torch.tensor([view.low[0] if d else view.low[1] for d in profile.db.tolist()],
                                                 dtype=torch.float64))


# --------------------------------------------------------------------------- #
# mixup and between-class mixing
# --------------------------------------------------------------------------- #
def test_mixup_inputs_and_labels_are_the_stated_convex_combination():
    g = torch.Generator().manual_seed(0)
    x, xp = torch.rand(5, 1, 6, 7, generator=g), torch.rand(5, 1, 6, 7, generator=g)
    w = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0], dtype=torch.float64)
    out = mix_inputs(x, xp, w, "mixup")
    for n in range(5):
        torch.testing.assert_close(out[n], float(w[n]) * x[n] + (1 - float(w[n])) * xp[n])
    t = mix_targets(torch.tensor([0, 1, 2, 3, 3]), torch.tensor([1, 1, 0, 2, 0]), w, 4)
    expected = torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0.1, 0.9], [0, 0, 0, 1]])
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(t.sum(1), torch.ones(5))


def test_mixing_plans_pair_only_store_samples():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 1, 1])
    eligible = np.array([True] * 8 + [False] * 2)  # the last two: adversarial samples
    for method in ("mixup", "bc"):
        plan = plan_mixing(labels, eligible, method, 1.0, np.random.default_rng(0))
        assert (plan.partner[~eligible] == np.flatnonzero(~eligible)).all() and (plan.weight[~eligible] == 1).all()
        assert eligible[plan.partner[eligible]].all()  # nobody mixes with an adversarial sample
        assert ((plan.weight >= 0) & (plan.weight <= 1)).all()
        again = plan_mixing(labels, eligible, method, 1.0, np.random.default_rng(0))
        assert (again.partner == plan.partner).all() and (again.weight == plan.weight).all()
    mixup = plan_mixing(labels, eligible, "mixup", 1.0, np.random.default_rng(0))
    assert sorted(mixup.partner[:8].tolist()) == list(range(8))  # a permutation of the store samples
    bc = plan_mixing(labels, eligible, "bc", 1.0, np.random.default_rng(0))
    assert (labels[bc.partner[:8]] != labels[:8]).all()  # between classes
    lonely = plan_mixing(np.array([2, 2, 2]), np.ones(3, bool), "bc", 1.0, np.random.default_rng(0))
    assert (lonely.partner == np.arange(3)).all() and (lonely.weight == 1).all()  # no other class: not mixed


def _constant_db_profile(h, low=-80.0, high=20.0, db_rows=None):
    db = torch.ones(h, dtype=torch.bool) if db_rows is None else db_rows
    return RowProfile(db=db, low=torch.full((h,), low, dtype=torch.float64),
                      span=torch.full((h,), high - low, dtype=torch.float64))


def test_between_class_mixing_mixes_sounds_by_their_levels():
    h, w = 4, 5
    profile = _constant_db_profile(h)
    to_units = lambda db: (db + 80.0) / 100.0  # noqa: E731
    # a sound mixed with itself is itself, whatever the ratio (BC's normalisation keeps the level)
    x = torch.rand(3, 1, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = mix_inputs(x, x, torch.tensor([0.2, 0.5, 0.7], dtype=torch.float64), "bc", profile)
    torch.testing.assert_close(same, x)
    # ratio 1/2, the partner 20 dB quieter: p = 1/11; powers p²·P + (1-p)²·P/100 over p² + (1-p)²
    loud, quiet = torch.full((1, 1, h, w), to_units(0.0)), torch.full((1, 1, h, w), to_units(-20.0))
    p = float(bc_coefficient(torch.tensor([0.0]), torch.tensor([-20.0]), torch.tensor([0.5])))
    assert math.isclose(p, 1 / 11)
    mixed = mix_inputs(loud, quiet, torch.tensor([0.5], dtype=torch.float64), "bc", profile)
    expected_db = 10 * math.log10((p**2 + (1 - p) ** 2 / 100) / (p**2 + (1 - p) ** 2))
    torch.testing.assert_close(mixed, torch.full_like(loud, to_units(expected_db)))
    # rows not in dB (chroma) take the power-weighted average of the two, per frame
    db_rows = torch.tensor([True, True, False, False])
    profile = _constant_db_profile(h, db_rows=db_rows)
    a, b = loud.clone(), quiet.clone()
    a[:, :, 2:], b[:, :, 2:] = 1.0, 0.0
    mixed = mix_inputs(a, b, torch.tensor([0.5], dtype=torch.float64), "bc", profile)
    share = p**2 / (p**2 + (1 - p) ** 2 / 100)  # the first sound's share of the power
    torch.testing.assert_close(mixed[:, :, 2:], torch.full((1, 1, 2, w), share))


def test_mixed_batches_are_the_stated_combinations_of_their_samples(store, rows, view, tmp_path):
    adv = tmp_path / "adv.h5"
    with store.reader() as f, h5py.File(adv, "w") as g:
        g["adversarial"] = view.read(f, rows[:6]).numpy()
        g["label"] = store.labels[rows[:6]]
    kw = dict(batch_size=BATCH, shuffle=True, seed=4, extra_sources=[{"path": str(adv)}], mix=0.25)
    plain = StoreBatches(store, view, rows, **kw)
    mixed = StoreBatches(store, view, rows, augmentation=Augmentation(mixing="mixup", mixup_alpha=0.4), **kw)
    seen_mixed = 0
    for i in range(len(plain)):
        ref, b = plain[0, i], mixed[0, i]
        assert torch.equal(b["y"], ref["y"]) and torch.equal(b["index"], ref["index"])
        t = b["target"]
        torch.testing.assert_close(t.sum(1), torch.ones(t.shape[0]))
        for n in range(t.shape[0]):
            weight = float(t[n, ref["y"][n]])
            if b["source"][n] != SOURCE_STORE:  # adversarial: as it was, its own label
                assert torch.equal(b["x"][n], ref["x"][n]) and weight == 1.0
                continue
            if weight == 1.0:
                continue
            # the partner: the store sample whose convex combination gives this input
            errors = [(float((b["x"][n] - (weight * ref["x"][n] + (1 - weight) * ref["x"][m])).abs().max()), m)
                      for m in range(t.shape[0]) if ref["source"][m] == SOURCE_STORE]
            error, m = min(errors)
            assert error < 1e-5 and float(t[n, ref["y"][m]]) >= 1 - weight - 1e-6
            seen_mixed += 1
    assert seen_mixed > 10


def test_soft_targets_are_the_weighted_hard_losses():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    a, b = torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([1, 2, 3, 0, 0, 3])
    w = torch.rand(6, dtype=torch.float64)
    ce = torch.nn.functional.cross_entropy
    for model in (create_model("resnet18", in_channels=1, num_classes=4, width=0.125),
                  create_model("googlenet", in_channels=1, num_classes=4, width=0.125, aux_logits=True)):
        soft = model.training_loss(logits, mix_targets(a, b, w, 4), denominator=6.0)
        hard = sum(float(w[n]) * ce(logits[n:n + 1], a[n:n + 1]) + (1 - float(w[n])) * ce(logits[n:n + 1], b[n:n + 1])
                   for n in range(6)) / 6
        torch.testing.assert_close(soft, hard)
        # hard labels: exactly the loss of before
        assert torch.equal(model.training_loss(logits, a), ce(logits, a))
