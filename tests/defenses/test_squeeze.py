import numpy as np
import pytest

from unpoison.attacks import create_attack
from unpoison.data import ImageDataset
from unpoison.defenses import PURIFIERS, create_purifier
from unpoison.errors import UnpoisonError


@pytest.fixture(scope="module")
def poisoned(cifar_small):
    return create_attack("badnets", poison_rate=0.1).poison(cifar_small, seed=0)


def _keeps_ground_truth(out, ds, name):
    assert type(out) is type(ds) and out.images.shape == ds.images.shape and out.images.dtype == np.uint8
    assert np.array_equal(out.labels, ds.labels) and np.array_equal(out.indices, ds.indices)
    assert np.array_equal(out.is_poison, ds.is_poison) and np.array_equal(out.original_labels, ds.original_labels)
    assert np.array_equal(out.clean_images, ds.clean_images) and out.attack == ds.attack
    assert out.meta["purified"]["name"] == name


@pytest.mark.parametrize("name", ["jpeg", "grayscale", "bdr"])
def test_found_by_name_and_keeps_ground_truth(poisoned, name):
    p = create_purifier(name)
    assert PURIFIERS.get(name) is type(p) and type(p).summary and not p.needs_clean_data
    out = p.fit_purify(poisoned)
    _keeps_ground_truth(out, poisoned, name)
    assert not np.array_equal(out.images, poisoned.images)


def test_jpeg_quality_orders_the_error(poisoned):
    err = {q: np.abs(create_purifier("jpeg", quality=q).purify(poisoned).images.astype(np.int16)
                     - poisoned.images).mean() for q in (10, 95)}
    assert 0 < err[95] < err[10]
    with pytest.raises(UnpoisonError):
        create_purifier("jpeg", quality=0)


def test_jpeg_single_channel(cifar_small):
    gray = ImageDataset(cifar_small.images[:20, ..., :1], cifar_small.labels[:20], cifar_small.class_names)
    out = create_purifier("jpeg").purify(gray)
    assert out.images.shape == (20, 32, 32, 1) and not np.array_equal(out.images, gray.images)


def test_grayscale_by_hand(poisoned):
    out = create_purifier("grayscale").purify(poisoned).images
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    r, g, b = (int(v) for v in poisoned.images[7, 5, 9])
    assert out[7, 5, 9, 0] == int(np.floor(0.299 * r + 0.587 * g + 0.114 * b + 0.5))
    tiny = ImageDataset(np.array([[[[255, 255, 255], [10, 20, 30]]]], np.uint8), [0], ["a"])
    assert create_purifier("grayscale").purify(tiny).images[0, 0, :, 0].tolist() == [255, 18]  # 17.73 → 18


def test_bdr(poisoned):
    out = create_purifier("bdr").purify(poisoned).images
    assert (out % 64 == 0).all() and (out <= poisoned.images).all() and (poisoned.images - out < 64).all()
    assert np.array_equal(create_purifier("bdr", bits=8).purify(poisoned).images, poisoned.images)
    assert (create_purifier("bdr", bits=1).purify(poisoned).images % 128 == 0).all()
    for bad in (0, 9):
        with pytest.raises(UnpoisonError):
            create_purifier("bdr", bits=bad)


def test_existing_meta_is_kept(cifar_small):
    ds = ImageDataset(cifar_small.images[:10], cifar_small.labels[:10], cifar_small.class_names, meta={"k": 1})
    out = create_purifier("bdr").purify(ds)
    assert out.meta["k"] == 1 and out.meta["purified"]["params"] == {"bits": 2}
