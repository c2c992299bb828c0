import numpy as np
import pytest

from unpoison.attacks import ATTACKS, BackdoorAttack, create_attack
from unpoison.attacks.backdoor.lc import LabelConsistent, LCConfig, corner_sign
from unpoison.data import load_dataset, save_dataset
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import (TINY, count_generations, interrupt_after_one_unit, same_result,
                                              surrogate_fixtures)

PARAMS = TINY | {"steps": 2, "surrogate_epochs": 1, "batch_size": 10, "target": 3}


def P(**kw):
    return PARAMS | kw


tiny, cache, attack, poisoned = surrogate_fixtures(LabelConsistent, PARAMS)


def test_registered():
    assert ATTACKS.get("lc") is LabelConsistent and LabelConsistent.summary
    assert LCConfig().budget == pytest.approx(16 / 255) and LCConfig().target_fraction is None


def test_clean_label_target_class_only(poisoned, tiny):
    p = poisoned.is_poison
    assert p.sum() == 20 and (tiny.labels[p] == 3).all()  # poison_rate 0.1 of 200: the whole target class
    assert np.array_equal(poisoned.labels, tiny.labels) and np.array_equal(poisoned.original_labels, tiny.labels)
    assert np.array_equal(poisoned.images[~p], tiny.images[~p]) and (poisoned.poison_norms[~p] == 0).all()


def test_adversarial_part_within_budget(poisoned, tiny):
    sign = poisoned.artifacts["sign"]
    outside = sign == 0
    d = np.abs(poisoned.images.astype(np.int16) - tiny.images)[poisoned.is_poison][:, outside]
    assert 3 <= d.max() <= 16  # 2 steps of 2/255 (≤ 4 levels after rounding): moved, and ≤ 16/255
    assert poisoned.attack["adv_linf_max"] <= 16 / 255 + 1e-9
    assert (poisoned.poison_norms[poisoned.is_poison] <= 1.0).all()


def test_trigger_on_train_equals_trigger_on_test(attack, poisoned, cifar_test_small, tmp_path):
    mask = poisoned.artifacts["sign"] != 0
    assert mask.sum() == 36  # four 3×3 corners
    train_trig = poisoned.images[poisoned.is_poison][:, mask]
    path = tmp_path / "lc.npz"
    save_dataset(poisoned, path)
    rebuilt = BackdoorAttack.from_poisoned(load_dataset(path))
    test = rebuilt.poison_test(cifar_test_small)
    assert len(test) == 450 and (test.labels == 3).all() and (test.original_labels != 3).all()
    test_trig = test.images[:, mask]
    assert (train_trig == train_trig[:1]).all() and (test_trig == train_trig[:1]).all()  # the very same pixels
    assert np.array_equal(rebuilt.apply_trigger(cifar_test_small.images), attack.apply_trigger(cifar_test_small.images))
    # Outside the trigger the test images are untouched.
    assert np.array_equal(test.images[:, ~mask], test.clean_images[:, ~mask])


def test_flip_invariant_four_corner_trigger():
    sign = corner_sign((32, 32, 3), 3, "four")
    assert np.array_equal(sign, sign[:, ::-1]) and set(np.unique(sign)) == {-1, 0, 1}
    one = corner_sign((32, 32, 3), 3, "one")
    assert (one != 0).sum() == 9 and (one[-3:, -3:] != 0).all()


def test_reduced_amplitude(tiny):
    pds = LabelConsistent(**P(steps=0, amplitude=16 / 255, cache=False)).poison(tiny, seed=0)
    assert (pds.poison_norms[pds.is_poison] <= 16 / 255 + 1e-6).all()
    test = BackdoorAttack.from_poisoned(pds).apply_trigger(tiny.images[:5])
    assert set(np.unique(test[:, pds.artifacts["sign"] != 0])) <= {0, 255}  # full amplitude at test time


def test_target_fraction_and_determinism(tiny, poisoned):
    half = LabelConsistent(**P(target_fraction=0.5, steps=1, cache=False)).poison(tiny, seed=0)
    assert half.is_poison.sum() == 10 and (tiny.labels[half.is_poison] == 3).all()
    assert same_result(LabelConsistent(**P(cache=False)).poison(tiny, seed=0), poisoned)


def test_cache_hit_miss_and_resume(tiny, cache, poisoned, tmp_path, monkeypatch):
    interrupt_after_one_unit(LabelConsistent(**P(cache_dir=str(tmp_path))), tiny)  # after 1 of 2 PGD batches
    assert same_result(LabelConsistent(**P(cache_dir=str(tmp_path))).poison(tiny, seed=0), poisoned)
    calls = count_generations(monkeypatch, LabelConsistent)
    hit = LabelConsistent(**P(cache_dir=cache))
    assert same_result(hit.poison(tiny, seed=0), poisoned) and calls == []
    assert np.array_equal(hit.apply_trigger(tiny.images[:3]), LabelConsistent(**PARAMS).apply_trigger(tiny.images[:3]))
    LabelConsistent(**P(cache_dir=cache, patch_size=2, steps=1)).poison(tiny, seed=0)
    assert calls == [1]


@pytest.mark.parametrize("bad", [{"label_mode": "all2all"}, {"amplitude": 0.0}, {"budget": 0.0},
                                 {"target_fraction": 1.5}])
def test_invalid_config(bad):
    with pytest.raises(UnpoisonError):
        create_attack("lc", **bad)
