"""The plain rate-constrained VAE (Section 3 of Yu et al., ICML 2024): purify by reconstruction.

A VAE whose KL (per latent position, summed over channels) is held at κ by the hinge w·max(KL, κ) cannot afford to
encode small perturbations, so its reconstruction x̂ drops much of them (and some image detail: the tighter κ, the
blurrier). No class embedding, no perturbation branch; one stage; the output is x̂ (latent sampled, as D-VAE).
The official repository ships no training script for this model; it is the D-VAE's building blocks without the
perturbation branch (see :mod:`unpoison.defenses.purify.dvae`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from unpoison.config import check
from unpoison.data.dataset import ImageDataset
from unpoison.defenses.base import register_purifier
from unpoison.defenses.purify.dvae import _PAPER_ARCH, _TRANSFORM_ONLY, RateVAE, VAEConfig, _VAEPurifier


@dataclasses.dataclass
class RCVAEConfig(VAEConfig):
    kappa: float = 1.0  # KL target (nats per latent position); D-VAE's stage-1 value

    PRESETS = {"paper": {**_PAPER_ARCH, "kappa": 1.0}}

    def validate(self) -> None:
        super().validate()
        check(self.kappa >= 0, f"kappa must be ≥ 0; got {self.kappa}")


@register_purifier
class RCVAEPurifier(_VAEPurifier):
    name = "rcvae"
    config_class = RCVAEConfig
    summary = "Rate-constrained VAE reconstruction (D-VAE paper, Sec. 3): KL held at kappa; no clean data"

    config: RCVAEConfig
    # purification-time only: its one stage trains the same
    no_stage_fields = ("latent", "eval_batch_size", *_TRANSFORM_ONLY)

    def _build(self, stage: int, ds: ImageDataset) -> RateVAE:
        h, w, c = ds.image_shape
        return RateVAE(c, (h, w), self.config)

    def _kappa(self, stage: int) -> float:
        return self.config.kappa

    def _stage_output(self, stage: int, model: RateVAE, x: torch.Tensor, y: torch.Tensor,
                      noise: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        fwd = model(x, y, noise(model.latent_shape(len(x))) if noise else None)
        return fwd["xhat"], fwd


__all__ = ["RCVAEConfig", "RCVAEPurifier"]
