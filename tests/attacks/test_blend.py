import numpy as np
import pytest

from unpoison.attacks import ATTACKS, BackdoorAttack, create_attack
from unpoison.attacks.backdoor.blend import Blend, BlendConfig
from unpoison.data import ImageDataset, stratified_subset
from unpoison.errors import UnpoisonError


@pytest.fixture(scope="module")
def poisoned(cifar_small):
    return create_attack("blend", target=2).poison(cifar_small, seed=0)


def test_registered_with_defaults():
    assert ATTACKS.get("blend") is Blend and Blend.summary
    cfg = BlendConfig()
    assert (cfg.alpha, cfg.poison_rate, cfg.test_alpha, cfg.target, cfg.label_mode) == (0.2, 0.1, None, 0, "all2one")


def test_blend_formula(poisoned, cifar_small):
    p = poisoned.is_poison
    pattern = poisoned.artifacts["pattern"].astype(np.float64)
    assert pattern.shape == (32, 32, 3) and poisoned.artifacts["pattern"].dtype == np.uint8
    expected = 0.8 * cifar_small.images[p].astype(np.float64) + 0.2 * pattern
    assert np.abs(poisoned.images[p] - expected).max() <= 1.0
    # One pixel by hand.
    i = np.flatnonzero(p)[0]
    x, q = float(cifar_small.images[i, 5, 7, 1]), float(pattern[5, 7, 1])
    assert abs(float(poisoned.images[i, 5, 7, 1]) - ((1 - 0.2) * x + 0.2 * q)) <= 1.0


def test_norms_linf_within_alpha(poisoned):
    p = poisoned.is_poison
    assert poisoned.attack["norm"] == "linf" and poisoned.attack["budget"] == 0.2
    assert (poisoned.poison_norms[p] <= 0.2 + 0.5 / 255 + 1e-6).all() and (poisoned.poison_norms[p] > 0.1).all()


def test_test_alpha(cifar_small, cifar_test_small):
    atk = Blend(alpha=0.1, test_alpha=0.3, poison_rate=0.02)
    pds = atk.poison(cifar_small, seed=0)
    pat = pds.artifacts["pattern"].astype(np.float64)
    p = pds.is_poison
    assert np.abs(pds.images[p] - (0.9 * cifar_small.images[p] + 0.1 * pat)).max() <= 1.0
    x = cifar_test_small.images[:8]
    assert np.abs(atk.apply_trigger(x) - (0.7 * x + 0.3 * pat)).max() <= 1.0
    assert np.array_equal(BackdoorAttack.from_poisoned(pds).apply_trigger(x), atk.apply_trigger(x))


def test_pattern_is_fixed_by_trigger_seed(cifar_small):
    a = Blend().poison(cifar_small, seed=0).artifacts["pattern"]
    b = Blend().poison(cifar_small, seed=5).artifacts["pattern"]
    c = Blend(trigger_seed=1).poison(cifar_small, seed=0).artifacts["pattern"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(Blend().apply_trigger(cifar_small.images[:3]), Blend().apply_trigger(cifar_small.images[:3]))


def test_restored_trigger_rejects_other_sizes(poisoned):
    atk = BackdoorAttack.from_poisoned(poisoned)
    with pytest.raises(UnpoisonError, match="made for"):
        atk.apply_trigger(np.zeros((2, 16, 16, 3), np.uint8))
    with pytest.raises(UnpoisonError, match="uint8"):
        atk.apply_trigger(np.zeros((2, 32, 32, 3), np.float32))


def test_single_channel(cifar_small):
    sub = stratified_subset(cifar_small, per_class=5, seed=0)
    gray = ImageDataset(sub.images[..., :1], sub.labels, sub.class_names)
    pds = Blend(poison_rate=0.2).poison(gray, seed=0)
    assert pds.artifacts["pattern"].shape == (32, 32, 1) and pds.is_poison.sum() == 10


def test_bad_parameters(cifar_small):
    for bad in ({"alpha": 0.0}, {"alpha": 1.5}, {"test_alpha": 0.0}, {"poison_rate": 2.0}, {"source": 0, "target": 0}):
        with pytest.raises(UnpoisonError):
            BlendConfig(**bad)
    with pytest.raises(UnpoisonError, match="out of range"):
        Blend(target=10).poison(cifar_small)
    with pytest.raises(UnpoisonError, match="eligible"):
        Blend(poison_rate=0.95).poison(cifar_small)
