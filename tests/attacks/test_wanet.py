import numpy as np
import pytest
import torch

from unpoison.attacks import ATTACKS, BackdoorAttack
from unpoison.attacks.backdoor.wanet import WaNet, WaNetConfig, identity_grid, warp
from unpoison.data import load_dataset, save_dataset
from unpoison.errors import UnpoisonError


@pytest.fixture(scope="module")
def attack():
    return WaNet(target=2)


@pytest.fixture(scope="module")
def poisoned(attack, cifar_small):
    return attack.poison(cifar_small, seed=0)


def test_registered_with_toolbox_defaults():
    assert ATTACKS.get("wanet") is WaNet and WaNet.summary
    cfg = WaNetConfig()
    assert (cfg.poison_rate, cfg.cover_rate, cfg.k, cfg.s) == (0.05, 0.1, 4, 0.5)


def test_identity_grid_and_zero_strength(cifar_test_small):
    x = cifar_test_small.images[:20]
    assert np.abs(warp(x, identity_grid(32, 32)).astype(int) - x).max() <= 1
    assert np.abs(WaNet(s=0.0).apply_trigger(x).astype(int) - x).max() <= 1


def test_grid_construction(poisoned):
    grid = poisoned.artifacts["grid"]
    assert grid.shape == (1, 32, 32, 2) and grid.dtype == np.float32 and np.abs(grid).max() <= 1.0
    offset = (grid - identity_grid(32, 32).numpy()) * 32 / 0.5  # the upsampled noise field, before scaling
    inner = np.abs(grid).max(axis=-1) < 0.999  # where no clamping happened
    assert 0.3 < np.abs(offset[0][inner[0]]).mean() < 3.0  # noise normalised to unit mean |·| before upsampling
    # Offsets grow linearly with s (away from the clamped border).
    g1 = WaNet(s=1.0).trigger((32, 32, 3))["grid"]
    both = inner & (np.abs(g1).max(axis=-1) < 0.999)
    ident = identity_grid(32, 32).numpy()
    assert np.allclose((g1 - ident)[both], 2 * (grid - ident)[both], atol=1e-5)


def test_poisoned_samples_are_warped_and_relabelled(poisoned, attack, cifar_small):
    p = poisoned.is_poison
    assert p.sum() == 25 and (poisoned.labels[p] == 2).all()
    assert np.array_equal(poisoned.images[p], attack.apply_trigger(cifar_small.images[p]))
    assert poisoned.attack["norm"] == "l2" and (poisoned.poison_norms[p] > 0).all()


def test_cover_samples(poisoned, attack, cifar_small, tmp_path):
    cover = poisoned.is_cover
    assert cover.sum() == 50 and not (cover & poisoned.is_poison).any()
    assert poisoned.attack["cover_count"] == 50
    assert np.array_equal(poisoned.labels[cover], cifar_small.labels[cover])  # labels kept, not poison
    assert not poisoned.is_poison[cover].any()
    warped = attack.apply_trigger(cifar_small.images[cover])
    assert not np.array_equal(poisoned.images[cover], warped)  # per-image jitter on top of the grid
    assert not np.array_equal(poisoned.images[cover], cifar_small.images[cover])
    jitter = np.abs(poisoned.images[cover].astype(int) - warped).mean()
    assert 0 < jitter < np.abs(warped.astype(int) - cifar_small.images[cover]).mean() * 3
    loaded = load_dataset(save_dataset(poisoned, tmp_path / "w.npz"))
    assert np.array_equal(loaded.is_cover, poisoned.is_cover)


def test_rebuilt_grid_is_exact(poisoned, attack, cifar_test_small):
    rebuilt = BackdoorAttack.from_poisoned(poisoned)
    assert np.array_equal(rebuilt.artifacts()["grid"], poisoned.artifacts["grid"])
    assert "cover_mask" not in rebuilt.artifacts()
    x = cifar_test_small.images
    assert np.array_equal(rebuilt.apply_trigger(x), attack.apply_trigger(x))


def test_trigger_seed_changes_the_warp():
    a, b = WaNet().trigger((32, 32, 3))["grid"], WaNet(trigger_seed=1).trigger((32, 32, 3))["grid"]
    assert not torch.equal(torch.from_numpy(a), torch.from_numpy(b))


def test_bad_parameters(cifar_small):
    for bad in ({"k": 1}, {"s": -1.0}, {"cover_rate": 1.5}):
        with pytest.raises(UnpoisonError):
            WaNetConfig(**bad)
    with pytest.raises(UnpoisonError, match="cover"):
        WaNet(poison_rate=0.5, cover_rate=0.6).poison(cifar_small)
