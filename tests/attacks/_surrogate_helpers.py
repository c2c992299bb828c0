"""Shared tiny settings for the surrogate-attack tests: 200 real CIFAR-10 images, a tiny surrogate, 1–2 steps."""

from __future__ import annotations

import numpy as np

TINY = {"width": 0.125, "batch_size": 100, "progress": False, "device": "cpu"}


def tiny_subset(cifar_train, per_class: int = 20):
    from unpoison.data import stratified_subset

    return stratified_subset(cifar_train, per_class=per_class, seed=0)


def assert_linf_within(pds, clean, budget: float) -> None:
    d = np.abs(pds.images.astype(np.int16) - clean.images.astype(np.int16)).reshape(len(clean), -1).max(1) / 255
    assert np.allclose(pds.poison_norms, d, atol=1e-6)
    assert (pds.poison_norms <= budget + 1e-6).all()
    assert pds.attack["norm"] == "linf" and abs(pds.attack["budget"] - budget) < 1e-9


def assert_clean_label_ground_truth(pds, clean, count: int) -> None:
    assert np.array_equal(pds.labels, clean.labels) and np.array_equal(pds.original_labels, clean.labels)
    assert np.array_equal(pds.clean_images, clean.images)
    assert int(pds.is_poison.sum()) == count
    changed = (pds.images != clean.images).reshape(len(clean), -1).any(1)
    assert not changed[~pds.is_poison].any()  # only marked samples differ
    assert changed[pds.is_poison].mean() > 0.9  # and (almost) every marked one does
    assert (pds.poison_norms[~pds.is_poison] == 0).all()


def same_result(a, b) -> bool:
    return (np.array_equal(a.images, b.images) and np.array_equal(a.is_poison, b.is_poison)
            and np.array_equal(a.labels, b.labels))
