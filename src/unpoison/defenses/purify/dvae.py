"""D-VAE (Yu et al., ICML 2024, "Purify Unlearnable Examples via Rate-Constrained Variational Autoencoders").

Clean-room reimplementation from the description in ``shared/reference/dvae.md`` (no code copied).

A rate-constrained VAE (a ResNet-style encoder to a spatial Gaussian latent whose KL, measured per latent position
and summed over channels, is held at a target κ by a hinge) cannot afford to encode the small, class-keyed
perturbations of unlearnable examples. D-VAE adds a learnable class-wise spatial embedding u_y (not charged by the
KL) and an unbounded perturbation decoder, so the model explains x ≈ clamp(x̂ + p̂) with p̂ = D_p(u_y + w(z)):
class-consistent residuals take the free route through u_y.

Two stages, as the official code runs them:

1. a D-VAE on the poisoned set with κ = 1.0; x₁ = clamp(x − p̂(x, y));
2. a fresh D-VAE on x₁ with κ = 3.0 (the CPU default is 6.0, chosen by measurement: see ``DVAEConfig.kappa2``);
   x₂ = clamp(x̂(x₁ − p̂₂(x₁, y))) — subtract, re-encode, reconstruct.

Each stage's output is quantised to uint8 (as the official pipeline writes it back). The official code samples the
latent at purification (``latent=sample``, the ``paper`` preset); the CPU default uses the posterior mean, which
measured better (``DVAEConfig.latent``). Not in the paper: the purified set carries ECLIPSE's corruption
compensation (random grayscale, small noise, redrawn every classifier epoch) as its training-time transform, on by
default after same-image pairs measured it helping (``DVAEConfig.gray_p``). The official architecture's unused
ResNet tail and its monitoring classifier are left out (about 3x less compute per step; ``benchmarks/dvae_speed.py``).

The building blocks (encoder, decoder, the rate-constrained VAE, the loss, the seeded, resumable per-stage training
loop) are shared with the plain rate-constrained VAE in :mod:`unpoison.defenses.purify.rcvae`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset
from unpoison.defenses.base import Purifier, register_purifier
from unpoison.defenses.purify.despeckle import despeckle
from unpoison.defenses.purify.eclipse import attach_compensation, check_compensation, compensation_spec
from unpoison.errors import UnpoisonError
from unpoison.metrics import psnr_from_mse
from unpoison.utils.device import compiled_or_error, select_device
from unpoison.utils.io import (atomic_path, load_optimizer_state, read_run_checkpoint, write_json_atomic,
                               write_run_checkpoint)
from unpoison.utils.progress import Bar
from unpoison.utils.seed import derive_seed, torch_generator

# --------------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------------
_TRANSFORM_ONLY = ("gray_p", "noise_std")  # set the purified set's training-time transform; no stage depends on them
# Do not change what is computed (channels_last changes only the float rounding of the convolutions).
_RUNTIME = ("device", "progress", "checkpoint_dir", "perturbation_grid", "channels_last", "compile")


@dataclasses.dataclass
class VAEConfig(Config):
    """Architecture, optimisation and runtime fields shared by D-VAE and the plain rate-constrained VAE.

    Defaults are the CPU setting, chosen by step cost: at batch 128 on one core of the 2-core machine, 0.155 GFLOP
    and 0.61 s per step (≈ 210 img/s) against 1.49 s for 32/64/64 widths and 7.3 s for the paper's widths;
    ``paper`` holds the official values (60 epochs, 64/128/256, decoder 64/32).
    """

    width: int = 16  # stem / first-stage channels (official 64)
    feat_channels: int = 32  # encoder output channels = post-conv / class-embedding channels (official 128)
    latent_channels: int = 32  # Gaussian latent channels per position (official 256)
    dec_widths: tuple[int, ...] = (16, 8)  # decoder channels (official 64, 32)
    downsample: int = 2  # spatial factor of the latent grid (a power of 2; official 2: 32×32 → 16×16)
    epochs: int = 10  # per stage (official 60 for CIFAR-10, 100 for CIFAR-100)
    batch_size: int = 128
    lr: float = 5e-3  # Adam, cosine to 0 over the epochs
    grad_clip: float = 5.0  # gradient-norm clip (0 = off)
    kl_weight: float = 0.01  # w in w·max(KL, κ)
    latent: Literal["sample", "mean"] = "sample"  # z at purification: sampled (official) or the posterior mean
    eval_batch_size: int = 512  # images per purification batch (bounds memory)
    # Switching median filter on the input before stage 1 (threshold on [0, 1]; 0 = off; not in the paper), as
    # ECLIPSE's ``despeckle``: removes OPS-style one-pixel shortcuts, leaves clean images almost untouched
    # (:mod:`unpoison.defenses.purify.despeckle`).
    despeckle: float = 0.0
    # ECLIPSE's corruption compensation carried by the purified set as its training-time transform (random grayscale
    # with probability gray_p, then N(0, noise_std²), redrawn every epoch); both 0 = none, as the paper. Not in the
    # paper; D-VAE turns it on by default (DVAEConfig), the plain RCVAE leaves it off (unmeasured there).
    gray_p: float = 0.0
    noise_std: float = 0.0
    seed: int = 0
    device: str = "auto"
    # Train and purify in NHWC memory format (as the classifier trainer does): oneDNN's NHWC kernels make a training
    # step at the CPU widths 1.25× faster on the 2-core machine (1.09× at the paper's; benchmarks/dvae_speed.py).
    # Images with one channel stay NCHW (see ``_VAEPurifier._memory_format``).
    channels_last: bool = True
    # torch.compile the training step's forward and loss (inductor; needs a C++ compiler on the CPU): 1.24x per step
    # at the CPU widths, 1.33x at the paper's (benchmarks/dvae_speed.py --compile), a whole fit 1,383 → 1,151 s on
    # the 2-core machine (docs/dvae.md, "Cost"). Off by default: it needs the compiler, compiles per stage and per
    # new batch shape, and changes the float rounding (a 0.5-point accuracy spread on clean data).
    compile: bool = False
    checkpoint_dir: str = ""  # resumable state (safetensors + JSON) per stage; "" = none
    progress: bool = False  # rich progress bars

    def validate(self) -> None:
        for name in ("width", "feat_channels", "latent_channels"):
            check(getattr(self, name) >= 1, f"{name} must be ≥ 1; got {getattr(self, name)}")
        check(len(self.dec_widths) >= 1 and all(d >= 1 for d in self.dec_widths),
              f"dec_widths must be one or more positive integers; got {list(self.dec_widths)}")
        d = self.downsample
        check(d >= 2 and d & (d - 1) == 0, f"downsample must be a power of 2 ≥ 2; got {d}")
        check(self.epochs >= 1, f"epochs must be ≥ 1; got {self.epochs}")
        check(self.batch_size >= 2, f"batch_size must be ≥ 2; got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0; got {self.lr}")
        check(self.grad_clip >= 0, f"grad_clip must be ≥ 0; got {self.grad_clip}")
        check(self.kl_weight >= 0, f"kl_weight must be ≥ 0; got {self.kl_weight}")
        check(self.eval_batch_size >= 1, f"eval_batch_size must be ≥ 1; got {self.eval_batch_size}")
        check(0.0 <= self.despeckle < 1.0, f"despeckle must be in [0, 1) (0 = off); got {self.despeckle}")
        check_compensation(self.gray_p, self.noise_std)

    def fingerprint_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_dict().items() if k not in _RUNTIME}
        for k in ("despeckle", *_TRANSFORM_ONLY):  # off: the key of checkpoints written before they existed
            if not d.get(k):
                d.pop(k, None)
        return d


_PAPER_ARCH = {"width": 64, "feat_channels": 128, "latent_channels": 256, "dec_widths": [64, 32], "downsample": 2,
               "epochs": 60, "batch_size": 128, "lr": 5e-3, "grad_clip": 5.0, "kl_weight": 0.01}


@dataclasses.dataclass
class DVAEConfig(VAEConfig):
    # Stage 1 trains 20 epochs and stage 2 at most 10 (stage2_epochs below; official 60 for both). Measured on
    # 2026-12-03 (docs/dvae.md, "Stage-1 epochs") against 10/10: OPS 56.64 → 68.57%, LSP 72.30 → 72.53%, AR
    # 75.01 → 73.09%, clean data 75.27 → 74.71%; average recovery over LSP/AR/OPS 0.802 → 0.852, fit 19.8 → 25.7 min.
    epochs: int = 20
    kappa1: float = 1.0  # stage-1 KL target (nats per latent position; official 1.0)
    # Stage-2 KL target (official scripts 3.0; ``paper`` preset). The CPU default 6.0 is measured (docs/dvae.md, κ₂
    # table): at CPU widths a looser stage-2 rate keeps detail the classifier needs (clean cost 6.9 vs 10.7 points,
    # AR recovery 0.878 vs 0.829, LSP 0.845 vs 0.707) at some cost on OPS (54.8% vs 59.6%); 10 goes too far (OPS 45.6%).
    kappa2: float = 6.0
    # z at purification. The official code samples it (``paper`` preset); the CPU default is the posterior mean,
    # measured on one machine on one day (docs/dvae.md, "Sampled or mean latent"): clean data 75.27% vs 73.90%,
    # OPS 56.64% vs 54.60%, with less of OPS's δ left (0.382 vs 0.395). A sample adds noise the classifier must
    # learn through.
    latent: Literal["sample", "mean"] = "mean"
    stages: int = 2  # 1 = stage-1 only (ablation): output x₁ = clamp(x − p̂)
    # The most epochs stage 2 trains: it trains min(epochs, stage2_epochs) (0 = no cap, both stages ``epochs``).
    # Stage 1 must learn a per-class shortcut as p̂ before stage 2 can drop it, and at CPU widths it needs more
    # epochs for that than stage 2 needs to reconstruct (docs/dvae.md, "Stage-1 epochs": on OPS, p̂ holds 6% of the
    # pixel change at 10 epochs, 54% at 20). A cap, not a count, so a short run (epochs=3) stays 3/3.
    stage2_epochs: int = 10
    # Channel multiplier of stage 2's VAE (width, feat_channels, dec_widths; latent_channels stay, so κ₂ bounds the
    # same rate): a wider stage 2 reconstructs more per nat. 1 = stage 1's widths (the paper uses one size for both).
    stage2_scale: float = 1.0
    # Times stage 2's purification x ← x̂(x − p̂₂(x)) is applied at purification (not in the paper, which applies it
    # once). It trains nothing, so every stage checkpoint is reused. Measured on 2026-12-07 on one set of stages
    # (docs/dvae.md, "Stage-2 passes and a denoising stage 2"): TAP 43.70 → 48.75 → 52.03% at 1/2/3 passes, mostly
    # by blurring (δ left 0.486 → 0.453, PSNR to the clean images 23.1 → 21.0 dB); clean data 74.94 → 74.75% at 2;
    # SEP 61.95 → 65.31% but REM 70.47 → 69.11% at 2; the class-wise poisons lose (LSP 75.63 → 73.68%, AR −0.24,
    # OPS −0.72). Off: paired over six attacks on one VM, mean recovery 0.718 → 0.722, not the 0.85 needed.
    stage2_passes: int = 1
    # σ of Gaussian noise on stage 2's training inputs, its loss still reconstructing the un-noised x₁ (a denoising
    # VAE; not in the paper; 0 = off). A denoiser learns to contract the directions that isotropic noise probes and
    # its training data does not use, which is where a sample-wise adversarial poison lives. Measured on 2026-12-07
    # (same section): σ = 0.05 lifts TAP 43.70 → 54.94% (δ left 0.486 → 0.419) and costs clean data 0.8 points
    # (74.94 → 74.13%); SEP 61.95 → 63.91% (63.74% at σ = 0.1), but REM 70.47 → 68.14%, whose δ is made to survive
    # perturbations of the image; the class-wise poisons lose (LSP 75.63 → 73.78%, AR 75.14 → 72.79%, OPS −0.72).
    # Off: paired over six attacks on one VM, mean recovery 0.718 → 0.721, not the 0.85 needed.
    stage2_denoise: float = 0.0
    # ECLIPSE's compensation on the purified set (VAEConfig; the ``paper`` preset turns it off). Measured on
    # 2026-12-06 in same-image pairs, the same stages with and without it (docs/dvae.md, "Compensation"): it helped in
    # the first ten pairs (clean data 73.26 → 75.03%, TAP 44.64 → 51.03%, REM 65.64 → 70.42%, OPS 70.50 → 73.13%, by
    # 0.6 to 1.4 points on SEP, LSP, AR, EM; paired recovery over seven attacks 0.720 → 0.776); of three later pairs
    # LSP gained 1.0, URP 0.1 and clean data at seed 1 lost 0.6 (74.33 → 73.71%). The paper's σ = 0.05 costs clean
    # accuracy here (72.62%), p = 0.6 ≈ p = 0.4 (75.34%; 74.30% at seed 1). Factor by factor (docs/dvae.md, "A third
    # seed"): the noise lifts TAP (Intel stages: none 42.15, gray only 40.36, noise only 46.60, both 46.37, σ = 0.05
    # 54.42%) and grayscale lowers the clean cost (mean over three seeds: none 6.81, gray only 5.38, both 6.27, σ = 0.05
    # 8.34 points), so no setting meets both targets and the default stays in the middle.
    gray_p: float = 0.4
    noise_std: float = 0.025
    p_energy: float = 0.002  # perturbation-energy hinge max(mean p̂², p_energy)
    hinge_start: float = 1 / 6  # fraction of the epochs before the energy hinge switches on (official 10 of 60)
    perturbation_grid: str = ""  # if set, purify() writes the per-class perturbation estimates as a PNG here

    PRESETS = {"paper": {**_PAPER_ARCH, "stage2_epochs": 0, "kappa1": 1.0, "kappa2": 3.0, "latent": "sample",
                         "stages": 2, "p_energy": 0.002, "despeckle": 0.0, "gray_p": 0.0,
                         "noise_std": 0.0, "stage2_passes": 1, "stage2_denoise": 0.0}}

    def validate(self) -> None:
        super().validate()
        check(self.kappa1 >= 0 and self.kappa2 >= 0, f"kappa1 and kappa2 must be ≥ 0; got {self.kappa1}, {self.kappa2}")
        check(self.stages in (1, 2), f"stages must be 1 or 2; got {self.stages}")
        check(self.stage2_epochs >= 0, f"stage2_epochs must be ≥ 0 (0 = no cap); got {self.stage2_epochs}")
        check(self.stage2_scale > 0, f"stage2_scale must be > 0; got {self.stage2_scale}")
        check(self.stage2_passes >= 1, f"stage2_passes must be ≥ 1; got {self.stage2_passes}")
        check(self.stage2_denoise >= 0, f"stage2_denoise must be ≥ 0; got {self.stage2_denoise}")
        check(self.p_energy >= 0, f"p_energy must be ≥ 0; got {self.p_energy}")
        check(0 <= self.hinge_start <= 1, f"hinge_start must be in [0, 1]; got {self.hinge_start}")

    def stage_epochs(self, stage: int) -> int:
        """Epochs stage ``stage`` trains: ``epochs``, stage 2 capped at ``stage2_epochs`` (0 = no cap)."""
        return min(self.epochs, self.stage2_epochs) if stage == 2 and self.stage2_epochs else self.epochs

    def stage_arch(self, stage: int) -> "DVAEConfig":
        """The config stage ``stage``'s network is built from: stage 2's channels scaled by ``stage2_scale``."""
        s = self.stage2_scale
        if stage != 2 or s == 1.0:
            return self
        w = lambda c: max(1, round(c * s))  # noqa: E731
        return dataclasses.replace(self, width=w(self.width), feat_channels=w(self.feat_channels),
                                   dec_widths=tuple(w(d) for d in self.dec_widths))


# --------------------------------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


def _n_down(factor: int) -> int:
    return int(round(math.log2(factor)))


class Encoder(nn.Module):
    """conv3×3 + BN + ReLU, two BasicBlocks at ``width``, then one stride-2 BasicBlock per factor of 2 of downsampling
    (the front of a CIFAR ResNet-18 up to ``layer2[0]`` for the official setting)."""

    def __init__(self, in_channels: int, width: int, feat_channels: int, downsample: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                   nn.ReLU(inplace=True), BasicBlock(width, width), BasicBlock(width, width)]
        n = _n_down(downsample)
        c = width
        for i in range(n):
            nxt = feat_channels if i == n - 1 else min(feat_channels, width * 2 ** (i + 1))
            layers.append(BasicBlock(c, nxt, stride=2))
            c = nxt
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """ConvT(4, 2, 1) up per factor of 2, then ConvT 3×3 layers with InstanceNorm + ReLU, and a last ConvT 3×3 to the
    image channels; ``sigmoid`` for the clean estimate, none for the (unbounded) perturbation decoder."""

    def __init__(self, feat_channels: int, dec_widths: tuple[int, ...], out_channels: int, downsample: int,
                 sigmoid: bool) -> None:
        super().__init__()
        d0 = dec_widths[0]
        layers: list[nn.Module] = [nn.ConvTranspose2d(feat_channels, d0, 4, 2, 1)]
        for _ in range(_n_down(downsample) - 1):  # extra up-steps for larger factors
            layers += [nn.InstanceNorm2d(d0), nn.ReLU(inplace=True), nn.ConvTranspose2d(d0, d0, 4, 2, 1)]
        c = d0
        for d in (d0, *dec_widths[1:]):
            layers += [nn.ConvTranspose2d(c, d, 3, 1, 1), nn.InstanceNorm2d(d), nn.ReLU(inplace=True)]
            c = d
        layers.append(nn.ConvTranspose2d(c, out_channels, 3, 1, 1))
        if sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w)


def kl_map(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, I)) of each image at each latent position, summed over channels: (N, h, w) nats."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) ‖ N(0, I)) per latent position, summed over channels, averaged over batch and positions (nats)."""
    return kl_map(mu, logvar).mean()


class RateVAE(nn.Module):
    """The rate-constrained VAE: encoder → 1×1 μ / log σ² heads → z → 1×1 post-conv w → decoder with sigmoid → x̂."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], cfg: VAEConfig) -> None:
        super().__init__()
        h, w = image_size
        f = cfg.downsample
        if h % f or w % f:
            raise UnpoisonError(f"image size {h}×{w} is not divisible by downsample={f}")
        self.grid = (h // f, w // f)
        self.encoder = Encoder(in_channels, cfg.width, cfg.feat_channels, f)
        self.fc_mu = nn.Conv2d(cfg.feat_channels, cfg.latent_channels, 1)
        self.fc_var = nn.Conv2d(cfg.feat_channels, cfg.latent_channels, 1)
        self.post = nn.Conv2d(cfg.latent_channels, cfg.feat_channels, 1)
        self.decoder = Decoder(cfg.feat_channels, tuple(cfg.dec_widths), in_channels, f, sigmoid=True)

    def encode(self, x: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(w, μ, log σ²); ``noise`` (shaped like μ) samples z = μ + σ·noise, None takes z = μ."""
        h = self.encoder(x)
        mu, logvar = self.fc_mu(h), self.fc_var(h)
        z = mu if noise is None else mu + (0.5 * logvar).exp() * noise
        return self.post(z), mu, logvar

    def latent_shape(self, n: int) -> tuple[int, int, int, int]:
        return (n, self.fc_mu.out_channels, *self.grid)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        w, mu, logvar = self.encode(x, noise)
        return {"xhat": self.decoder(w), "w": w, "mu": mu, "logvar": logvar}


class DVAE(RateVAE):
    """Adds the learnable class-wise spatial embedding u_y (N(0,1) init, not charged by the KL) and the unbounded
    perturbation decoder: p̂ = D_p(u_y + w(z))."""

    def __init__(self, in_channels: int, image_size: tuple[int, int], num_classes: int, cfg: VAEConfig) -> None:
        super().__init__(in_channels, image_size, cfg)
        self.class_emb = nn.Parameter(torch.randn(num_classes, cfg.feat_channels, *self.grid))
        self.decoder_p = Decoder(cfg.feat_channels, tuple(cfg.dec_widths), in_channels, cfg.downsample, sigmoid=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if y is None:
            raise UnpoisonError("D-VAE needs the labels y")
        out = super().forward(x, y, noise)
        out["p"] = self.decoder_p(self.class_emb[y] + out["w"])
        return out


def vae_loss(out: dict[str, torch.Tensor], x: torch.Tensor, kappa: float, kl_weight: float,
             p_energy: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MSE(x̂, x) + w·max(KL, κ) [+ MSE(clamp(x̂ + p̂), x) if the model has p̂] [+ max(mean p̂², p_energy) if given].

    Returns the total and the detached parts (rec, kl, and rec_p / energy when present).
    """
    rec = F.mse_loss(out["xhat"], x)
    kl = gaussian_kl(out["mu"], out["logvar"])
    total = rec + kl_weight * torch.clamp(kl, min=kappa)
    parts = {"rec": rec.detach(), "kl": kl.detach()}
    if "p" in out:
        p = out["p"]
        rec_p = F.mse_loss(torch.clamp(out["xhat"] + p, 0, 1), x)
        energy = p.pow(2).mean()
        total = total + rec_p
        parts |= {"rec_p": rec_p.detach(), "energy": energy.detach()}
        if p_energy is not None:
            total = total + torch.clamp(energy, min=p_energy)
    parts["loss"] = total.detach()
    return total, parts


# --------------------------------------------------------------------------------------------------------------------
# Seeded, resumable training of one stage
# --------------------------------------------------------------------------------------------------------------------
def forward_loss(model: RateVAE, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor, kappa: float,
                  kl_weight: float, p_energy: float | None,
                  target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training step's forward pass and loss (the part ``compile=True`` hands to torch.compile); the loss
    reconstructs ``target`` (default: the input ``x`` itself)."""
    return vae_loss(model(x, y, noise), x if target is None else target, kappa, kl_weight, p_energy)


def cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """CosineAnnealingLR(T_max = epochs, eta_min = 0) stepped per epoch, as the official code: a pure function."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _noise(shape: tuple[int, ...], g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=g).to(device)  # drawn on the CPU: the same stream on every device


def _save_stage(path: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    write_run_checkpoint(path, {f"model.{k}": v for k, v in model.state_dict().items()}, meta, optimizer=opt)


def _load_stage(path: Path, model: nn.Module, opt: torch.optim.Optimizer, fp: str) -> dict[str, Any] | None:
    found = read_run_checkpoint(path, fp)
    if found is None:
        return None
    meta, tensors = found
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    load_optimizer_state(opt, tensors, next(model.parameters()).device)
    return meta


class _VAEPurifier(Purifier):
    """Shared machinery: device, data tensors, fingerprints, the per-stage training loop and batched inference."""

    config: VAEConfig

    def __init__(self, config: Config | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.models: dict[int, RateVAE] = {}
        self.stage_info: dict[int, dict[str, Any]] = {}
        self.perturbations: dict[int, np.ndarray] = {}  # stage → per-class mean p̂ (K, C, H, W), [0,1] units
        self.complete = False
        self._fit_fp: str | None = None
        self._fit_outputs: dict[int, torch.Tensor] = {}
        self._class_names: list[str] | None = None

    # --- to override --------------------------------------------------------------------------------------------
    def _build(self, stage: int, ds: ImageDataset) -> RateVAE:
        raise NotImplementedError

    def _kappa(self, stage: int) -> float:
        raise NotImplementedError

    def _p_energy(self, stage: int, epoch: int) -> float | None:
        return None

    def _input_noise(self, stage: int) -> float:
        """σ of the Gaussian noise added to stage ``stage``'s training inputs (the loss still reconstructs the
        un-noised images: a denoising VAE); 0 = none."""
        return 0.0

    def _n_stages(self) -> int:
        return 1

    def _stage_output(self, stage: int, model: RateVAE, x: torch.Tensor, y: torch.Tensor,
                      noise: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Purified batch in [0,1] and the forward pass on the stage input (for PSNR and the class means of p̂)."""
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return select_device(self.config.device)

    def _input(self, ds: ImageDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1's input as a real NCHW uint8 copy and the labels; the despeckle filter first when it is on.

        A real copy: for 1-channel images the NHWC view is ambiguous (contiguous and channels_last at once), and
        oneDNN's conv weight-gradient then corrupts the heap (measured: segfault with torch 2.14.1 on CPU)."""
        if self.config.despeckle > 0:
            ds = ds.with_images(despeckle(ds.images, self.config.despeckle))
        x, y = ds.tensors()
        return x.clone(memory_format=torch.contiguous_format), y

    def _memory_format(self, channels: int) -> torch.memory_format:
        """NHWC (``channels_last``) when the config asks for it and the images have more than one channel, else NCHW.

        One-channel images stay NCHW: their NHWC view is ambiguous (the same strides as NCHW), the case in which
        oneDNN's weight gradient crashed (``_input``)."""
        nhwc = self.config.channels_last and channels > 1
        return torch.channels_last if nhwc else torch.contiguous_format

    def _data_fp(self, ds: ImageDataset) -> str:
        return str(derive_seed(len(ds), ds.image_shape, ds.num_classes, ds.labels.tobytes(),
                               ds.images[:: max(1, len(ds) // 64)].tobytes()))

    # Config fields that only a later stage depends on ({stage: fields}), and fields no stage's training depends on.
    # Stage k's fingerprint chains stage k − 1's with its own fields, so a run that changes only a later stage's
    # fields (a κ₂ sweep, stages=1 → 2) reuses the earlier stages' checkpoints from the same checkpoint_dir.
    later_stage_fields: dict[int, tuple[str, ...]] = {}
    no_stage_fields: tuple[str, ...] = ()
    # Later-stage fields added after checkpoints were written: at this value they stay out of the stage's key, so the
    # checkpoints written before the field existed keep theirs.
    unkeyed_at: dict[str, Any] = {}

    @classmethod
    def unshared_fields(cls) -> frozenset[str]:
        """Config fields stage 1 does not depend on: a run changing only these reuses stage 1's checkpoint."""
        return frozenset(f for fields in cls.later_stage_fields.values() for f in fields) | set(cls.no_stage_fields)

    def _run_fp(self, ds: ImageDataset) -> str:
        """What every stage depends on: the method, the shared config and the data (the checkpoint dir's owner)."""
        skip = self.unshared_fields()
        shared = {k: v for k, v in self.config.fingerprint_dict().items() if k not in skip}
        return str(derive_seed(self.name, json.dumps(shared, sort_keys=True), self._data_fp(ds)))

    def _epochs(self, stage: int) -> int:
        """Training epochs of stage ``stage`` (every stage trains ``epochs`` unless a subclass says otherwise)."""
        return self.config.epochs

    def _stage_fp(self, run_fp: str, stage: int) -> str:
        fp = f"{run_fp}/1"
        for k in range(2, stage + 1):
            own = {f: getattr(self.config, f) for f in self.later_stage_fields.get(k, ())
                   if not (f in self.unkeyed_at and getattr(self.config, f) == self.unkeyed_at[f])}
            if self._epochs(k) != self.config.epochs:  # only then: a stage trained ``epochs`` keeps its old key
                own["epochs"] = self._epochs(k)
            fp = str(derive_seed(fp, k, json.dumps(own, sort_keys=True)))
        return fp

    def _stage_path(self, ckpt: Path, stage: int, fp: str) -> Path:
        """Stage 1 has one file per checkpoint dir; later stages one per fingerprint, so their variants coexist."""
        if stage == 1:
            return ckpt / "stage1.safetensors"
        return ckpt / f"stage{stage}-{int(fp):016x}.safetensors"  # fp of a stage ≥ 2 is one derive_seed integer

    def _ckpt(self) -> Path | None:
        return Path(self.config.checkpoint_dir) if self.config.checkpoint_dir else None

    @staticmethod
    def _check_data(ds: ImageDataset, f: int) -> None:
        if len(ds) < 2:
            raise UnpoisonError(f"need at least 2 images to train a VAE; got {len(ds)}")
        h, w, _ = ds.image_shape
        if h % f or w % f:
            raise UnpoisonError(f"image size {h}×{w} is not divisible by downsample={f}")

    # --- training -----------------------------------------------------------------------------------------------
    def _train_stage(self, stage: int, ds: ImageDataset, x_u8: torch.Tensor, y: torch.Tensor, fp: str,
                     budget: list[int | None]) -> RateVAE | None:
        """Train stage ``stage`` on uint8 images; None when ``budget`` (epochs left before a simulated interruption)
        runs out first. The state is saved after every epoch when a checkpoint dir is set."""
        cfg, dev = self.config, self.device
        torch.manual_seed(derive_seed(self.name, "init", cfg.seed, stage))
        fmt = self._memory_format(x_u8.shape[1])
        model = self._build(stage, ds).to(dev, memory_format=fmt)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=0.0)
        ckpt = self._ckpt()
        path = self._stage_path(ckpt, stage, fp) if ckpt else None
        meta = _load_stage(path, model, opt, fp) if path else None
        start = int(meta["epoch"]) if meta else 0
        history: list[dict[str, float]] = meta["history"] if meta else []
        n = len(x_u8)
        bs = min(cfg.batch_size, n)
        steps = n // bs  # drop_last, as the official loader
        kappa = self._kappa(stage)
        epochs = self._epochs(stage)
        sigma = self._input_noise(stage)
        bar = Bar(cfg.progress, steps * epochs, f"{self.name} stage {stage}", done=start * steps)
        step_loss = compiled_or_error(forward_loss) if cfg.compile else forward_loss
        model.train()
        try:
            for epoch in range(start, epochs):
                if budget[0] is not None:
                    if budget[0] <= 0:
                        return None
                    budget[0] -= 1
                t0 = time.perf_counter()
                g = torch_generator(self.name, "train", cfg.seed, stage, epoch)
                perm = torch.randperm(n, generator=g).to(dev)
                lr = cosine_lr(cfg.lr, epoch, epochs)
                for group in opt.param_groups:
                    group["lr"] = lr
                p_energy = self._p_energy(stage, epoch)
                bar.update(0, description=f"{self.name} stage {stage} · epoch {epoch + 1}")
                sums: dict[str, torch.Tensor] = {}
                for s in range(steps):
                    idx = perm[s * bs:(s + 1) * bs]
                    xb = x_u8[idx].float().div_(255.0).contiguous(memory_format=fmt)
                    inp, target = xb, None
                    if sigma > 0:  # drawn only then, so the stream of the default is unchanged
                        inp, target = (xb + sigma * _noise(tuple(xb.shape), g, dev)).contiguous(memory_format=fmt), xb
                    noise = _noise(model.latent_shape(len(idx)), g, dev)
                    loss, parts = step_loss(model, inp, y[idx], noise, kappa, cfg.kl_weight, p_energy, target)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    for k, v in parts.items():
                        sums[k] = sums.get(k, 0) + v
                    bar.update(1, info=f"loss {float(loss.detach()):.4f}" if bar.enabled and s % 10 == 0 else None)
                log = {k: round(float(v) / steps, 6) for k, v in sums.items()}
                log |= {"epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - t0, 3)}
                history.append(log)
                if path is not None:
                    _save_stage(path, model, opt, {"epoch": epoch + 1, "fingerprint": fp, "history": history})
        finally:
            bar.close()
        model.eval()
        self.stage_info[stage] = {"kappa": kappa, "epochs": epochs, "final": history[-1] if history else {},
                                  "train_seconds": round(sum(h["seconds"] for h in history), 2),
                                  "resumed_from_epoch": start}
        return model

    # --- inference ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _apply_stage(self, stage: int, model: RateVAE, x_u8: torch.Tensor, y: torch.Tensor,
                     num_classes: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Batched purification of uint8 (N, C, H, W) images; returns uint8 output (on the CPU) and statistics."""
        cfg, dev = self.config, self.device
        model.eval()
        fmt = self._memory_format(x_u8.shape[1])
        model.to(memory_format=fmt)  # a model loaded or trained elsewhere may be in the other format
        n = len(x_u8)
        out_u8 = torch.empty_like(x_u8, device="cpu")
        g = torch_generator(self.name, "purify", cfg.seed, stage)
        se, kl_sum, p_sum, p_cnt = 0.0, 0.0, None, torch.zeros(num_classes, dtype=torch.float64)
        bar = Bar(cfg.progress, n, f"{self.name} purify {stage}")
        try:
            for s in range(0, n, cfg.eval_batch_size):
                xb = x_u8[s:s + cfg.eval_batch_size].to(dev).float().div_(255.0).contiguous(memory_format=fmt)
                yb = y[s:s + cfg.eval_batch_size].to(dev)
                noise = (lambda shape: _noise(shape, g, dev)) if cfg.latent == "sample" else None
                res, fwd = self._stage_output(stage, model, xb, yb, noise)
                res = res.clamp(0, 1)
                out_u8[s:s + len(xb)] = (res * 255).round().to(torch.uint8).cpu()
                se += float(F.mse_loss(fwd["xhat"], xb, reduction="sum")) / xb[0].numel()
                kl_sum += float(gaussian_kl(fwd["mu"], fwd["logvar"])) * len(xb)
                if "p" in fwd:
                    pc = fwd["p"].double().cpu()
                    p_sum = torch.zeros(num_classes, *pc.shape[1:], dtype=torch.float64) if p_sum is None else p_sum
                    p_sum.index_add_(0, yb.cpu(), pc)
                    p_cnt += torch.bincount(yb.cpu(), minlength=num_classes).double()
                bar.update(len(xb))
        finally:
            bar.close()
        stats = {"psnr_xhat": round(psnr_from_mse(se / n), 3), "kl": round(kl_sum / n, 4)}
        if p_sum is not None:
            means = (p_sum / p_cnt.clamp(min=1).view(-1, 1, 1, 1)).float().numpy()
            self.perturbations[stage] = means
            stats["p_rms"] = round(float(np.sqrt((means ** 2).mean())), 5)
        return out_u8, stats

    # --- Purifier API -------------------------------------------------------------------------------------------
    def fit(self, ds: ImageDataset, clean: ImageDataset | None = None, *,
            stop_after: int | None = None) -> "_VAEPurifier":
        """Train every stage (each stage's input is the previous stage's output on ``ds``).

        ``stop_after`` ends training after that many epochs in total, as an interruption would (for tests); with a
        ``checkpoint_dir`` the next ``fit`` resumes exactly where it stopped.
        """
        super().fit(ds, clean)
        cfg = self.config
        self._check_data(ds, cfg.downsample)
        fp = self._run_fp(ds)
        ckpt = self._ckpt()
        if ckpt is not None:
            ckpt.mkdir(parents=True, exist_ok=True)
            state_path = ckpt / "state.json"
            if state_path.exists():
                try:
                    prev = json.loads(state_path.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError) as e:
                    raise UnpoisonError(f"checkpoint state {state_path} is unreadable: {e}") from None
                if prev.get("fingerprint") != fp:
                    raise UnpoisonError(f"checkpoint dir {ckpt} belongs to another run (config, seed or data "
                                        "differ); delete it or choose another checkpoint_dir")
            write_json_atomic(state_path, {"method": self.name, "fingerprint": fp, "config": cfg.to_dict()})
        x, y = self._input(ds)
        dev = self.device
        budget: list[int | None] = [stop_after]
        self.complete = False
        self._fit_outputs = {}
        cur = x
        for stage in range(1, self._n_stages() + 1):
            model = self._train_stage(stage, ds, cur.to(dev), y.to(dev), self._stage_fp(fp, stage), budget)
            if model is None:
                return self
            self.models[stage] = model
            out, stats = self._apply_stage(stage, model, cur, y, ds.num_classes)
            self.stage_info[stage]["output"] = stats
            self._fit_outputs[stage] = out
            cur = out
        self.complete = True
        self._fit_fp = self._data_fp(ds)
        return self

    def purify(self, ds: ImageDataset) -> ImageDataset:
        self._require_fit()
        t0 = time.perf_counter()
        if self._fit_fp == self._data_fp(ds):  # the transductive case: outputs were computed at the end of fit
            out = self._fit_outputs[self._n_stages()]
        else:
            out, y = self._input(ds)
            for stage in range(1, self._n_stages() + 1):
                out, stats = self._apply_stage(stage, self.models[stage], out, y, ds.num_classes)
                self.stage_info[stage]["output"] = stats
        self._class_names = list(ds.class_names)
        self._after_purify()
        images = out.permute(0, 2, 3, 1).contiguous().numpy()
        info = {str(k): v for k, v in self.stage_info.items()}
        new = ds.with_images(images, purified=self.record(stages=info,
                                                          purify_seconds=round(time.perf_counter() - t0, 2)))
        return attach_compensation(new, compensation_spec(self.config.gray_p, self.config.noise_std))

    def _require_fit(self) -> None:
        if not self.complete:
            raise UnpoisonError(f"{self.name}: call fit() first (or finish an interrupted fit)")

    def stage_output(self, stage: int) -> np.ndarray:
        """The output of ``stage`` on the fitted set as uint8 (N, H, W, C), e.g. x₁ = x − p̂ of D-VAE's stage 1
        (kept by ``fit`` anyway: each stage trains on the previous one's output)."""
        self._require_fit()
        if stage not in self._fit_outputs:
            raise UnpoisonError(f"{self.name}: stage must be one of {sorted(self._fit_outputs)}; got {stage}")
        return self._fit_outputs[stage].permute(0, 2, 3, 1).contiguous().numpy()

    def _after_purify(self) -> None:
        pass


# --------------------------------------------------------------------------------------------------------------------
# D-VAE purifier
# --------------------------------------------------------------------------------------------------------------------
@register_purifier
class DVAEPurifier(_VAEPurifier):
    name = "dvae"
    config_class = DVAEConfig
    summary = "D-VAE: two-stage purification with rate-constrained, disentangling VAEs (Yu et al. 2024); no clean data"

    config: DVAEConfig
    # Stage 1 trains the same whatever stage 2 does. The latent at purification (and the batching of its sampled noise)
    # changes no training, only the stage outputs: so it is stage 2's field (it trains on stage 1's output), and
    # switching latent=sample/mean retrains stage 2 only.
    later_stage_fields = {2: ("kappa2", "latent", "eval_batch_size", "stage2_scale", "stage2_denoise")}
    unkeyed_at = {"stage2_scale": 1.0, "stage2_denoise": 0.0}
    # stage2_epochs enters stage 2's key through _epochs (as the effective count), so 0 and ``epochs`` share a key
    # stage2_passes changes only the last stage's output, which no stage trains on
    no_stage_fields = ("stages", "stage2_epochs", "stage2_passes", *_TRANSFORM_ONLY)

    def _build(self, stage: int, ds: ImageDataset) -> RateVAE:
        h, w, c = ds.image_shape
        return DVAE(c, (h, w), ds.num_classes, self.config.stage_arch(stage))

    def _kappa(self, stage: int) -> float:
        return self.config.kappa1 if stage == 1 else self.config.kappa2

    def _input_noise(self, stage: int) -> float:
        return self.config.stage2_denoise if stage == 2 else 0.0

    def _n_stages(self) -> int:
        return self.config.stages

    def _epochs(self, stage: int) -> int:
        return self.config.stage_epochs(stage)

    def _p_energy(self, stage: int, epoch: int) -> float | None:
        cfg = self.config  # the hinge switches on after hinge_start of this stage's own epochs
        return cfg.p_energy if epoch >= math.floor(cfg.hinge_start * self._epochs(stage) + 1e-9) else None

    def _stage_output(self, stage: int, model: RateVAE, x: torch.Tensor, y: torch.Tensor,
                      noise: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = len(x)
        fwd = model(x, y, noise(model.latent_shape(n)) if noise else None)
        if stage == 1:
            return x - fwd["p"], fwd  # x₁ = clamp(x − p̂) (the caller clamps and quantises)
        # stage 2: x₂ = clamp(x̂(x₁ − p̂₂)), the subtraction not clamped before re-encoding (the reference formula);
        # with stage2_passes = k the same operator k times (x̂ is a sigmoid output, so already in [0, 1])
        z = (lambda: noise(model.latent_shape(n))) if noise else (lambda: None)
        cur, p = x, fwd["p"]
        for k in range(self.config.stage2_passes):
            if k:  # the next pass's p̂₂ is estimated on this pass's output
                p = model(cur, y, z())["p"]
            cur = model(cur - p, y, z())["xhat"]
        return cur, fwd

    def _after_purify(self) -> None:
        if self.config.perturbation_grid:
            self.export_perturbations(self.config.perturbation_grid)

    def export_perturbations(self, path: str | Path, class_names: list[str] | None = None) -> Path:
        """Write the per-class mean perturbation estimates p̂ (one row per stage) as a PNG grid.

        Each tile is shown as 0.5 + p̂ / (2·max|p̂|) over the whole grid, so tiles are comparable; the scale is in
        the title."""
        if not self.perturbations:
            raise UnpoisonError("no perturbation estimates yet: run fit() (and purify()) first")
        class_names = class_names if class_names is not None else self._class_names
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path = Path(path)
        if path.suffix.lower() != ".png":
            raise UnpoisonError(f"perturbation grid must be a .png file; got {path}")
        stages = sorted(self.perturbations)
        k = self.perturbations[stages[0]].shape[0]
        cols = min(k, 10)
        rows_per = math.ceil(k / cols)
        scale = max(float(np.abs(p).max()) for p in self.perturbations.values()) or 1.0
        fig, axes = plt.subplots(rows_per * len(stages), cols, figsize=(1.3 * cols, 1.45 * rows_per * len(stages)),
                                 squeeze=False)
        for si, st in enumerate(stages):
            p = self.perturbations[st]
            for j in range(rows_per * cols):
                ax = axes[si * rows_per + j // cols][j % cols]
                ax.axis("off")
                if j >= k:
                    continue
                img = np.transpose(0.5 + p[j] / (2 * scale), (1, 2, 0)).clip(0, 1)
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                          vmin=0, vmax=1, interpolation="nearest")
                name = class_names[j] if class_names and j < len(class_names) else str(j)
                ax.set_title(f"s{st} {name}"[:14], fontsize=7)
        fig.suptitle(f"D-VAE per-class p̂ (mid-grey = 0, full scale ±{scale * 255:.1f}/255)", fontsize=8)
        fig.tight_layout()
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        return path


__all__ = ["VAEConfig", "DVAEConfig", "BasicBlock", "Encoder", "Decoder", "RateVAE", "DVAE", "gaussian_kl", "kl_map",
           "vae_loss", "cosine_lr", "DVAEPurifier"]
