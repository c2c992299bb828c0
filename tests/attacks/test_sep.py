import numpy as np
import pytest
import torch

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.sep import SEP, SEPConfig, CheckpointEnsemble, snapshot_epochs
from unpoison.config import build_config
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import (TINY, assert_clean_label_ground_truth, assert_linf_within,
                                              count_generations, interrupt_after_one_unit, same_result,
                                              surrogate_fixtures)

PARAMS = TINY | {"steps": 3, "surrogate_epochs": 3, "num_models": 3, "step_size": 4 / 255}


def P(**kw):
    return PARAMS | kw


tiny, cache, attack, poisoned = surrogate_fixtures(SEP, PARAMS)


def test_registered_with_paper_preset():
    assert ATTACKS.get("sep") is SEP and SEP.summary and SEP.kind == "availability"
    paper = build_config(SEPConfig, preset="paper")
    assert paper.num_models == 15 and paper.budget == pytest.approx(2 / 255)
    assert SEPConfig().budget == pytest.approx(8 / 255)  # ECLIPSE's protocol


def test_snapshot_epochs_evenly_spaced_ending_at_the_final_model():
    assert snapshot_epochs(5, 5) == [1, 2, 3, 4, 5]
    assert snapshot_epochs(120, 15) == list(range(8, 121, 8))
    assert snapshot_epochs(6, 2) == [3, 6]


def test_budget_ground_truth_and_recorded_checkpoints(poisoned, tiny):
    assert_linf_within(poisoned, tiny, 8 / 255)
    assert_clean_label_ground_truth(poisoned, tiny, len(tiny))
    assert poisoned.poison_norms.max() == pytest.approx(8 / 255, abs=1e-6)
    assert poisoned.attack["checkpoint_epochs"] == [1, 2, 3]


def test_ensemble_members_are_distinct_checkpoints_and_pgd_moves_toward_targets(tiny, cache):
    s = SEP(**P(cache_dir=cache))
    ens = s.surrogate(tiny, 0, torch.device("cpu"), type("Ck", (), {"folder": None})())
    assert isinstance(ens, CheckpointEnsemble) and len(ens.members) == 3
    w = [next(m.parameters()) for m in ens.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])  # three stages of one run, not one model
    x = torch.from_numpy(tiny.images[:8]).permute(0, 3, 1, 2).float() / 255
    avg = torch.stack([m(x) for m in ens.members]).mean(0)
    assert torch.allclose(ens(x), avg, atol=1e-6)
    assert not any(p.requires_grad for p in ens.parameters())


def test_perturbation_steers_the_ensemble_toward_the_target_class(cifar_train):
    # the fixtures' surrogate is too small to learn anything on 200 images; this one learns a little (≈ 26% train
    # accuracy), enough to see the targeted PGD work: more images are classified as t(y) = y + 1 after it
    from tests.attacks._surrogate_helpers import tiny_subset

    ds = tiny_subset(cifar_train, per_class=50)
    s = SEP(**(TINY | {"width": 0.25, "batch_size": 50, "surrogate_epochs": 4, "num_models": 2, "steps": 5,
                       "step_size": 2 / 255, "cache": False}))
    ens = s.surrogate(ds, 0, torch.device("cpu"), type("NoCk", (), {"folder": None})())
    pds = s.poison(ds, seed=0)
    t = torch.from_numpy((ds.labels + 1) % 10)

    def hit(images):
        with torch.no_grad():
            return float(
                (ens(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1) == t).float().mean())

    assert hit(pds.images) > hit(ds.images) + 0.04  # measured 0.172 vs 0.100


def test_deterministic(poisoned, tiny):
    assert same_result(SEP(**P(cache=False)).poison(tiny, seed=0), poisoned)


def test_cache_hit_and_miss(tiny, cache, poisoned, monkeypatch):
    calls = count_generations(monkeypatch, SEP)
    assert same_result(SEP(**P(cache_dir=cache, device="auto")).poison(tiny, seed=0), poisoned)
    assert calls == []
    SEP(**P(cache_dir=cache, num_models=2, steps=1)).poison(tiny, seed=0)
    assert calls == [1]


def test_resume_equals_uninterrupted(tiny, tmp_path, poisoned):
    interrupt_after_one_unit(SEP(**P(cache_dir=str(tmp_path))), tiny)  # after 1 of 2 PGD batches
    assert list(tmp_path.rglob("snapshots.safetensors"))  # the checkpoints are kept for the resumed run
    assert same_result(SEP(**P(cache_dir=str(tmp_path))).poison(tiny, seed=0), poisoned)


def test_poison_rate(tiny):
    pds = SEP(**P(steps=1, poison_rate=0.5, cache=False)).poison(tiny, seed=0)
    assert_clean_label_ground_truth(pds, tiny, 100)
    assert np.array_equal(pds.images[~pds.is_poison], tiny.images[~pds.is_poison])


@pytest.mark.parametrize("bad", [{"steps": 0}, {"num_models": 0}, {"num_models": 6, "surrogate_epochs": 5},
                                 {"target_map": "identity"}])
def test_invalid_config(bad):
    with pytest.raises(UnpoisonError):
        create_attack("sep", **bad)
