import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.lsp import LSP, LSPConfig
from unpoison.data import ImageDataset
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import (assert_ground_truth_kept, assert_l2_all_poisoned_near_budget,
                                              assert_rate_respected)

BUDGET = 1.30


@pytest.fixture(scope="module")
def poisoned(cifar_small):
    return create_attack("lsp").poison(cifar_small, seed=0)


def test_registered_with_summary():
    assert ATTACKS.get("lsp") is LSP and LSP.summary and LSP.kind == "availability"


def test_norms_within_budget_and_close_to_it(poisoned, cifar_small):
    assert_l2_all_poisoned_near_budget(poisoned, cifar_small, BUDGET, near=0.8)


def test_clean_label_and_ground_truth(poisoned, cifar_small):
    assert_ground_truth_kept(poisoned, cifar_small)


@pytest.mark.parametrize("rate", [0.5, 0.13, 0.0])
def test_partial_poisoning(cifar_small, rate):
    pds = LSP(poison_rate=rate).poison(cifar_small, seed=3)
    assert_rate_respected(pds, cifar_small, rate)
    if rate:
        assert (pds.images[pds.is_poison] != cifar_small.images[pds.is_poison]).any(axis=(1, 2, 3)).all()
    if rate == 0.5:  # stratified: every class gets half its samples poisoned
        assert (np.bincount(pds.labels[pds.is_poison], minlength=10) == 25).all()


def test_seeded(cifar_small, poisoned):
    again = create_attack("lsp").poison(cifar_small, seed=0)
    assert np.array_equal(again.images, poisoned.images)
    other = create_attack("lsp").poison(cifar_small, seed=1)
    assert not np.allclose(other.artifacts["patterns"], poisoned.artifacts["patterns"])


def test_patterns_block_constant_and_distinct(poisoned):
    pat = poisoned.artifacts["patterns"]
    assert pat.shape == (10, 32, 32, 3) and pat.dtype == np.float32
    blocks = pat.reshape(10, 4, 8, 4, 8, 3)
    assert np.array_equal(blocks, np.broadcast_to(blocks[:, :, :1, :, :1], blocks.shape))
    flat = pat.reshape(10, -1)
    dists = np.linalg.norm(flat[:, None] - flat[None], axis=-1)
    assert (dists[~np.eye(10, dtype=bool)] > 0.5).all()
    # Each class's perturbation is its pattern wherever clipping did not bite.
    delta = poisoned.perturbation()
    expect = np.rint(pat[poisoned.labels] * 255)
    assert np.mean(delta == expect) > 0.9


def test_perturbations_are_linearly_separable(poisoned):
    x = poisoned.perturbation().reshape(len(poisoned), -1).astype(np.float32)
    y = poisoned.labels
    train = np.arange(len(y)) % 2 == 0
    clf = LogisticRegression(max_iter=500).fit(x[train], y[train])
    assert clf.score(x[train], y[train]) == 1.0
    assert clf.score(x[~train], y[~train]) == 1.0  # held out: the class shortcut, not memorisation


def test_bad_parameters(cifar_small):
    with pytest.raises(UnpoisonError, match="divisible"):
        LSP(patch_size=5).poison(cifar_small)
    for bad in ({"budget": 0}, {"poison_rate": 1.5}, {"patch_size": 0}):
        with pytest.raises(UnpoisonError):
            LSPConfig(**bad)


def test_many_classes_and_large_images(cifar_small):
    names = tuple(f"c{i}" for i in range(43))
    ds43 = ImageDataset(cifar_small.images, np.arange(500) % 43, names)  # every class present
    pds = LSP().poison(ds43, seed=0)
    pat = pds.artifacts["patterns"].reshape(43, -1)
    assert pat.shape[0] == 43 and len(np.unique(pat, axis=0)) == 43
    assert (pds.poison_norms <= BUDGET + 1e-6).all()

    big = ImageDataset(np.repeat(np.repeat(cifar_small.images[:100], 2, 1), 2, 2), cifar_small.labels[:100],
                       cifar_small.class_names)
    pds = LSP(budget=2.6).poison(big, seed=0)
    assert pds.images.shape == (100, 64, 64, 3) and pds.artifacts["patterns"].shape == (10, 64, 64, 3)
    assert (pds.poison_norms <= 2.6 + 1e-6).all() and np.median(pds.poison_norms) > 0.8 * 2.6


def test_single_channel(cifar_small):
    gray = ImageDataset(cifar_small.images[..., :1], cifar_small.labels, cifar_small.class_names)
    pds = LSP().poison(gray, seed=0)
    assert pds.images.shape == (500, 32, 32, 1) and (pds.poison_norms <= BUDGET + 1e-6).all()
