"""AVATAR-style baseline (Dolatabadi et al., "The Devil's Advocate: Shattering the Illusion of Unexploitable Data
using Diffusion Models"): diffusion purification *without* ECLIPSE's corruption compensation, with the diffusion
model trained on more clean data.

It is ECLIPSE's machinery (:class:`~unpoison.defenses.purify.eclipse.EclipsePurifier`) with other defaults:
as many clean images as the poisoned set has (``sparse_fraction = 1``), no duplicates, no training-time transform.
ECLIPSE's paper reports its "AVATAR" row with ECLIPSE's own sparse model (its Table 1 AVATAR row equals the
diffusion-only ablation); that variant is ``eclipse`` with ``gray_p=0 noise_std=0``.
"""

from __future__ import annotations

import dataclasses

from unpoison.defenses.base import register_purifier
from unpoison.defenses.purify.eclipse import _PAPER, EclipseConfig, EclipsePurifier


@dataclasses.dataclass
class AvatarConfig(EclipseConfig):
    sparse_fraction: float = 1.0  # clean images = this × size of the poisoned set
    copies: int = 0
    gray_p: float = 0.0
    noise_std: float = 0.0
    # the baseline as measured (docs/eclipse.md): the paper's t* = 100, trained on the timesteps it visits
    t_star: int = 100
    train_t_max: int = 100
    train_steps: int = 800  # as measured; ECLIPSE's default rose to 1,600 on 2026-12-07
    steps: int = 10  # as measured; ECLIPSE's default fell to 5 on 2026-12-07
    despeckle: float = 0.0  # AVATAR has no such step

    PRESETS = {"paper": {**_PAPER, "sparse_fraction": 1.0, "copies": 0, "gray_p": 0.0, "noise_std": 0.0}}


@register_purifier
class AvatarPurifier(EclipsePurifier):
    name = "avatar"
    config_class = AvatarConfig
    summary = ("AVATAR-style diffusion purification: diffusion model trained on clean data as large as the poisoned "
               "set, noise-and-denoise, no compensation (needs --clean, or model_path)")


__all__ = ["AvatarConfig", "AvatarPurifier"]
