import numpy as np
import pytest

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.urp import URP
from unpoison.data import ImageDataset
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import OTHER_SHAPE_IDS, OTHER_SHAPES, assert_rate_respected

BUDGET = 8 / 255


@pytest.fixture(scope="module")
def poisoned(cifar_small):
    return create_attack("urp").poison(cifar_small, seed=0)


def check_class_wise(pds, clean: ImageDataset, budget: float = BUDGET) -> None:
    """Wherever clipping could not bite, a poisoned image's change is exactly its class pattern."""
    m = int(round(budget * 255))
    q = np.rint(pds.artifacts["patterns"] * 255).astype(np.int16)
    idx = np.flatnonzero(pds.is_poison)
    delta = pds.perturbation()[idx]
    c = clean.images[idx].astype(np.int16)
    safe = (c >= m) & (c <= 255 - m)
    assert safe.mean() > 0.5
    assert np.array_equal(delta[safe], q[pds.labels[idx]][safe])
    assert (np.abs(delta) <= np.abs(q[pds.labels[idx]])).all()  # clipping only shrinks a change


def test_registered_with_summary():
    assert ATTACKS.get("urp") is URP and URP.summary and URP.kind == "availability"


def test_norms_within_budget_and_at_it(poisoned, cifar_small):
    norms = poisoned.poison_norms
    assert poisoned.is_poison.all()
    measured = np.abs(poisoned.images.astype(np.int16) - cifar_small.images).reshape(len(norms), -1).max(1) / 255
    assert np.allclose(norms, measured, atol=1e-6)
    assert (norms <= BUDGET + 1e-6).all()
    assert np.mean(np.abs(norms - BUDGET) < 1e-6) > 0.95
    assert poisoned.attack["norm"] == "linf" and poisoned.attack["budget"] == pytest.approx(BUDGET)


def test_clean_label_and_ground_truth(poisoned, cifar_small):
    assert np.array_equal(poisoned.labels, cifar_small.labels)
    assert np.array_equal(poisoned.original_labels, cifar_small.labels)
    assert np.array_equal(poisoned.clean_images, cifar_small.images)


def test_patterns_uniform_and_class_wise(poisoned, cifar_small):
    pat = poisoned.artifacts["patterns"]
    assert pat.shape == (10, 32, 32, 3) and pat.dtype == np.float32
    q = np.rint(pat * 255)
    assert np.allclose(pat * 255, q, atol=1e-4) and np.abs(q).max() == 8
    assert set(np.unique(q)) == set(range(-8, 9))  # every grey level in ±8 occurs
    assert abs(q.mean()) < 0.1 and 3.9 < np.abs(q).mean() < 4.1  # U[-8, 8] rounded: E|q| = 7·8/16 + 8/16 = 4
    flat = q.reshape(10, -1)
    assert (np.corrcoef(flat)[~np.eye(10, dtype=bool)] < 0.2).all()  # independent draws per class
    check_class_wise(poisoned, cifar_small)


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_poison_rate(cifar_small, rate):
    pds = URP(poison_rate=rate).poison(cifar_small, seed=3)
    assert_rate_respected(pds, cifar_small, rate)
    assert (pds.poison_norms[pds.is_poison] <= BUDGET + 1e-6).all()
    check_class_wise(pds, cifar_small)


def test_seeded(cifar_small, poisoned):
    again = create_attack("urp").poison(cifar_small, seed=0)
    assert np.array_equal(again.images, poisoned.images)
    other = create_attack("urp").poison(cifar_small, seed=1)
    assert not np.array_equal(other.images, poisoned.images)
    assert not np.array_equal(other.artifacts["patterns"], poisoned.artifacts["patterns"])


@pytest.mark.parametrize("make", OTHER_SHAPES, ids=OTHER_SHAPE_IDS)
def test_other_shapes_and_class_counts(cifar_small, make):
    ds = make(cifar_small)
    pds = URP().poison(ds, seed=0)
    assert pds.artifacts["patterns"].shape == (ds.num_classes, *ds.image_shape)
    assert (pds.poison_norms <= BUDGET + 1e-6).all()
    check_class_wise(pds, ds)


def test_other_budget(cifar_small):
    pds = URP(budget="4/255").poison(cifar_small, seed=0)
    assert (pds.poison_norms <= 4 / 255 + 1e-6).all() and np.abs(pds.perturbation()).max() == 4
    check_class_wise(pds, cifar_small, 4 / 255)


@pytest.mark.parametrize("bad", [{"budget": 0.5 / 255}, {"budget": 1.5}, {"poison_rate": -0.1}])
def test_invalid_config(bad):
    with pytest.raises(UnpoisonError):
        URP(**bad)
