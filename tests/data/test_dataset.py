import numpy as np
import pytest

from unpoison.data import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError

NAMES = ("a", "b", "c")


def _imgs(n=4, h=8, w=8, c=3, dtype=np.uint8):
    return (np.arange(n * h * w * c).reshape(n, h, w, c) % 256).astype(dtype)


def test_valid_dataset_facts():
    ds = ImageDataset(_imgs(), [0, 1, 2, 1], NAMES, source="x:train")
    assert len(ds) == 4 and ds.num_classes == 3 and ds.image_shape == (8, 8, 3)
    assert ds.class_counts().tolist() == [1, 2, 1]
    assert ds.split == "train"
    assert ds.indices.tolist() == [0, 1, 2, 3]


def test_subset_keeps_provenance_and_mask():
    ds = ImageDataset(_imgs(), [0, 1, 2, 1], NAMES)
    sub = ds.subset([3, 1])
    assert sub.indices.tolist() == [3, 1] and sub.labels.tolist() == [1, 1]
    assert np.array_equal(sub.images[0], ds.images[3])
    assert ds.subset(np.array([True, False, True, False])).indices.tolist() == [0, 2]


def test_float_images_in_unit_range_are_converted():
    x = np.full((2, 4, 4, 3), 0.5, dtype=np.float32)
    ds = ImageDataset(x, [0, 1], NAMES)
    assert ds.images.dtype == np.uint8 and int(ds.images[0, 0, 0, 0]) == 128


@pytest.mark.parametrize(
    "images, labels, match",
    [
        (_imgs(dtype=np.int32), [0, 1, 2, 1], "dtype int32"),
        (_imgs()[:, :, :, :2], [0, 1, 2, 1], "1 or 3 channels"),
        (np.zeros((4, 8), np.uint8), [0, 1, 2, 1], "shape"),
        (_imgs(), [0, 1, 2], "length 3 but there are 4 images"),
        (_imgs(), [0, 1, 2, 3], "out of range"),
        (_imgs(), [0, -1, 2, 1], "out of range"),
        (_imgs(), [0.5, 1, 2, 1], "integers"),
        (np.full((2, 4, 4, 3), np.nan, np.float32), [0, 1], "NaN or Inf"),
        (np.full((2, 4, 4, 3), np.inf, np.float32), [0, 1], "NaN or Inf"),
        (np.full((2, 4, 4, 3), 2.0, np.float32), [0, 1], r"\[0, 1\]"),
        (np.zeros((0, 4, 4, 3), np.uint8), [], "empty"),
    ],
)
def test_bad_arrays_raise_one_line_errors(images, labels, match):
    with pytest.raises(UnpoisonError, match=match) as e:
        ImageDataset(images, labels, NAMES)
    assert "\n" not in str(e.value)


def test_poisoned_dataset_ground_truth_and_subset():
    clean = _imgs()
    pois = clean.copy()
    pois[1] = 255
    ds = PoisonedDataset(pois, [0, 0, 2, 1], NAMES, is_poison=[False, True, False, False],
                         original_labels=[0, 1, 2, 1], clean_images=clean, attack={"name": "t", "params": {}})
    assert ds.poison_rate == 0.25
    assert ds.perturbation()[1].max() > 0 and ds.perturbation()[0].max() == 0
    sub = ds.subset([1, 2])
    assert sub.is_poison.tolist() == [True, False] and sub.original_labels.tolist() == [1, 2]
    assert sub.original_index.tolist() == [1, 2]
    assert ds.summary()["poison_count"] == 1 and ds.summary()["relabelled"] == 1


def test_poisoned_dataset_rejects_mismatched_fields():
    with pytest.raises(UnpoisonError, match="is_poison"):
        PoisonedDataset(_imgs(), [0, 1, 2, 1], NAMES, is_poison=[True])
    with pytest.raises(UnpoisonError, match="clean_images"):
        PoisonedDataset(_imgs(), [0, 1, 2, 1], NAMES, clean_images=_imgs(n=3))


def test_with_images_replaces_pixels_only():
    ds = PoisonedDataset(_imgs(), [0, 1, 2, 1], NAMES, is_poison=[True, False, False, False])
    new = ds.with_images(np.zeros_like(ds.images), purified={"name": "x"})
    assert new.images.max() == 0 and new.is_poison.tolist() == ds.is_poison.tolist()
    assert new.meta["purified"] == {"name": "x"} and "purified" not in ds.meta
