"""WaNet, poison-only variant (Nguyen & Tran, ICLR 2021, "WaNet – Imperceptible Warping-based Backdoor
Attack").

The trigger is a fixed, smooth random warp. A k × k field of uniform noise in [−1, 1] (two channels: x and y
offsets) is divided by its mean absolute value, upsampled bicubically to H × W, scaled by ``s`` / H (``s`` / W for
the x offsets, the same for square images; a mean shift of about s/2 pixels), added to the identity sampling grid in
normalised [−1, 1] coordinates and clamped. Images are resampled through it with
``torch.nn.functional.grid_sample`` (bilinear, align_corners=True), exactly as the original does.

The original WaNet controls training and warps batches on the fly. This is the poison-only version of
backdoor-toolbox (defaults poison_rate 0.05, cover_rate 0.1; k = 4, s = 0.5 as in the paper and BackdoorBench):
poisoned samples are warped with the fixed grid and relabelled; "noise-mode" cover samples are warped with the grid
plus a fresh per-image random jitter, grid + (U[−1, 1]) / H, and keep their labels, which teaches the model that only
the exact warp means "target". (backdoor-toolbox draws one jitter for all covers; the original draws one per image,
which is what this does.) The test-time trigger is the clean grid alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from unpoison.attacks.backdoor.common import BackdoorConfig, TriggerBackdoor, to_uint8
from unpoison.attacks.base import register_attack
from unpoison.config import check
from unpoison.errors import UnpoisonError


@dataclasses.dataclass
class WaNetConfig(BackdoorConfig):
    poison_rate: float = 0.05  # backdoor-toolbox poison-only WaNet
    cover_rate: float = 0.1  # noise-mode cover samples (backdoor-toolbox)
    k: int = 4  # side of the random control grid (paper, BackdoorBench)
    s: float = 0.5  # warp strength (paper, BackdoorBench)
    trigger_seed: int = 0  # seeds the warping field (independent of the poisoning seed)

    def validate(self) -> None:
        super().validate()
        check(0.0 <= self.cover_rate <= 1.0, f"cover_rate must be in [0, 1]; got {self.cover_rate}")
        check(self.k >= 2, f"k must be ≥ 2; got {self.k}")
        check(self.s >= 0.0, f"s must be ≥ 0; got {self.s}")


def identity_grid(h: int, w: int) -> torch.Tensor:
    """(1, H, W, 2) sampling grid (x, y) in [−1, 1] that grid_sample(align_corners=True) maps to the same image."""
    ys = torch.linspace(-1, 1, steps=h)
    xs = torch.linspace(-1, 1, steps=w)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((x, y), dim=2)[None]


def warp(images: np.ndarray, grid: torch.Tensor) -> np.ndarray:
    """Resample uint8 (N, H, W, C) images through ``grid`` (1 or N, H, W, 2); returns uint8."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    grid = grid.expand(len(images), -1, -1, -1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return to_uint8(out.permute(0, 2, 3, 1).numpy() * 255.0)


@register_attack
class WaNet(TriggerBackdoor):
    name = "wanet"
    config_class = WaNetConfig
    summary = "Fixed smooth random warp (grid_sample), relabelled, plus noise-mode cover samples (poison-only WaNet)"
    trigger_keys = ("grid",)
    norm = "l2"  # a warp has no pixel budget; the L2 change is the informative size (budget: none)
    has_cover = True

    def make_trigger(self, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        h, w, _ = shape
        k, s = self.config.k, self.config.s
        ins = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(1, 2, k, k)).astype(np.float32))
        ins = ins / ins.abs().mean()  # unit mean displacement before scaling, as the original
        noise = F.interpolate(ins, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        # Offsets in normalised coordinates: 2/(size−1) is one pixel, so s/size is about s/2 pixels (original: s/H).
        scale = torch.tensor([s / w, s / h], dtype=torch.float32)
        grid = torch.clamp(identity_grid(h, w) + noise * scale, -1, 1)
        return {"grid": grid.numpy().astype(np.float32)}

    def check_trigger(self, trigger: dict[str, np.ndarray], shape: tuple[int, int, int]) -> None:
        grid = trigger["grid"]
        if grid.dtype != np.float32 or grid.shape != (1, shape[0], shape[1], 2):
            raise UnpoisonError(f"saved WaNet grid has shape {grid.shape} and dtype {grid.dtype}; "
                                f"expected float32 (1, {shape[0]}, {shape[1]}, 2)")

    def stamp(self, images: np.ndarray, trigger: dict[str, np.ndarray]) -> np.ndarray:
        return warp(images, torch.from_numpy(trigger["grid"]))

    def stamp_cover(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        n, h, w, _ = images.shape
        grid = torch.from_numpy(trigger["grid"])
        jitter = torch.from_numpy(rng.random((n, h, w, 2), dtype=np.float32) * 2 - 1)
        scale = torch.tensor([1.0 / w, 1.0 / h], dtype=torch.float32)  # original: (rand·2 − 1) / H
        return warp(images, torch.clamp(grid + jitter * scale, -1, 1))
