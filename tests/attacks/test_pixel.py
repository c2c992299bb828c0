import numpy as np
import pytest

from unpoison.attacks import ATTACKS, BackdoorAttack
from unpoison.attacks.backdoor.pixel import Pixel, PixelConfig
from unpoison.errors import UnpoisonError


def test_registered_with_reference_defaults():
    assert ATTACKS.get("pixel") is Pixel and Pixel.summary
    cfg = PixelConfig()
    assert (cfg.source, cfg.target, cfg.num_pixels, cfg.poison_rate, cfg.source_fraction) == (0, 2, 1, 0.01, None)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_changes_exactly_k_pixels_of_source_images(cifar_small, k):
    atk = Pixel(num_pixels=k, source=3, target=5, poison_rate=0.06)
    pds = atk.poison(cifar_small, seed=0)
    p = pds.is_poison
    assert p.sum() == 30 and (cifar_small.labels[p] == 3).all() and (pds.labels[p] == 5).all()
    changed = (pds.images != cifar_small.images).any(axis=-1)  # (N, H, W)
    assert (changed[p].sum(axis=(1, 2)) == k).all() and not changed[~p].any()
    assert (pds.poison_norms[p] == k).all() and pds.attack["norm"] == "l0" and pds.attack["budget"] == k
    pos, color = pds.artifacts["positions"], pds.artifacts["color"]
    assert pos.shape == (k, 2) and color.shape == (3,)
    assert (pds.images[p][:, pos[:, 0], pos[:, 1]] == color).all()
    assert np.array_equal(np.argwhere(changed[np.flatnonzero(p)[0]]), pos[np.lexsort((pos[:, 1], pos[:, 0]))])


def test_trigger_shapes_and_ranges_match_the_reference():
    offsets = {1: {(0, 0)}, 3: {(0, 0), (1, 0), (0, 1)}, 5: {(0, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)}}
    anchors = {1: (0, 30), 3: (0, 29), 5: (1, 29)}  # randint(31), randint(0, 30), randint(1, 30) on 32 px
    for k in (1, 3, 5):
        seen = []
        for seed in range(60):
            t = Pixel(num_pixels=k, trigger_seed=seed).trigger((32, 32, 3))
            pos, color = t["positions"], t["color"]
            assert {tuple(o) for o in pos - pos[0]} == offsets[k]
            lo, hi = anchors[k]
            assert (lo <= pos[0]).all() and (pos[0] <= hi).all() and color.max() <= 254
            seen.append(tuple(pos[0]))
        assert len(set(seen)) > 30


def test_source_fraction_overrides_poison_rate(cifar_small):
    pds = Pixel(source=1, target=3, source_fraction=0.2, poison_rate=0.5).poison(cifar_small, seed=0)
    assert pds.is_poison.sum() == 10 and (cifar_small.labels[pds.is_poison] == 1).all()
    assert Pixel(source_fraction=1.0).poison(cifar_small, seed=0).is_poison.sum() == 50


def test_default_rate_is_a_tenth_of_the_source_class(cifar_small):
    pds = Pixel().poison(cifar_small, seed=0)  # 0.01 · 500 = 5 = 0.1 · 50 source images
    assert pds.is_poison.sum() == 5 and (cifar_small.labels[pds.is_poison] == 0).all()


def test_poison_test_stamps_only_the_source_class(cifar_small, cifar_test_small):
    atk = Pixel(num_pixels=3)
    pds = atk.poison(cifar_small, seed=0)
    test = BackdoorAttack.from_poisoned(pds).poison_test(cifar_test_small)
    assert len(test) == 50 and (test.original_labels == 0).all() and (test.labels == 2).all()
    assert np.array_equal(test.images, atk.apply_trigger(cifar_test_small.images[cifar_test_small.labels == 0]))


def test_trigger_fixed_by_trigger_seed_not_poison_seed(cifar_small):
    a = Pixel().poison(cifar_small, seed=0).artifacts
    b = Pixel().poison(cifar_small, seed=9).artifacts
    c = Pixel(trigger_seed=4).poison(cifar_small, seed=0).artifacts
    assert np.array_equal(a["positions"], b["positions"]) and np.array_equal(a["color"], b["color"])
    assert not (np.array_equal(a["positions"], c["positions"]) and np.array_equal(a["color"], c["color"]))


def test_bad_parameters(cifar_small):
    for bad in ({"source": -1}, {"source": 2, "target": 2}, {"num_pixels": 2}, {"source_fraction": 1.5}):
        with pytest.raises(UnpoisonError):
            PixelConfig(**bad)
    with pytest.raises(UnpoisonError, match="eligible"):
        Pixel(poison_rate=0.2).poison(cifar_small)  # 100 asked, 50 source images
    with pytest.raises(UnpoisonError, match="out of range"):
        Pixel(source=12).poison(cifar_small)
