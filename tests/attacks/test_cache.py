import json

import numpy as np
import pytest
import torch

from unpoison.attacks.cache import (CACHE_ENV, STATS, Checkpoint, cache_key, cache_key_parts, cache_root,
                                    dataset_fingerprint, run_cached)
from unpoison.attacks.availability.em import EM
from unpoison.data import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError

from tests.attacks._surrogate_helpers import TINY, tiny_subset


@pytest.fixture(scope="module")
def tiny(cifar_train):
    return tiny_subset(cifar_train, per_class=5)


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_root() == cache_root(None) and cache_root().name == "unpoison"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"


def test_fingerprint_sees_pixels_and_labels_not_provenance(tiny):
    fp = dataset_fingerprint(tiny)
    assert fp == dataset_fingerprint(ImageDataset(tiny.images.copy(), tiny.labels.copy(), tiny.class_names,
                                                  source="elsewhere"))
    img = tiny.images.copy()
    img[0, 0, 0, 0] ^= 1
    assert dataset_fingerprint(ImageDataset(img, tiny.labels, tiny.class_names)) != fp
    lab = tiny.labels.copy()
    lab[0] = (lab[0] + 1) % 10
    assert dataset_fingerprint(ImageDataset(tiny.images, lab, tiny.class_names)) != fp


def test_key_covers_every_part(tiny):
    fp = dataset_fingerprint(tiny)
    base = cache_key(cache_key_parts("em", {"a": 1}, fp, 0, 1))
    assert base == cache_key(cache_key_parts("em", {"a": 1}, fp, 0, 1))
    changed = [("rem", {"a": 1}, fp, 0, 1), ("em", {"a": 2}, fp, 0, 1), ("em", {"a": 1}, "other", 0, 1),
               ("em", {"a": 1}, fp, 1, 1), ("em", {"a": 1}, fp, 0, 2)]  # attack, params, data, seed, cache_version
    assert len({cache_key(cache_key_parts(*c)) for c in changed} | {base}) == 6


def test_code_version_in_key(tiny, monkeypatch):
    import unpoison

    fp = dataset_fingerprint(tiny)
    a = cache_key(cache_key_parts("em", {}, fp, 0, 1))
    monkeypatch.setattr(unpoison, "__version__", "9.9.9")
    assert cache_key(cache_key_parts("em", {}, fp, 0, 1)) != a


def test_checkpoint_roundtrip_is_atomic_and_exact(tmp_path):
    ck = Checkpoint(tmp_path / "k")
    assert ck.load() is None
    t = {"delta": torch.randn(4, 3, 8, 8), "opt.0": torch.arange(5.0)}
    ck.save(t, {"round": 3, "history": [{"a": 0.5}], "finished": False})
    tensors, state = ck.load()
    assert state == {"round": 3, "history": [{"a": 0.5}], "finished": False}
    assert all(torch.equal(tensors[k], t[k]) for k in t)
    assert json.loads((tmp_path / "k" / "state.json").read_text())["round"] == 3
    assert [p.name for p in (tmp_path / "k").iterdir() if p.name.startswith(".")] == []  # no temp files left
    (tmp_path / "k" / "state.safetensors").write_bytes(b"garbage")
    with pytest.raises(UnpoisonError, match="damaged"):
        ck.load()
    ck.clear()
    assert ck.load() is None


def test_run_cached_hits_misses_and_ignores_run_fields(tiny, tmp_path):
    calls = []

    def gen(ck):
        calls.append(ck.folder)
        return PoisonedDataset(tiny.images, tiny.labels, tiny.class_names, attack={"name": "em"})

    em = EM(**TINY, cache_dir=str(tmp_path))
    h, m = STATS["hits"], STATS["misses"]
    first = run_cached(em, tiny, 0, gen)
    second = run_cached(EM(**TINY | {"progress": True, "device": "auto"}, cache_dir=str(tmp_path)), tiny, 0, gen)
    assert len(calls) == 1 and STATS["hits"] == h + 1 and STATS["misses"] == m + 1
    assert second.attack["cache_key"] == first.attack["cache_key"]
    assert np.array_equal(second.images, tiny.images)
    run_cached(EM(**TINY, cache_dir=str(tmp_path), budget=4 / 255), tiny, 0, gen)
    run_cached(EM(**TINY, cache_dir=str(tmp_path), cache=False), tiny, 0, gen)
    assert len(calls) == 3 and calls[-1] is None  # cache=False: no folder, no checkpoints
    key_files = list(tmp_path.rglob("key.json"))
    assert len(key_files) == 2 and json.loads(key_files[0].read_text())["attack"] == "em"


def test_damaged_cache_entry_is_regenerated(tiny, tmp_path):
    calls = []

    def gen(ck):
        calls.append(1)
        return PoisonedDataset(tiny.images, tiny.labels, tiny.class_names, attack={"name": "em"})

    run_cached(EM(**TINY, cache_dir=str(tmp_path)), tiny, 0, gen)
    (npz,) = tmp_path.rglob("poisoned.npz")
    npz.write_bytes(b"not a zip")
    run_cached(EM(**TINY, cache_dir=str(tmp_path)), tiny, 0, gen)
    assert calls == [1, 1]


def test_surrogate_precision_is_in_the_key(tiny, tmp_path, monkeypatch):
    # amp=auto trains TAP/LC/SEP surrogates in bf16 on AMX CPUs and CUDA: a poison made so must not be served
    # as the fp32 one (or the reverse) from a shared cache.
    import unpoison.attacks.surrogate as surrogate_mod
    from unpoison.attacks.availability.tap import TAP
    from unpoison.attacks.surrogate import surrogate_precision

    calls = []

    def gen(ck):
        calls.append(ck.folder)
        return PoisonedDataset(tiny.images, tiny.labels, tiny.class_names, attack={"name": "tap"})

    tap = TAP(**TINY, cache_dir=str(tmp_path))
    assert tap.cache_context() == {"surrogate_precision": surrogate_precision(tap.config)}
    assert surrogate_precision(tap.config) in {"fp32", "bf16"}
    first = run_cached(tap, tiny, 0, gen)
    monkeypatch.setattr(surrogate_mod, "surrogate_precision", lambda cfg: "fp16")  # read by the mixin
    other = run_cached(tap, tiny, 0, gen)
    assert len(calls) == 2 and other.attack["cache_key"] != first.attack["cache_key"]
    assert json.loads((calls[1] / "key.json").read_text())["context"] == {"surrogate_precision": "fp16"}
    # attacks without a surrogate keep a context-free key (their stored entries stay valid)
    assert "context" not in cache_key_parts("em", {}, "fp", 0, 1)
