import numpy as np
import pytest

from unpoison.attacks import ATTACKS, BackdoorAttack
from unpoison.attacks.backdoor.adaptive_blend import AdaptiveBlend, AdaptiveBlendConfig, piece_map
from unpoison.errors import UnpoisonError


@pytest.fixture(scope="module")
def attack():
    return AdaptiveBlend(target=2, poison_rate=0.1, cover_rate=0.1)


@pytest.fixture(scope="module")
def poisoned(attack, cifar_small):
    return attack.poison(cifar_small, seed=0)


def _pieces_touched(pds, clean, rows):
    """(n, 16) bool: which of the 4×4 blocks changed in each of the given rows."""
    changed = (pds.images[rows] != clean[rows]).any(axis=-1)  # (n, H, W)
    pm = piece_map(32, 32, 16)
    return np.stack([changed[:, pm == k].any(axis=1) for k in range(16)], axis=1)


def test_registered_with_toolbox_defaults():
    assert ATTACKS.get("adaptive_blend") is AdaptiveBlend and AdaptiveBlend.summary
    cfg = AdaptiveBlendConfig()
    assert (cfg.poison_rate, cfg.cover_rate, cfg.alpha, cfg.test_alpha, cfg.pieces, cfg.pieces_kept) == \
        (0.003, 0.003, 0.15, 0.2, 16, 0.5)


def test_piece_map():
    pm = piece_map(32, 32, 16)
    assert np.array_equal(np.bincount(pm.ravel()), np.full(16, 64))
    assert pm[0, 0] == 0 and pm[0, 16] == 2 and pm[8, 0] == 4
    assert np.bincount(piece_map(30, 30, 16).ravel()).min() >= 49  # uneven sizes still cover every pixel


def test_training_triggers_are_partial(poisoned, attack, cifar_small):
    p, cover = poisoned.is_poison, poisoned.is_cover
    assert p.sum() == 50 and cover.sum() == 50 and not (p & cover).any()
    for rows in (p, cover):
        touched = _pieces_touched(poisoned, cifar_small.images, rows)
        assert (touched.sum(axis=1) <= 8).all() and (touched.sum(axis=1) >= 6).all()  # 8 kept (a block may round away)
        assert len({tuple(t) for t in touched}) > 10  # subsets differ between samples
    full = attack.apply_trigger(cifar_small.images[p])
    n_train = (poisoned.images[p] != cifar_small.images[p]).any(axis=-1).sum(axis=(1, 2))
    n_test = (full != cifar_small.images[p]).any(axis=-1).sum(axis=(1, 2))
    assert (n_train < n_test).all()


def test_kept_pieces_follow_the_blend_formula(poisoned, cifar_small):
    p = poisoned.is_poison
    pat = poisoned.artifacts["pattern"].astype(np.float64)
    x = cifar_small.images[p].astype(np.float64)
    expected = x + 0.15 * (pat - x)
    changed = (poisoned.images[p] != cifar_small.images[p])
    assert np.abs(poisoned.images[p][changed] - expected[changed]).max() <= 1.0


def test_labels_of_poison_and_cover(poisoned, cifar_small):
    p, cover = poisoned.is_poison, poisoned.is_cover
    assert (poisoned.labels[p] == 2).all()
    assert np.array_equal(poisoned.labels[cover], cifar_small.labels[cover])
    assert poisoned.attack["cover_count"] == 50 and poisoned.attack["budget"] == 0.15
    assert (poisoned.poison_norms[cover] > 0).all()  # covers are perturbed, and their norm is recorded


def test_test_trigger_is_full_blend_with_test_alpha(poisoned, attack, cifar_test_small):
    x = cifar_test_small.images[:10].astype(np.float64)
    pat = poisoned.artifacts["pattern"].astype(np.float64)
    out = attack.apply_trigger(cifar_test_small.images[:10])
    assert np.abs(out - (x + 0.2 * (pat - x))).max() <= 1.0
    assert np.array_equal(BackdoorAttack.from_poisoned(poisoned).apply_trigger(cifar_test_small.images[:10]), out)


def test_default_rates_round(cifar_small):
    pds = AdaptiveBlend().poison(cifar_small, seed=0)  # 0.003 · 500 = 1.5 → 2
    assert pds.is_poison.sum() == 2 and pds.is_cover.sum() == 2


def test_bad_parameters(cifar_small):
    for bad in ({"pieces": 8}, {"pieces_kept": 0.0}, {"pieces_kept": 0.01}, {"cover_rate": -0.1}):
        with pytest.raises(UnpoisonError):
            AdaptiveBlendConfig(**bad)
    with pytest.raises(UnpoisonError, match="cover"):
        AdaptiveBlend(poison_rate=0.5, cover_rate=0.6).poison(cifar_small)
    AdaptiveBlend(pieces=4, poison_rate=0.02).poison(cifar_small)  # Pick-your-Poison's 4 pieces
