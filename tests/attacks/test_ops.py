import numpy as np
import pytest

from unpoison.attacks import ATTACKS, create_attack
from unpoison.attacks.availability.ops import OPS, SCORE_EPS, colour_bits
from unpoison.data import ImageDataset

from tests.attacks._surrogate_helpers import OTHER_SHAPE_IDS, OTHER_SHAPES, assert_rate_respected


@pytest.fixture(scope="module")
def poisoned(cifar_small):
    return create_attack("ops").poison(cifar_small, seed=0)


def brute_score(images: np.ndarray, colour: np.ndarray, h: int, w: int) -> float:
    """The documented score, written out literally for one (colour, position)."""
    x = images[:, h, w, :].astype(np.float64) / 255.0
    b = colour.astype(np.float64) / 255.0
    return float(np.mean(np.abs(b - x)) / (np.std(x, axis=0).mean() + SCORE_EPS))


def check_one_pixel(pds, clean: ImageDataset) -> None:
    """Each poisoned image differs from its clean one at most at its class's pixel, which holds the class colour."""
    pos, col = pds.artifacts["positions"], pds.artifacts["colours"]
    assert (pds.poison_norms <= 1).all()
    changed = (pds.images != clean.images).any(axis=-1)  # (N, H, W)
    assert np.array_equal(changed.reshape(len(pds), -1).sum(1), pds.poison_norms)
    idx = np.flatnonzero(pds.is_poison)
    lab = pds.labels[idx]
    assert np.array_equal(pds.images[idx, pos[lab, 0], pos[lab, 1]], col[lab])
    changed[idx, pos[lab, 0], pos[lab, 1]] = False
    assert not changed.any()


def test_registered_with_summary():
    assert ATTACKS.get("ops") is OPS and OPS.summary and OPS.kind == "availability"


def test_one_pixel_at_the_class_position(poisoned, cifar_small):
    assert poisoned.is_poison.all()
    check_one_pixel(poisoned, cifar_small)
    assert poisoned.poison_norms.mean() > 0.9  # the chosen colour is rarely already there
    assert poisoned.attack["norm"] == "l0" and poisoned.attack["budget"] == 1
    assert np.array_equal(poisoned.labels, cifar_small.labels)
    assert np.array_equal(poisoned.clean_images, cifar_small.images)


def test_artifacts_distinct_per_class(poisoned):
    pos, col = poisoned.artifacts["positions"], poisoned.artifacts["colours"]
    assert pos.shape == (10, 2) and col.shape == (10, 3) and col.dtype == np.uint8
    assert set(np.unique(col)) <= {0, 255}
    pairs = {(int(p[0]), int(p[1]), *map(int, c)) for p, c in zip(pos, col, strict=True)}
    assert len(pairs) == 10  # no two classes share a shortcut
    assert len({tuple(p) for p in pos.tolist()}) > 1  # positions are chosen per class, not shared


def test_search_maximises_the_documented_score(poisoned, cifar_small):
    pos, col, scores = (poisoned.artifacts[k] for k in ("positions", "colours", "scores"))
    colours = colour_bits(3) * 255
    taken: set[tuple[int, int, int]] = set()
    rng = np.random.default_rng(0)
    for cls in range(10):
        imgs = cifar_small.images[cifar_small.labels == cls]
        best = brute_score(imgs, col[cls], *pos[cls])
        assert best == pytest.approx(float(scores[cls]), rel=1e-5)
        others = [tuple(p) for p in rng.integers(0, 32, size=(3, 2))] + [(0, 0), (31, 31)]
        for h, w in others:
            for v, colour in enumerate(colours):
                if (v, h, w) not in taken:  # pairs taken by earlier classes are excluded from the search
                    assert brute_score(imgs, colour, h, w) <= best + 1e-9
        v = int(np.flatnonzero((colours == col[cls]).all(axis=1))[0])
        taken.add((v, int(pos[cls, 0]), int(pos[cls, 1])))


def test_planted_stable_pixel_is_found():
    """A pixel that is black in every image of class 0 (and noisy elsewhere) is class 0's shortcut, set to white."""
    rng = np.random.default_rng(0)
    images = rng.integers(60, 200, size=(40, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    images[labels == 0, 3, 5] = 0
    pds = OPS().poison(ImageDataset(images, labels, ["a", "b"]), seed=0)
    assert pds.artifacts["positions"][0].tolist() == [3, 5]
    assert pds.artifacts["colours"][0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_poison_rate(cifar_small, rate):
    pds = OPS(poison_rate=rate).poison(cifar_small, seed=3)
    assert_rate_respected(pds, cifar_small, rate)
    check_one_pixel(pds, cifar_small)


def test_seeded(cifar_small, poisoned):
    assert np.array_equal(create_attack("ops").poison(cifar_small, seed=0).images, poisoned.images)
    # The search is deterministic; the seed picks which samples are poisoned.
    a = OPS(poison_rate=0.5).poison(cifar_small, seed=0)
    b = OPS(poison_rate=0.5).poison(cifar_small, seed=0)
    c = OPS(poison_rate=0.5).poison(cifar_small, seed=1)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.is_poison, b.is_poison)
    assert not np.array_equal(a.is_poison, c.is_poison) and not np.array_equal(a.images, c.images)


@pytest.mark.parametrize("make", OTHER_SHAPES, ids=OTHER_SHAPE_IDS)
def test_other_shapes_and_class_counts(cifar_small, make):
    ds = make(cifar_small)
    pds = OPS().poison(ds, seed=0)
    c = ds.image_shape[2]
    assert pds.artifacts["positions"].shape == (ds.num_classes, 2)
    assert pds.artifacts["colours"].shape == (ds.num_classes, c)
    assert (pds.artifacts["positions"] >= 0).all()
    check_one_pixel(pds, ds)


def test_empty_classes(cifar_small):
    """43 class names, only 10 used: empty classes get no shortcut."""
    ds = ImageDataset(cifar_small.images, cifar_small.labels % 43, [f"c{i}" for i in range(43)])
    pds = OPS().poison(ds, seed=0)
    pos = pds.artifacts["positions"]
    assert (pos[:10] >= 0).all() and (pos[10:] == -1).all()
    assert np.isnan(pds.artifacts["scores"][10:]).all()
    check_one_pixel(pds, ds)
