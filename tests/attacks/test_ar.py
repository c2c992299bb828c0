import numpy as np
import pytest
import torch

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.ar import AR, ar_generate
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import (OTHER_SHAPE_IDS, OTHER_SHAPES, assert_ground_truth_kept,
                                              assert_l2_all_poisoned_near_budget, assert_rate_respected)

BUDGET = 1.0


@pytest.fixture(scope="module")
def poisoned(cifar_small):
    return create_attack("ar").poison(cifar_small, seed=0)


def residual_accuracy(pds) -> float:
    """Nearest-class-filter accuracy: predict the class whose AR filter (−1 at the new pixel) leaves least energy."""
    f = pds.artifacts["coefficients"].astype(np.float32).copy()
    k, c, w, _ = f.shape
    f[..., -1, -1] = -1.0
    x = torch.from_numpy(pds.perturbation()[pds.is_poison].astype(np.float32)).permute(0, 3, 1, 2)
    weight = torch.from_numpy(f.transpose(1, 0, 2, 3).reshape(c * k, 1, w, w))  # groups=c: channel-major
    r = torch.nn.functional.conv2d(x, weight, groups=c) ** 2
    energy = r.reshape(len(x), c, k, -1).sum(dim=(1, 3))
    return float((energy.argmin(dim=1).numpy() == pds.labels[pds.is_poison]).mean())


def test_registered_with_summary():
    assert ATTACKS.get("ar") is AR and AR.summary and AR.kind == "availability"


def test_norms_within_budget_and_close_to_it(poisoned, cifar_small):
    assert_l2_all_poisoned_near_budget(poisoned, cifar_small, BUDGET, near=0.9)
    assert poisoned.attack["name"] == "ar"


def test_clean_label_and_ground_truth(poisoned, cifar_small):
    assert_ground_truth_kept(poisoned, cifar_small)


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_poison_rate(cifar_small, rate):
    pds = AR(poison_rate=rate).poison(cifar_small, seed=3)
    assert_rate_respected(pds, cifar_small, rate)
    assert (pds.images[pds.is_poison] != cifar_small.images[pds.is_poison]).any(axis=(1, 2, 3)).all()
    assert (pds.poison_norms[pds.is_poison] <= BUDGET + 1e-6).all()


def test_seeded(cifar_small, poisoned):
    again = create_attack("ar").poison(cifar_small, seed=0)
    assert np.array_equal(again.images, poisoned.images)
    assert np.array_equal(again.artifacts["coefficients"], poisoned.artifacts["coefficients"])
    other = create_attack("ar").poison(cifar_small, seed=1)
    assert not np.array_equal(other.images, poisoned.images)
    assert not np.allclose(other.artifacts["coefficients"], poisoned.artifacts["coefficients"])


def test_coefficients_are_causal_and_sum_to_one(poisoned):
    coef = poisoned.artifacts["coefficients"]
    assert coef.shape == (10, 3, 3, 3)
    assert (coef[..., -1, -1] == 0).all()
    assert np.allclose(coef.sum(axis=(-2, -1)), 1.0, atol=1e-5)


def test_generator_matches_raster_scan():
    """The anti-diagonal vectorisation computes the same recurrence as the plain pixel-by-pixel scan."""
    rng = np.random.default_rng(0)
    w = 3
    coef = rng.standard_normal((2, 3, w, w)) * 0.3
    coef[..., -1, -1] = 0
    start = rng.standard_normal((2, 3, 9, 11))
    ref = start.copy()
    for i in range(w - 1, 9):
        for j in range(w - 1, 11):
            ref[:, :, i, j] = (ref[:, :, i - w + 1:i + 1, j - w + 1:j + 1] * coef).sum(axis=(-2, -1))
    assert np.allclose(ar_generate(coef, start.copy()), ref)


def test_fresh_start_per_image_but_class_separable(poisoned):
    delta = poisoned.perturbation().astype(np.float64)
    for cls in range(10):
        a, b = delta[np.flatnonzero(poisoned.labels == cls)[:2]].reshape(2, -1)
        assert not np.array_equal(a, b)
        assert abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)) < 0.9  # different textures, not one pattern
    assert residual_accuracy(poisoned) > 0.9  # chance is 0.1


@pytest.mark.parametrize("make", OTHER_SHAPES, ids=OTHER_SHAPE_IDS)
def test_other_shapes_and_class_counts(cifar_small, make):
    ds = make(cifar_small)
    pds = AR().poison(ds, seed=0)
    h, w, c = ds.image_shape
    assert pds.images.shape == ds.images.shape
    assert pds.artifacts["coefficients"].shape == (ds.num_classes, c, 3, 3)
    assert np.array_equal(pds.labels, ds.labels)
    assert (pds.poison_norms <= BUDGET + 1e-6).all()
    assert np.median(pds.poison_norms) > 0.9 * BUDGET
    assert residual_accuracy(pds) > 0.8


def test_window_and_budget_options(cifar_small):
    ds = cifar_small.subset(np.arange(100))
    pds = AR(window=5, budget=0.5, crop=0).poison(ds, seed=0)
    assert pds.artifacts["coefficients"].shape == (10, 3, 5, 5)
    assert (pds.poison_norms <= 0.5 + 1e-6).all() and np.median(pds.poison_norms) > 0.45
    assert residual_accuracy(pds) > 0.8


@pytest.mark.parametrize("bad", [{"window": 1}, {"budget": 0.0}, {"poison_rate": 1.5}, {"crop": -1}])
def test_invalid_config(bad):
    with pytest.raises(UnpoisonError):
        AR(**bad)
