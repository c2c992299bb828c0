import pytest

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.rem import REM, REMConfig
from unpoison.config import build_config
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import (TINY, assert_clean_label_ground_truth, assert_linf_within,
                                              count_generations, interrupt_after_one_unit, same_result,
                                              surrogate_fixtures)

PARAMS = TINY | {"pgd_steps": 1, "adv_steps": 1, "eot_samples": 1, "train_steps": 1, "rounds": 2}


def P(**kw):
    return PARAMS | kw


tiny, cache, attack, poisoned = surrogate_fixtures(REM, PARAMS)


def test_registered_with_paper_preset():
    assert ATTACKS.get("rem") is REM and REM.summary and REM.kind == "availability"
    cpu, paper = REMConfig(), build_config(REMConfig, preset="paper")
    assert cpu.adv_radius == pytest.approx(4 / 255) and paper.adv_radius == pytest.approx(4 / 255)
    assert (paper.eot_samples, paper.adv_steps, paper.pgd_steps) == (5, 10, 10)


def test_budget_and_ground_truth(poisoned, tiny):
    assert_linf_within(poisoned, tiny, 8 / 255)
    assert_clean_label_ground_truth(poisoned, tiny, len(tiny))
    assert len(poisoned.attack["generation"]["history"]) == 2  # fixed rounds, no accuracy stop


def test_poison_rate(tiny):
    pds = REM(**P(rounds=1, poison_rate=0.25, cache=False)).poison(tiny, seed=0)
    assert_clean_label_ground_truth(pds, tiny, 50)


def test_deterministic(poisoned, tiny):
    assert same_result(REM(**P(cache=False)).poison(tiny, seed=0), poisoned)


def test_cache_hit_and_miss(tiny, cache, poisoned, monkeypatch):
    calls = count_generations(monkeypatch, REM)
    assert same_result(REM(**P(cache_dir=cache)).poison(tiny, seed=0), poisoned) and calls == []
    REM(**P(cache_dir=cache, adv_radius=2 / 255, rounds=1)).poison(tiny, seed=0)
    assert calls == [1]


def test_resume_equals_uninterrupted(tiny, tmp_path, poisoned):
    interrupt_after_one_unit(REM(**P(cache_dir=str(tmp_path))), tiny)
    assert same_result(REM(**P(cache_dir=str(tmp_path))).poison(tiny, seed=0), poisoned)


def test_no_defensive_perturbation_is_allowed(tiny):
    pds = REM(**P(rounds=1, adv_steps=0, cache=False)).poison(tiny, seed=0)
    assert (pds.poison_norms <= 8 / 255 + 1e-6).all()


@pytest.mark.parametrize("bad", [{"adv_radius": -0.1}, {"eot_samples": 0}, {"rounds": 0}, {"budget": 2.0}])
def test_invalid_config(bad):
    with pytest.raises(UnpoisonError):
        create_attack("rem", **bad)
