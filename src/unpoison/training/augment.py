"""Batched on-tensor augmentation (random crop with padding, horizontal flip) with no per-image Python loop.

kornia's RandomCrop/RandomHorizontalFlip do the same job, but build a per-sample affine warp; on this 2-core CPU
the gather below is much faster for pixel-aligned crops (numbers in docs/benchmarks.md, from
benchmarks/augment_speed.py), so the trainer uses it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator, mode: str = "constant") -> torch.Tensor:
    """Pad each image by ``pad`` and crop back to its size at a random offset (one offset per image)."""
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    if mode == "constant":
        xp = F.pad(x, (pad, pad, pad, pad))
    else:  # reflect/replicate need a float tensor
        xp = F.pad(x if x.is_floating_point() else x.float(), (pad, pad, pad, pad), mode=mode).to(x.dtype)
    wp = w + 2 * pad
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return xp.reshape(b, c, -1).gather(2, flat).reshape(b, c, h, w)


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability ``p``."""
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)
