import json
import zipfile

import numpy as np
import pytest

from unpoison.data import (PoisonedDataset, export_png, import_png, load, load_dataset, save_dataset,
                           stratified_subset)
from unpoison.errors import UnpoisonError


@pytest.fixture
def small(cifar_small):
    return stratified_subset(cifar_small, per_class=3, seed=1)


def _poisoned(ds):
    rng = np.random.default_rng(0)
    mask = rng.random(len(ds)) < 0.5
    cover = ~mask & (rng.random(len(ds)) < 0.3)
    imgs = ds.images.copy()
    imgs[mask, :3, :3] = 255
    labels = np.where(mask, 0, ds.labels)
    return PoisonedDataset(imgs, labels, ds.class_names, source=ds.source, indices=ds.indices, is_poison=mask,
                           original_labels=ds.labels, clean_images=ds.images,
                           poison_norms=mask.astype(np.float32) * 9, is_cover=cover,
                           attack={"name": "t", "kind": "backdoor", "params": {"a": 1}},
                           artifacts={"pattern": np.full((3, 3, 3), 255, np.uint8)}, meta={"k": [1, 2]})


def _same(a, b):
    assert type(a) is type(b)
    for f in ("images", "labels", "indices"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert a.class_names == b.class_names and a.source == b.source and a.meta == b.meta
    if isinstance(a, PoisonedDataset):
        for f in ("is_poison", "original_labels", "clean_images", "poison_norms", "is_cover"):
            assert np.array_equal(getattr(a, f), getattr(b, f))
        assert a.attack == b.attack
        assert a.artifacts.keys() == b.artifacts.keys()
        assert all(np.array_equal(a.artifacts[k], b.artifacts[k]) for k in a.artifacts)


def test_npz_round_trip_clean_and_poisoned(small, tmp_path):
    for ds in (small, _poisoned(small)):
        p = save_dataset(ds, tmp_path / f"{type(ds).__name__}.npz")
        _same(ds, load_dataset(p))
        _same(ds, load(str(p)))


def test_cover_flags_follow_subsets_and_cannot_overlap_poison(small):
    pds = _poisoned(small)
    assert pds.is_cover.any()
    idx = np.flatnonzero(pds.is_cover)[:2]
    assert pds.subset(idx).is_cover.all() and not pds.subset(idx).is_poison.any()
    with pytest.raises(UnpoisonError, match="both poison and cover"):
        PoisonedDataset(pds.images, pds.labels, pds.class_names, is_poison=pds.is_poison, is_cover=pds.is_poison)


def test_png_round_trip_keeps_ground_truth(small, tmp_path):
    for ds in (small, _poisoned(small)):
        out = tmp_path / type(ds).__name__
        export_png(ds, out)
        assert (out / "airplane").is_dir()
        _same(ds, import_png(out))
        _same(ds, load(f"imagefolder:{out}"))


def test_plain_imagefolder_without_manifest(small, tmp_path):
    out = tmp_path / "f"
    export_png(small, out)
    (out / "unpoison-manifest.json").unlink()
    ds = import_png(out)
    assert len(ds) == len(small) and set(ds.class_names) == set(small.class_names)
    # classes come back sorted by folder name; images match as multisets per class
    for name in small.class_names:
        a = small.images[small.labels == small.class_names.index(name)]
        b = ds.images[ds.labels == ds.class_names.index(name)]
        assert sorted(x.tobytes() for x in a) == sorted(x.tobytes() for x in b)


def test_export_refuses_non_empty_dir(small, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("mine")
    with pytest.raises(UnpoisonError, match="not empty"):
        export_png(small, tmp_path / "d")
    assert (tmp_path / "d" / "keep.txt").read_text() == "mine"


def test_missing_truncated_and_pickled_files(small, tmp_path):
    with pytest.raises(UnpoisonError, match="not found"):
        load_dataset(tmp_path / "nope.npz")
    p = save_dataset(small, tmp_path / "ok.npz")
    data = p.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnpoisonError, match="truncated or corrupt"):
        load_dataset(tmp_path / "trunc.npz")
    np.savez(tmp_path / "pickled.npz", images=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(UnpoisonError, match="pickled"):
        load(str(tmp_path / "pickled.npz"))
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(UnpoisonError, match="not a readable"):
        load(str(tmp_path / "text.npz"))


def test_bad_contents_in_npz(small, tmp_path):
    meta = json.dumps({"format": "unpoison-dataset", "version": 1, "kind": "clean", "source": "", "meta": {}})
    base = {"class_names": np.array(["a", "b"]), "__meta__": np.asarray(meta)}
    cases = {
        "dtype": dict(images=np.zeros((2, 4, 4, 3), np.int64), labels=np.array([0, 1])),
        "channels": dict(images=np.zeros((2, 4, 4, 4), np.uint8), labels=np.array([0, 1])),
        "out of range": dict(images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, 5])),
        "length": dict(images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.array([0, 1, 1])),
        "NaN": dict(images=np.full((2, 4, 4, 3), np.nan, np.float32), labels=np.array([0, 1])),
        "empty": dict(images=np.zeros((0, 4, 4, 3), np.uint8), labels=np.zeros(0, np.int64)),
    }
    for match, arrays in cases.items():
        f = tmp_path / f"{match.replace(' ', '_')}.npz"
        np.savez(f, **base, **arrays)
        with pytest.raises(UnpoisonError, match=match):
            load_dataset(f)


def test_save_is_atomic_and_keeps_old_file_on_failure(small, tmp_path, monkeypatch):
    p = save_dataset(small, tmp_path / "d.npz")
    before = p.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        save_dataset(small, p)
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["d.npz"]  # no temporary left behind


def test_plain_cifar_npz_and_zip_is_not_pickled(data_root):
    with zipfile.ZipFile(data_root / "cifar10.npz") as zf:
        assert "x_train.npy" in zf.namelist()
    tr = load(str(data_root / "cifar10.npz"))
    te = load(f"{data_root / 'cifar10.npz'}:test")
    assert (len(tr), len(te)) == (50000, 10000)
