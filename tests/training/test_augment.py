import torch
import torch.nn.functional as F

from unpoison.training.augment import random_crop, random_flip


def test_random_crop_is_a_window_of_the_padded_image():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    xp = F.pad(x, (2, 2, 2, 2))
    for i in range(16):  # each output must equal one of the 25 windows
        assert any(torch.equal(out[i], xp[i, :, dy:dy + 8, dx:dx + 8]) for dy in range(5) for dx in range(5))
    shifts = {tuple(torch.nonzero(out[i].sum(0) == 0).tolist()[0]) if (out[i].sum(0) == 0).any() else None
              for i in range(16)}
    assert len(shifts) > 1  # not all the same offset


def test_crop_and_flip_are_seeded():
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    a = random_flip(random_crop(x, 4, torch.Generator().manual_seed(1)), torch.Generator().manual_seed(2))
    b = random_flip(random_crop(x, 4, torch.Generator().manual_seed(1)), torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def test_flip_flips_about_half():
    x = torch.arange(4 * 1 * 1 * 2, dtype=torch.float32).reshape(4, 1, 1, 2).repeat(256, 1, 1, 1)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] > out[:, 0, 0, 1]).float().mean()
    assert 0.4 < flipped < 0.6
    assert torch.equal(torch.sort(out, dim=3).values, torch.sort(x, dim=3).values)


def test_reflect_padding_keeps_dtype():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0), mode="reflect")
    assert out.dtype == torch.uint8 and out.shape == x.shape
