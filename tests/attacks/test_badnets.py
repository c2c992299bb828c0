import numpy as np
import pytest

from unpoison.attacks import ATTACKS, BackdoorAttack, create_attack
from unpoison.attacks.backdoor.badnets import BadNets, BadNetsConfig
from unpoison.data import ImageDataset, export_png, import_png, load_dataset, save_dataset, stratified_subset
from unpoison.errors import UnpoisonError


@pytest.fixture(scope="module")
def attack():
    return create_attack("badnets", target=2, poison_rate=0.1)


@pytest.fixture(scope="module")
def poisoned(attack, cifar_small):
    return attack.poison(cifar_small, seed=0)


def test_registered_with_summary():
    assert ATTACKS.get("badnets") is BadNets and BadNets.summary and BadNets.kind == "backdoor"


def test_all2one_poisoning(poisoned, cifar_small):
    p = poisoned.is_poison
    assert p.sum() == 50
    assert (cifar_small.labels[p] != 2).all()
    assert (poisoned.labels[p] == 2).all()
    assert np.array_equal(poisoned.labels[~p], cifar_small.labels[~p])
    assert np.array_equal(poisoned.original_labels, cifar_small.labels)
    assert np.array_equal(poisoned.images[~p], cifar_small.images[~p])
    assert poisoned.attack["norm"] == "l0" and poisoned.attack["budget"] == 9
    assert (poisoned.poison_norms[p] <= 9).all() and (poisoned.poison_norms[~p] == 0).all()


def test_patch_pixels_and_rest_unchanged(poisoned, cifar_small):
    p = poisoned.is_poison
    assert (poisoned.images[p, -3:, -3:] == 255).all()
    rest = np.ones((32, 32), bool)
    rest[-3:, -3:] = False
    assert np.array_equal(poisoned.images[p][:, rest], cifar_small.images[p][:, rest])
    assert np.array_equal(poisoned.artifacts["pattern"], np.full((3, 3, 3), 255, np.uint8))
    assert poisoned.artifacts["mask"].sum() == 9 and poisoned.artifacts["mask"][-3:, -3:].all()


@pytest.mark.parametrize("location,rows,cols", [("top_left", slice(0, 4), slice(0, 4)),
                                                ("top_right", slice(0, 4), slice(28, 32)),
                                                ("bottom_left", slice(28, 32), slice(0, 4))])
def test_checkerboard_at_each_corner(cifar_small, location, rows, cols):
    atk = BadNets(pattern="checkerboard", patch_size=4, location=location)
    out = atk.apply_trigger(cifar_small.images[:5])
    board = (np.add.outer(np.arange(4), np.arange(4)) % 2 == 0) * 255
    assert (out[:, rows, cols] == board[None, :, :, None]).all()
    outside = np.ones((32, 32), bool)
    outside[rows, cols] = False
    assert np.array_equal(out[:, outside], cifar_small.images[:5][:, outside])


def test_all2all(cifar_small):
    pds = BadNets(label_mode="all2all", poison_rate=0.2).poison(cifar_small, seed=1)
    p = pds.is_poison
    assert p.sum() == 100
    assert np.array_equal(pds.labels[p], (cifar_small.labels[p] + 1) % 10)


def test_source_specific(cifar_small, cifar_test_small):
    atk = BadNets(target=0, source=3, poison_rate=0.04)
    pds = atk.poison(cifar_small, seed=0)
    assert pds.is_poison.sum() == 20 and (cifar_small.labels[pds.is_poison] == 3).all()
    test = atk.poison_test(cifar_test_small)
    assert (test.original_labels == 3).all() and len(test) == 50
    with pytest.raises(UnpoisonError, match="eligible"):
        BadNets(source=3, poison_rate=0.2).poison(cifar_small)


def test_poison_test_excludes_target(attack, poisoned, cifar_test_small):
    test = attack.poison_test(cifar_test_small)
    assert len(test) == 450 and (test.original_labels != 2).all() and (test.labels == 2).all()
    assert np.array_equal(test.images, attack.apply_trigger(cifar_test_small.images[cifar_test_small.labels != 2]))


def _same_trigger(a, b, images):
    assert np.array_equal(a.apply_trigger(images), b.apply_trigger(images))


def test_from_poisoned_round_trips(attack, poisoned, cifar_test_small, tmp_path):
    imgs = cifar_test_small.images
    rebuilt = BackdoorAttack.from_poisoned(poisoned)
    _same_trigger(attack, rebuilt, imgs)
    loaded = load_dataset(save_dataset(poisoned, tmp_path / "p.npz"))
    _same_trigger(attack, BackdoorAttack.from_poisoned(loaded), imgs)
    export_png(poisoned, tmp_path / "png")
    from_png = import_png(tmp_path / "png")
    assert np.array_equal(from_png.images, poisoned.images)
    _same_trigger(attack, BackdoorAttack.from_poisoned(from_png), imgs)


def test_from_poisoned_all2all_and_checkerboard(cifar_small, cifar_test_small, tmp_path):
    atk = BadNets(label_mode="all2all", pattern="checkerboard", location="top_left", patch_size=5)
    pds = load_dataset(save_dataset(atk.poison(cifar_small, seed=0), tmp_path / "a.npz"))
    rebuilt = BackdoorAttack.from_poisoned(pds)
    _same_trigger(atk, rebuilt, cifar_test_small.images)
    a, b = atk.poison_test(cifar_test_small), rebuilt.poison_test(cifar_test_small)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, (a.original_labels + 1) % 10)


def test_rate_zero_is_a_clean_baseline(cifar_small, tmp_path):
    pds = BadNets(poison_rate=0.0).poison(cifar_small, seed=0)
    assert not pds.is_poison.any()
    assert np.array_equal(pds.images, cifar_small.images) and np.array_equal(pds.labels, cifar_small.labels)
    rebuilt = BackdoorAttack.from_poisoned(load_dataset(save_dataset(pds, tmp_path / "z.npz")))
    assert (rebuilt.apply_trigger(cifar_small.images[:2])[:, -3:, -3:] == 255).all()


def test_deterministic(attack, poisoned, cifar_small):
    again = create_attack("badnets", target=2, poison_rate=0.1).poison(cifar_small, seed=0)
    assert np.array_equal(again.is_poison, poisoned.is_poison) and np.array_equal(again.images, poisoned.images)
    other = create_attack("badnets", target=2, poison_rate=0.1).poison(cifar_small, seed=1)
    assert not np.array_equal(other.is_poison, poisoned.is_poison)


def test_bad_parameters(cifar_small):
    with pytest.raises(UnpoisonError, match="out of range"):
        BadNets(target=10).poison(cifar_small)
    with pytest.raises(UnpoisonError, match="does not fit"):
        BadNets(patch_size=40).poison(cifar_small)
    with pytest.raises(UnpoisonError, match="eligible"):
        BadNets(poison_rate=0.95).poison(cifar_small)  # only 450 of 500 are not of the target class
    for bad in ({"poison_rate": -0.1}, {"source": 0, "target": 0}, {"label_mode": "some"}, {"patch_size": 0}):
        with pytest.raises(UnpoisonError):
            BadNetsConfig(**bad)


def test_single_channel(cifar_small):
    sub = stratified_subset(cifar_small, per_class=5, seed=0)
    gray = ImageDataset(sub.images[..., :1], sub.labels, sub.class_names)
    pds = BadNets(poison_rate=0.2).poison(gray, seed=0)
    assert pds.artifacts["pattern"].shape == (3, 3, 1)
    assert (pds.images[pds.is_poison, -3:, -3:, 0] == 255).all()
