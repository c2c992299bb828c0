import numpy as np
import pytest

from unpoison.attacks import ATTACKS, BackdoorAttack
from unpoison.attacks.backdoor.sig import SIG, SIGConfig
from unpoison.errors import UnpoisonError


@pytest.fixture(scope="module")
def poisoned(cifar_small):
    return SIG(target=4).poison(cifar_small, seed=0)


def test_registered_with_backdoorbench_defaults():
    assert ATTACKS.get("sig") is SIG and SIG.summary
    cfg = SIGConfig()
    assert (cfg.delta, cfg.f, cfg.poison_rate, cfg.target, cfg.target_fraction) == (40.0, 6.0, 0.1, 0, None)


def test_clean_label(poisoned, cifar_small):
    p = poisoned.is_poison
    assert p.sum() == 50 and (cifar_small.labels[p] == 4).all()  # 0.1 · 500 = the whole target class here
    assert np.array_equal(poisoned.labels, cifar_small.labels)
    assert np.array_equal(poisoned.images[~p], cifar_small.images[~p])


def test_signal_matches_the_formula(poisoned, cifar_small):
    p = poisoned.is_poison
    x = cifar_small.images[p].astype(np.float64)
    j = np.arange(32)
    v = 40.0 * np.sin(2 * np.pi * j * 6 / 32)
    diff = poisoned.images[p].astype(np.float64) - x
    unclipped = (x + v[None, None, :, None] >= 0) & (x + v[None, None, :, None] <= 255)
    assert unclipped.mean() > 0.5
    assert np.abs(diff - v[None, None, :, None])[unclipped].max() <= 1.0
    assert np.allclose(poisoned.artifacts["signal"], v, atol=1e-4)
    # The signal varies along the width only: the same on every row.
    i = np.flatnonzero(p)[0]
    clean_mid = (cifar_small.images[i].astype(int) > 45) & (cifar_small.images[i].astype(int) < 210)
    d = poisoned.images[i].astype(int) - cifar_small.images[i]
    assert np.abs(d[clean_mid] - np.broadcast_to(v[None, :, None], d.shape)[clean_mid]).max() <= 1
    assert poisoned.attack["norm"] == "linf" and (poisoned.poison_norms[p] <= 40.5 / 255).all()


def test_target_fraction(cifar_small):
    pds = SIG(target=1, target_fraction=0.5).poison(cifar_small, seed=0)
    assert pds.is_poison.sum() == 25 and (cifar_small.labels[pds.is_poison] == 1).all()


def test_poison_test(poisoned, cifar_test_small):
    test = BackdoorAttack.from_poisoned(poisoned).poison_test(cifar_test_small)
    assert len(test) == 450 and (test.original_labels != 4).all() and (test.labels == 4).all()


def test_bad_parameters(cifar_small):
    for bad in ({"label_mode": "all2all"}, {"delta": 0.0}, {"f": -1.0}, {"target_fraction": 2.0}):
        with pytest.raises(UnpoisonError):
            SIGConfig(**bad)
    with pytest.raises(UnpoisonError, match="eligible"):
        SIG(poison_rate=0.2).poison(cifar_small)  # more than the target class holds
