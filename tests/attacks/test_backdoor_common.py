"""The contract every registered backdoor attack must keep, checked on 500 real CIFAR-10 images."""

import numpy as np
import pytest

from unpoison.attacks import ATTACKS, BackdoorAttack, create_attack
from unpoison.data import export_png, import_png, load_dataset, save_dataset

TARGET = 2
# Per attack: parameters (rates feasible on 50 images per class), what it does with labels, and whether all2all applies.
SPECS = {
    "badnets": dict(params={"target": TARGET, "poison_rate": 0.1}, clean_label=False, all2all=True),
    "blend": dict(params={"target": TARGET, "poison_rate": 0.1}, clean_label=False, all2all=True),
    "adaptive_blend": dict(params={"target": TARGET, "poison_rate": 0.1, "cover_rate": 0.1}, clean_label=False,
                           all2all=True),
    "wanet": dict(params={"target": TARGET, "poison_rate": 0.1, "cover_rate": 0.1}, clean_label=False, all2all=True),
    # Source-specific: 30 of the 50 source-class images (not all, so seeds pick different ones).
    "pixel": dict(params={"target": TARGET, "source": 0, "poison_rate": 0.06}, clean_label=False, all2all=True),
    # Clean-label: 30 of the 50 target-class images.
    "sig": dict(params={"target": TARGET, "poison_rate": 0.06}, clean_label=True, all2all=False),
    # Clean-label with a surrogate: a tiny one and one PGD step keep it fast; no generation cache in tests.
    "lc": dict(params={"target": TARGET, "poison_rate": 0.06, "steps": 1, "surrogate_epochs": 1, "width": 0.125,
                       "batch_size": 100, "cache": False, "progress": False, "device": "cpu"},
               clean_label=True, all2all=False),
}
BACKDOORS = [n for n in ATTACKS.names() if ATTACKS.get(n).kind == "backdoor"]


def _spec(name):
    if name not in SPECS:
        pytest.skip(f"no test parameters for backdoor attack {name!r}; add it to SPECS")
    return SPECS[name]


def _cover(pds):
    return pds.is_cover if pds.is_cover is not None else np.zeros(len(pds), bool)


_CACHE: dict = {}


@pytest.fixture(params=BACKDOORS)
def case(request, cifar_small):
    """(name, spec, attack, poisoned) with seed 0; poisoned once per attack for the whole module."""
    name = request.param
    spec = _spec(name)
    if name not in _CACHE:
        atk = create_attack(name, **spec["params"])
        _CACHE[name] = (atk, atk.poison(cifar_small, seed=0))
    return name, spec, *_CACHE[name]


def test_registered_as_backdoor(case):
    name, _, atk, _ = case
    assert isinstance(atk, BackdoorAttack) and type(atk).summary and type(atk).name == name


def test_poison_count_and_labels(case, cifar_small):
    name, spec, atk, pds = case
    p = pds.is_poison
    assert p.sum() == round(spec["params"]["poison_rate"] * len(cifar_small))
    assert np.array_equal(pds.original_labels, cifar_small.labels)
    assert np.array_equal(pds.clean_images, cifar_small.images)
    if spec["clean_label"]:
        assert np.array_equal(pds.labels, cifar_small.labels)
        assert (cifar_small.labels[p] == TARGET).all()
    else:
        assert (pds.labels[p] == TARGET).all() and (cifar_small.labels[p] != TARGET).all()
        assert np.array_equal(pds.labels[~p], cifar_small.labels[~p])
    source = spec["params"].get("source", -1)
    if source >= 0:
        assert (cifar_small.labels[p] == source).all()


def test_poisoned_images_changed_and_the_rest_untouched(case, cifar_small):
    _, _, _, pds = case
    p, cover = pds.is_poison, _cover(pds)
    assert not (p & cover).any()
    rest = ~p & ~cover
    assert np.array_equal(pds.images[rest], cifar_small.images[rest])
    assert np.array_equal(pds.labels[cover], cifar_small.labels[cover])  # covers keep their labels
    changed = (pds.images != cifar_small.images).reshape(len(pds), -1).any(axis=1)
    assert changed[p].mean() > 0.9  # a trigger may leave an odd image unchanged (e.g. a pixel of the same colour)
    assert pds.poison_norms is not None and (pds.poison_norms[rest] == 0).all() and pds.attack["norm"]


def test_all2all(case, cifar_small):
    name, spec, _, _ = case
    if not spec["all2all"]:
        pytest.skip(f"{name} has no all2all mode")
    pds = create_attack(name, **{**spec["params"], "label_mode": "all2all"}).poison(cifar_small, seed=0)
    p = pds.is_poison
    assert p.sum() == round(spec["params"]["poison_rate"] * len(cifar_small))
    assert np.array_equal(pds.labels[p], (cifar_small.labels[p] + 1) % 10)


def _same_trigger(a, b, images):
    assert np.array_equal(a.apply_trigger(images), b.apply_trigger(images))


def test_from_poisoned_round_trips(case, cifar_test_small, tmp_path):
    _, _, atk, pds = case
    imgs = cifar_test_small.images
    _same_trigger(atk, BackdoorAttack.from_poisoned(pds), imgs)
    loaded = load_dataset(save_dataset(pds, tmp_path / "p.npz"))
    _same_trigger(atk, BackdoorAttack.from_poisoned(loaded), imgs)
    assert np.array_equal(_cover(loaded), _cover(pds))
    export_png(pds, tmp_path / "png")
    from_png = import_png(tmp_path / "png")
    assert np.array_equal(from_png.images, pds.images) and np.array_equal(from_png.is_poison, pds.is_poison)
    assert np.array_equal(_cover(from_png), _cover(pds))
    _same_trigger(atk, BackdoorAttack.from_poisoned(from_png), imgs)


def test_poison_test(case, cifar_test_small):
    _, spec, atk, _ = case
    test = atk.poison_test(cifar_test_small)
    assert (test.labels == TARGET).all() and (test.original_labels != TARGET).all()
    source = spec["params"].get("source", -1)
    expected = cifar_test_small.labels == source if source >= 0 else cifar_test_small.labels != TARGET
    assert len(test) == expected.sum() and (test.original_labels == cifar_test_small.labels[expected]).all()
    assert np.array_equal(test.images, atk.apply_trigger(cifar_test_small.images[expected]))


def test_deterministic(case, cifar_small):
    name, spec, _, pds = case
    again = create_attack(name, **spec["params"]).poison(cifar_small, seed=0)
    assert np.array_equal(again.is_poison, pds.is_poison) and np.array_equal(again.images, pds.images)
    assert np.array_equal(again.labels, pds.labels) and np.array_equal(_cover(again), _cover(pds))
    other = create_attack(name, **spec["params"]).poison(cifar_small, seed=1)
    assert not np.array_equal(other.is_poison, pds.is_poison)


def test_rate_zero_is_a_clean_baseline(case, cifar_small, tmp_path):
    name, spec, atk, _ = case
    params = {**spec["params"], "poison_rate": 0.0}
    if "cover_rate" in params:
        params["cover_rate"] = 0.0
    pds = create_attack(name, **params).poison(cifar_small, seed=0)
    assert not pds.is_poison.any() and not _cover(pds).any()
    assert np.array_equal(pds.images, cifar_small.images) and np.array_equal(pds.labels, cifar_small.labels)
    rebuilt = BackdoorAttack.from_poisoned(load_dataset(save_dataset(pds, tmp_path / "z.npz")))
    _same_trigger(atk, rebuilt, cifar_small.images[:4])  # the trigger is still recorded
