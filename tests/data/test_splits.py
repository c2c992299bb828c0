import numpy as np
import pytest

from unpoison.data import carve_trusted, stratified_split, stratified_subset
from unpoison.data.splits import stratified_indices
from unpoison.errors import UnpoisonError


def test_stratified_subset_per_class_and_fraction(cifar_small):
    sub = stratified_subset(cifar_small, per_class=7, seed=3)
    assert sub.class_counts().tolist() == [7] * 10
    frac = stratified_subset(cifar_small, fraction=0.1, seed=3)
    assert frac.class_counts().tolist() == [5] * 10
    again = stratified_subset(cifar_small, per_class=7, seed=3)
    other = stratified_subset(cifar_small, per_class=7, seed=4)
    assert np.array_equal(sub.indices, again.indices) and not np.array_equal(sub.indices, other.indices)


def test_quotas_sum_exactly_with_unbalanced_classes():
    labels = np.array([0] * 7 + [1] * 3 + [2] * 1)
    idx = stratified_indices(labels, total=5, seed=0)
    assert len(idx) == 5 and np.bincount(labels[idx], minlength=3).tolist() in ([3, 1, 1], [3, 2, 0], [4, 1, 0])


def test_split_is_a_partition(cifar_small):
    a, b = stratified_split(cifar_small, fraction=0.2, seed=0)
    assert len(a) + len(b) == len(cifar_small)
    assert not set(a.indices.tolist()) & set(b.indices.tolist())


def test_trusted_never_from_test(cifar_small, cifar_test_small):
    trusted, rest = carve_trusted(cifar_small, per_class=2, seed=0)
    assert trusted.class_counts().tolist() == [2] * 10 and len(rest) == 480
    assert trusted.meta["trusted"]["size"] == 20
    with pytest.raises(UnpoisonError, match="test split"):
        carve_trusted(cifar_test_small, fraction=0.01)


def test_bad_sizes():
    with pytest.raises(UnpoisonError, match="exactly one"):
        stratified_indices(np.zeros(10, int), per_class=1, fraction=0.5)
    with pytest.raises(UnpoisonError, match="only 10 images"):
        stratified_indices(np.zeros(10, int), per_class=11)
    with pytest.raises(UnpoisonError, match="fraction"):
        stratified_indices(np.zeros(10, int), fraction=1.5)
