"""Every registered availability attack, through one contract: budget respected (measured norm ≤ budget, and the
recorded per-sample norm is the real one), labels kept (clean-label), exactly the chosen indices marked, seeded,
and the ground truth round-trips through npz and a PNG folder."""

from __future__ import annotations

import numpy as np
import pytest

from tests.attacks._surrogate_helpers import TINY, tiny_subset
from unpoison.attacks import ATTACKS, create_attack
from unpoison.data import export_png, import_png, load_dataset, save_dataset

AVAILABILITY = sorted(n for n in ATTACKS.names() if ATTACKS.get(n).kind == "availability")
# Surrogate attacks at their smallest (one round / one step, tiny surrogate, no cache): the contract, not efficacy.
FAST = {
    "em": {**TINY, "pgd_steps": 1, "train_steps": 1, "max_rounds": 1, "cache": False},
    "rem": {**TINY, "pgd_steps": 1, "adv_steps": 1, "eot_samples": 1, "train_steps": 1, "rounds": 1, "cache": False},
    "tap": {**TINY, "steps": 1, "surrogate_epochs": 1, "cache": False},
    "sep": {**TINY, "steps": 1, "surrogate_epochs": 2, "num_models": 2, "cache": False},
}


def _measured(pds, clean, norm: str) -> np.ndarray:
    d = pds.images.astype(np.float64) / 255 - clean.images.astype(np.float64) / 255
    d = d.reshape(len(d), -1)
    if norm == "linf":
        return np.abs(d).max(1)
    if norm == "l2":
        return np.sqrt((d ** 2).sum(1))
    # l0 in pixels: a pixel counts once whatever its channels
    return (pds.images != clean.images).reshape(len(d), -1, clean.images.shape[-1]).any(2).sum(1).astype(float)


@pytest.fixture(scope="module")
def small(cifar_train):
    return tiny_subset(cifar_train, per_class=10)  # 100 real images


def test_the_zoo_has_the_papers_attacks():
    assert {"lsp", "ar", "ops", "urp", "em", "rem", "tap", "sep"} <= set(AVAILABILITY)


@pytest.mark.parametrize("name", AVAILABILITY)
def test_contract_and_round_trip(name, small, tmp_path):
    atk = create_attack(name, poison_rate=0.5, **FAST.get(name, {}))
    pds = atk.poison(small, seed=3)
    # clean-label: labels untouched; ground truth present
    assert np.array_equal(pds.labels, small.labels) and np.array_equal(pds.original_labels, small.labels)
    assert int(pds.is_poison.sum()) == 50
    changed = (pds.images != small.images).reshape(len(small), -1).any(1)
    assert not changed[~pds.is_poison].any()
    # budget: the recorded norm is the measured one and stays within the budget
    norm, budget = pds.attack["norm"], float(pds.attack["budget"])
    real = _measured(pds, small, norm)
    assert np.allclose(pds.poison_norms, real, atol=1e-4)
    assert (real <= budget + 1e-4).all()
    # seeded
    again = create_attack(name, poison_rate=0.5, **FAST.get(name, {})).poison(small, seed=3)
    assert np.array_equal(again.images, pds.images) and np.array_equal(again.is_poison, pds.is_poison)
    # npz and PNG round trips keep pixels and every per-sample ground-truth field
    back = load_dataset(save_dataset(pds, tmp_path / "p.npz"))
    export_png(pds, tmp_path / "png")
    png = import_png(tmp_path / "png")
    for other in (back, png):
        assert np.array_equal(other.images, pds.images) and np.array_equal(other.labels, pds.labels)
        assert np.array_equal(other.is_poison, pds.is_poison)
        assert np.array_equal(other.original_labels, pds.original_labels)
        assert np.allclose(other.poison_norms, pds.poison_norms)
    assert back.attack["name"] == name
