"""The despeckle filter (switching median): impulses replaced by the neighbours' median, everything else kept; on
real CIFAR-10 it finds most of OPS's pixels and leaves clean images nearly untouched; ECLIPSE's option applies it to
the input before noising."""

import numpy as np
import pytest
import torch

from unpoison.attacks import create_attack
from unpoison.data import ImageDataset
from unpoison.defenses import PURIFIERS, create_purifier
from unpoison.defenses.purify.despeckle import despeckle, despeckle_tensor
from unpoison.errors import UnpoisonError


def test_impulses_by_hand():
    img = np.full((1, 6, 6, 3), 100, np.uint8)
    img[0, :, 3:] = 110  # an edge: values inside their neighbours' range stay
    img[0, 2, 1] = (255, 100, 100)  # one channel far out: the whole pixel is replaced
    img[0, 0, 5] = (0, 0, 0)  # a corner: reflect padding compares it with real neighbours
    img[0, 4, 4] = (130, 130, 130)  # 20 levels above its neighbours: below a 0.15 threshold (38 levels), kept
    out = despeckle(img, 0.15)
    assert out[0, 2, 1].tolist() == [100, 100, 100] and out[0, 0, 5].tolist() == [110, 110, 110]
    assert out[0, 4, 4].tolist() == [130, 130, 130]
    changed = (out != img).any(-1)
    assert changed.sum() == 2  # nothing else moved
    assert despeckle(img, 0.05)[0, 4, 4].tolist() == [110, 110, 110]  # a lower threshold catches it
    # a ramp's two corners are its extremes, one step (1/63) beyond their neighbours: kept above that, not below
    x = torch.linspace(0, 1, 64).reshape(1, 1, 8, 8).repeat(2, 3, 1, 1)
    assert torch.equal(despeckle_tensor(x, 0.02), x)
    assert (despeckle_tensor(x, 0.01) != x).any(1).sum() == 2 * 2
    with pytest.raises(ValueError):
        despeckle_tensor(torch.zeros(3, 8, 8), 0.1)


def test_removes_ops_and_spares_clean_images(cifar_small):
    pds = create_attack("ops").poison(cifar_small, seed=0)
    hit = (pds.images != cifar_small.images).any(-1)
    assert hit.reshape(len(pds), -1).sum(1).max() == 1  # one pixel per image
    out = create_purifier("despeckle").fit_purify(pds)
    assert PURIFIERS.get("despeckle") is not None and out.meta["purified"]["params"] == {"threshold": 0.15}
    restored = np.abs(out.images.astype(int) - cifar_small.images)[hit].max(-1)
    before = np.abs(pds.images.astype(int) - cifar_small.images)[hit].max(-1)
    assert (restored < before / 2).mean() > 0.7  # most of OPS's pixels are pulled back toward the original
    clean_out = despeckle(cifar_small.images, 0.15)
    assert (clean_out != cifar_small.images).any(-1).mean() < 0.002  # measured 0.0003 on 20,000 images
    with pytest.raises(UnpoisonError):
        create_purifier("despeckle", threshold=0.0)


def test_eclipse_option_filters_the_input_before_noising():
    rng = np.random.default_rng(0)
    imgs = np.full((8, 16, 16, 3), 120, np.uint8) + rng.integers(0, 8, (8, 16, 16, 3), dtype=np.uint8)
    imgs[:, 5, 7] = 255  # an OPS-like pixel in every image
    ds = ImageDataset(imgs, np.arange(8) % 2, ("a", "b"))
    clean = ImageDataset(rng.integers(100, 140, (8, 16, 16, 3), dtype=np.uint8), np.arange(8) % 2, ("a", "b"))
    tiny = dict(unet="tiny", train_steps=2, batch_size=4, sparse_size=8, copies=0, steps=2, progress=False)
    p = create_purifier("eclipse", **tiny, despeckle=0.15).fit(ds, clean)
    with_filter = p.purify(ds).images
    p.config.despeckle = 0.0  # same model, same seed: the option must equal filtering the input by hand
    by_hand = p.purify(ds.with_images(despeckle(imgs, 0.15))).images
    assert np.array_equal(with_filter, by_hand)
    assert not np.array_equal(p.purify(ds).images, with_filter)
    with pytest.raises(UnpoisonError, match="despeckle"):
        create_purifier("eclipse", despeckle=1.5)
