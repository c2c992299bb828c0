import numpy as np
import pytest

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.tap import TAP, TAPConfig, class_permutation
from unpoison.config import build_config
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import (TINY, assert_clean_label_ground_truth, assert_linf_within,
                                              count_generations, interrupt_after_one_unit, same_result,
                                              surrogate_fixtures)

PARAMS = TINY | {"steps": 3, "surrogate_epochs": 1, "step_size": 4 / 255}


def P(**kw):
    return PARAMS | kw


tiny, cache, attack, poisoned = surrogate_fixtures(TAP, PARAMS)


def test_registered_with_paper_preset():
    assert ATTACKS.get("tap") is TAP and TAP.summary and TAP.kind == "availability"
    assert build_config(TAPConfig, preset="paper").steps == 250 and TAPConfig().budget == pytest.approx(8 / 255)


def test_budget_and_ground_truth(poisoned, tiny):
    assert_linf_within(poisoned, tiny, 8 / 255)
    assert_clean_label_ground_truth(poisoned, tiny, len(tiny))
    assert poisoned.poison_norms.max() == pytest.approx(8 / 255, abs=1e-6)  # 3 steps of 4/255 reach the budget
    assert poisoned.artifacts["class_permutation"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]


def test_permutations():
    for seed in range(5):
        perm = class_permutation(10, "random", seed)
        assert sorted(perm.tolist()) == list(range(10)) and not (perm == np.arange(10)).any()
    assert not np.array_equal(class_permutation(10, "random", 0), class_permutation(10, "random", 1))


def test_poison_rate(tiny):
    pds = TAP(**P(steps=1, poison_rate=0.5, cache=False)).poison(tiny, seed=0)
    assert_clean_label_ground_truth(pds, tiny, 100)


def test_deterministic(poisoned, tiny):
    assert same_result(TAP(**P(cache=False)).poison(tiny, seed=0), poisoned)


def test_cache_hit_and_miss(tiny, cache, poisoned, monkeypatch):
    calls = count_generations(monkeypatch, TAP)
    assert same_result(TAP(**P(cache_dir=cache, device="auto")).poison(tiny, seed=0), poisoned)
    assert calls == []
    TAP(**P(cache_dir=cache, target_map="random", steps=1)).poison(tiny, seed=0)
    assert calls == [1]


def test_resume_equals_uninterrupted(tiny, tmp_path, poisoned):
    interrupt_after_one_unit(TAP(**P(cache_dir=str(tmp_path))), tiny)  # after 1 of 2 PGD batches
    assert list(tmp_path.rglob("surrogate.safetensors"))  # the trained surrogate is kept for the resumed run
    assert same_result(TAP(**P(cache_dir=str(tmp_path))).poison(tiny, seed=0), poisoned)


@pytest.mark.parametrize("bad", [{"steps": 0}, {"target_map": "identity"}, {"surrogate_epochs": 0}])
def test_invalid_config(bad):
    with pytest.raises(UnpoisonError):
        create_attack("tap", **bad)
