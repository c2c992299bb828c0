import numpy as np
import pytest

from unpoison.data import load
from unpoison.errors import UnpoisonError


def test_cifar10_is_the_real_thing(cifar_train, cifar_test):
    assert cifar_train.images.shape == (50000, 32, 32, 3) and cifar_test.images.shape == (10000, 32, 32, 3)
    assert cifar_train.class_counts().tolist() == [5000] * 10 and cifar_test.class_counts().tolist() == [1000] * 10
    assert (tuple(cifar_train.images[0, 0, 0]) == (59, 62, 63)
            and cifar_train.class_names[cifar_train.labels[0]] == "frog")
    means = cifar_train.images.reshape(-1, 3).mean(0)
    # the well-known CIFAR-10 channel means (0.4914, 0.4822, 0.4465) × 255
    assert np.allclose(means, [125.307, 122.950, 113.865], atol=0.001)
    assert cifar_train.source == "cifar10:train" and cifar_test.split == "test"


def test_cpu_profile_pools_are_disjoint_and_stratified(data_root):
    pool = load("cifar10:cpu", root=data_root)
    clean = load("cifar10:cpu-clean", root=data_root)
    assert len(pool) == 20000 and len(clean) == 30000
    assert pool.class_counts().tolist() == [2000] * 10
    assert not set(pool.indices.tolist()) & set(clean.indices.tolist())
    assert np.array_equal(load("cifar10:cpu", root=data_root).indices, pool.indices)  # fixed, seeded


def test_gtsrb(data_root):
    g = load("gtsrb", root=data_root)
    assert g.num_classes == 43 and g.image_shape == (32, 32, 3)
    assert len(load("gtsrb:test", root=data_root)) == 12630


def test_torchvision_layout(tmp_path, monkeypatch):
    """The official python layout, written as a tiny fixture, is read through torchvision."""
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": x, "labels": [0, 1, 2, 3]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    import torchvision.datasets.cifar as tvc

    # torchvision checks md5 sums of the official files; the fixture cannot match them.
    monkeypatch.setattr(tvc, "check_integrity", lambda *a, **k: True)
    ds = load("cifar10", root=tmp_path)
    te = load("cifar10:test", root=tmp_path)
    assert len(ds) == 20 and len(te) == 4 and ds.class_names[3] == "c3"
    assert ds.images.shape == (20, 32, 32, 3)


def test_missing_dataset_says_what_to_do(tmp_path):
    with pytest.raises(UnpoisonError, match="unpack.py"):
        load("cifar10", root=tmp_path / "empty")
    with pytest.raises(UnpoisonError, match="unknown dataset"):
        load("imagenet-9000", root=tmp_path)
    with pytest.raises(UnpoisonError, match="unknown split"):
        load("cifar10:validation", root=tmp_path)
