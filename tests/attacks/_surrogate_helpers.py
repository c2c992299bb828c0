"""Shared pieces of the attack tests.

For the surrogate attacks (EM, REM, TAP, LC): tiny settings (200 real CIFAR-10 images, a tiny surrogate, 1–2 steps),
one set of module fixtures, and the checks they all make. For the data-free availability attacks (AR, LSP, OPS,
URP): the odd-shaped datasets they are all run on and the checks they share.
"""

from __future__ import annotations

import numpy as np
import pytest

from unpoison.attacks.cache import GenerationInterrupted
from unpoison.data import ImageDataset

TINY = {"width": 0.125, "batch_size": 100, "progress": False, "device": "cpu"}


def tiny_subset(cifar_train, per_class: int = 20):
    from unpoison.data import stratified_subset

    return stratified_subset(cifar_train, per_class=per_class, seed=0)


def surrogate_fixtures(attack_class, params: dict):
    """Module fixtures ``tiny``, ``cache``, ``attack`` and ``poisoned`` for one surrogate attack.

    ``poisoned`` is ``attack`` (``params`` with a module-wide cache folder) run on ``tiny`` at seed 0, once per module.
    Assign the result to those four names at module level, so that pytest finds them there.
    """

    @pytest.fixture(scope="module")
    def tiny(cifar_train):
        return tiny_subset(cifar_train)

    @pytest.fixture(scope="module")
    def cache(tmp_path_factory):
        return str(tmp_path_factory.mktemp(f"{attack_class.name}-cache"))

    @pytest.fixture(scope="module")
    def attack(cache):
        return attack_class(**(params | {"cache_dir": cache}))

    @pytest.fixture(scope="module")
    def poisoned(attack, tiny):
        return attack.poison(tiny, seed=0)

    return tiny, cache, attack, poisoned


def count_generations(monkeypatch, attack_class) -> list[int]:
    """A list that grows by one each time ``attack_class`` really generates (a cache hit leaves it alone)."""
    calls: list[int] = []
    orig = attack_class._generate
    monkeypatch.setattr(attack_class, "_generate", lambda self, *a: calls.append(1) or orig(self, *a))
    return calls


def interrupt_after_one_unit(attack, ds, seed: int = 0) -> None:
    """Runs ``attack`` on ``ds`` with ``stop_after = 1`` (one round or PGD batch); it must stop with a checkpoint."""
    attack.stop_after = 1
    with pytest.raises(GenerationInterrupted):
        attack.poison(ds, seed=seed)


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


# --- data-free availability attacks (AR, LSP, OPS, URP) -------------------------------------------------------------
def many_classes(ds: ImageDataset, k: int = 43) -> ImageDataset:
    """Every one of k classes populated (≈ 11–12 images each)."""
    return ImageDataset(ds.images, np.arange(len(ds)) % k, [f"c{i}" for i in range(k)])


def upscaled(ds: ImageDataset, n: int = 100) -> ImageDataset:
    return ImageDataset(ds.images[:n].repeat(2, axis=1).repeat(2, axis=2), ds.labels[:n], ds.class_names)


def grayscale(ds: ImageDataset, n: int = 200) -> ImageDataset:
    return ImageDataset(ds.images[:n].mean(axis=-1, keepdims=True).astype(np.uint8), ds.labels[:n], ds.class_names)


# The three, for ``@pytest.mark.parametrize("make", OTHER_SHAPES, ids=OTHER_SHAPE_IDS)``.
OTHER_SHAPES = [many_classes, upscaled, grayscale]
OTHER_SHAPE_IDS = ["43-classes", "64x64", "1-channel"]


def assert_l2_all_poisoned_near_budget(pds, clean, budget: float, near: float) -> None:
    """Every sample poisoned; recorded L2 norms are the measured ones, ≤ budget, and for > 90% of samples > near·budget
    (only clipping at saturated pixels shrinks a sample's norm)."""
    norms = pds.poison_norms
    assert pds.is_poison.all()
    measured = np.sqrt(((pds.images.astype(np.float64) - clean.images) ** 2).reshape(len(norms), -1).sum(1)) / 255
    assert np.allclose(norms, measured, atol=1e-5)
    assert (norms <= budget + 1e-6).all()
    assert np.mean(norms > near * budget) > 0.9
    assert pds.attack["norm"] == "l2" and pds.attack["budget"] == budget


def assert_ground_truth_kept(pds, clean) -> None:
    """Clean-label: labels, original labels, clean images and provenance indices all those of ``clean``."""
    assert np.array_equal(pds.labels, clean.labels)
    assert np.array_equal(pds.original_labels, clean.labels)
    assert np.array_equal(pds.clean_images, clean.images)
    assert np.array_equal(pds.indices, clean.indices)


def assert_rate_respected(pds, clean, rate: float) -> None:
    """round(rate·n) samples marked; the unmarked ones keep their pixels and a zero norm."""
    assert pds.is_poison.sum() == round(rate * len(clean))
    unmarked = ~pds.is_poison
    assert np.array_equal(pds.images[unmarked], clean.images[unmarked])
    assert (pds.poison_norms[unmarked] == 0).all()
