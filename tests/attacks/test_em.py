import numpy as np
import pytest

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.em import EM, EMConfig
from unpoison.attacks.cache import STATS
from unpoison.config import build_config
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import (TINY, assert_clean_label_ground_truth, assert_linf_within,
                                              count_generations, interrupt_after_one_unit, same_result,
                                              surrogate_fixtures)

PARAMS = TINY | {"pgd_steps": 2, "train_steps": 2, "max_rounds": 2}


def P(**kw):
    return PARAMS | kw


tiny, cache, attack, poisoned = surrogate_fixtures(EM, PARAMS)


def test_registered_with_paper_preset():
    assert ATTACKS.get("em") is EM and EM.summary and EM.kind == "availability"
    paper = build_config(EMConfig, preset="paper")
    assert (paper.pgd_steps, paper.train_steps, paper.stop_acc, paper.arch) == (20, 10, 0.99, "resnet18")
    assert paper.step_size == pytest.approx(0.8 / 255) and paper.budget == pytest.approx(8 / 255)


def test_budget_and_ground_truth(poisoned, tiny):
    assert_linf_within(poisoned, tiny, 8 / 255)
    assert_clean_label_ground_truth(poisoned, tiny, len(tiny))
    assert poisoned.poison_norms.max() > 4 / 255  # the PGD actually moved pixels
    hist = poisoned.attack["generation"]["history"]
    assert 1 <= len(hist) <= 2 and all(0 <= h["train_acc"] <= 1 for h in hist)


def test_poison_rate_marks_exactly_the_chosen(tiny, tmp_path):
    pds = EM(**P(max_rounds=1, poison_rate=0.3, cache=False)).poison(tiny, seed=1)
    assert_clean_label_ground_truth(pds, tiny, 60)
    assert_linf_within(pds, tiny, 8 / 255)


def test_deterministic_and_seeded(poisoned, tiny):
    again = EM(**P(cache=False)).poison(tiny, seed=0)
    assert same_result(again, poisoned)
    other = EM(**P(cache=False)).poison(tiny, seed=1)
    assert not np.array_equal(other.images, poisoned.images)


def test_cache_hit_and_miss(tiny, cache, poisoned, monkeypatch):
    calls = count_generations(monkeypatch, EM)
    hits = STATS["hits"]
    again = EM(**P(cache_dir=cache, progress=True)).poison(tiny, seed=0)  # a run-only field: same key
    assert calls == [] and STATS["hits"] == hits + 1 and same_result(again, poisoned)
    assert again.attack["cache_key"] == poisoned.attack["cache_key"]
    EM(**P(cache_dir=cache, max_rounds=1)).poison(tiny, seed=0)  # changed parameter: regenerated
    assert calls == [1]
    EM(**P(cache_dir=cache)).poison(tiny, seed=2)  # changed seed: regenerated
    assert calls == [1, 1]


def test_resume_equals_uninterrupted(tiny, tmp_path, poisoned):
    interrupt_after_one_unit(EM(**P(cache_dir=str(tmp_path))), tiny)
    assert list(tmp_path.rglob("state.safetensors")) and not list(tmp_path.rglob("poisoned.npz"))
    resumed = STATS["resumed"]
    b = EM(**P(cache_dir=str(tmp_path))).poison(tiny, seed=0)
    assert STATS["resumed"] == resumed + 1
    assert same_result(b, poisoned)
    assert not list(tmp_path.rglob("state.safetensors"))  # checkpoints are dropped once the result is stored


def test_cli_lists_and_runs(capsys, tmp_path, tiny, monkeypatch):
    from unpoison.cli.main import main
    from unpoison.data import load_dataset, save_dataset

    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    out = capsys.readouterr().out
    for name in ("em", "rem", "tap", "lc"):
        assert f"  {name} " in out
    assert "pgd_steps=5" in out and "stop_acc=0.99" in out
    src, dst = tmp_path / "tiny.npz", tmp_path / "em.npz"
    save_dataset(tiny, src)
    monkeypatch.setenv("UNPOISON_CACHE", str(tmp_path / "cache"))
    argv = ["attack", "em", "--data", str(src), "--out", str(dst), "--json"]
    for kv in ("width=0.125", "batch_size=100", "pgd_steps=1", "train_steps=1", "max_rounds=1", "progress=false"):
        argv += ["--set", kv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert (e.value.code or 0) == 0, capsys.readouterr().err
    pds = load_dataset(dst)
    assert pds.is_poison.all() and pds.poison_norms.max() <= 8 / 255 + 1e-6
    assert list((tmp_path / "cache").rglob("poisoned.npz"))


@pytest.mark.parametrize("bad", [{"budget": 0.0}, {"step_size": 1.0}, {"pgd_steps": 0}, {"stop_acc": 1.5},
                                 {"poison_rate": 2.0}, {"width": -1}])
def test_invalid_config(bad):
    with pytest.raises(UnpoisonError):
        create_attack("em", **bad)
