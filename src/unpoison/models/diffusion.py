"""A readable one-file Gaussian diffusion (improved DDPM, Nichol & Dhariwal 2021), as ECLIPSE and AVATAR use it.

Clean-room, from the description in ``shared/reference/eclipse.md`` and the improved-DDPM paper (no code copied).

- **Network:** diffusers' :class:`~diffusers.UNet2DModel`, configured by name (:data:`UNET_PRESETS`); it outputs 2·C
  channels: ε and v, the interpolation of the log-variance between β_t and β̃_t (learned variance).
- **Schedule:** cosine ᾱ(t) with β capped at 0.999 and T = 4000 by default. The β values come from diffusers'
  ``DDPMScheduler(beta_schedule="squaredcos_cap_v2")``, which implements exactly that; everything derived from them
  (posterior coefficients, clipped posterior log-variance, respacing) diffusers does not expose and is written here.
- **Time input:** the model sees t·1000/T (improved DDPM's ``rescale_timesteps``), and after respacing the
  *original* timestep of each kept step.
- **Loss (hand-written; diffusers has no learned-variance hybrid loss):** L_simple (ε-MSE, mean over pixels) +
  λ·T·L_t with λ = 0.001, where L_t is the per-timestep VLB term (KL of the Gaussian posterior, or the discretized
  Gaussian decoder NLL at t = 0, in bits per dimension) computed with a stop-gradient on ε so that it trains only the
  variance. λ·T = T/1000 is improved DDPM's ``RESCALED_MSE`` factor.
- **Sampling:** closed-form q(x_t | x_0); one ancestral step p(x_{t-1} | x_t) with learned variance; respaced
  sampling over a subset of timesteps with recomputed β (improved DDPM's respacing); DDIM (η = 0). All of them can
  start from an intermediate t* (purification: noise a real image to t*, then denoise).
- **EMA:** :class:`EMA`, hand-written (see its docstring for why not ``AveragedModel``).
- **Files:** :func:`save_diffusion` / :func:`load_diffusion` — safetensors weights plus JSON metadata that rebuilds
  the UNet from a whitelist of keyword arguments. Never pickle.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from unpoison.errors import UnpoisonError
from unpoison.utils.io import read_weights, to_jsonable, write_weights

# --------------------------------------------------------------------------------------------------------------------
# UNet presets
# --------------------------------------------------------------------------------------------------------------------
# channels: per-level widths; blocks: residual blocks per level; attention: levels (0 = full resolution) whose blocks
# get self-attention (so "16×16 and 8×8" of a 32×32 input is levels 1 and 2, and stays so for any input size);
# mid_attention: self-attention in the middle block (improved DDPM has it).
UNET_PRESETS: dict[str, dict[str, Any]] = {
    # improved DDPM's CIFAR-10 model as ECLIPSE's config builds it: 128 ch, mults (1,2,2,2), 3 res blocks,
    # attention at 16×16 and 8×8, 4 heads of 64 channels, scale-shift norm: 52.5M parameters (test_diffusion checks).
    "paper": {"channels": (128, 256, 256, 256), "blocks": 3, "attention": (1, 2), "mid_attention": True,
              "head_dim": 64, "groups": 32},
    # CPU presets (no attention: at these widths and 32×32 it costs more than it gives; see docs/eclipse.md)
    "small": {"channels": (64, 128, 128), "blocks": 2, "attention": (), "mid_attention": False,
              "head_dim": 64, "groups": 32},
    # the CPU default (0.93M): 4.6 ms per image and reverse step, 13.8 ms per image and training step on one core
    # (32×32, batch 64); (32, 64, 64) costs 2.5× that and (32, 64) with 1 block 2×, measured the same way
    "cpu": {"channels": (16, 32, 64), "blocks": 2, "attention": (), "mid_attention": False,
            "head_dim": 32, "groups": 8},
    "tiny": {"channels": (16, 32), "blocks": 1, "attention": (), "mid_attention": False, "head_dim": 16,
             "groups": 8},
}

_UNET_KWARGS = ("sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block",
                "down_block_types", "up_block_types", "attention_head_dim", "norm_num_groups",
                "resnet_time_scale_shift", "add_attention", "dropout", "flip_sin_to_cos", "freq_shift")


def unet_kwargs(preset: str | dict[str, Any], in_channels: int, image_size: tuple[int, int],
                dropout: float = 0.0) -> dict[str, Any]:
    """Keyword arguments of :class:`~diffusers.UNet2DModel` for a named preset (or a dict of the preset fields)."""
    if isinstance(preset, str):
        if preset not in UNET_PRESETS:
            raise UnpoisonError(f"unknown UNet preset {preset!r}; known: {', '.join(UNET_PRESETS)}")
        p = UNET_PRESETS[preset]
    else:
        p = preset
    channels = tuple(int(c) for c in p["channels"])
    levels = len(channels)
    h, w = image_size
    f = 2 ** (levels - 1)
    if h % f or w % f:
        raise UnpoisonError(f"image size {h}×{w} is not divisible by {f}, which a {levels}-level UNet needs")
    groups = int(p["groups"])
    bad = [c for c in channels if c % groups]
    if bad:
        raise UnpoisonError(f"UNet channels {list(channels)} must be multiples of groups={groups}")
    attn = set(int(a) for a in p["attention"])
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if i in attn else "UpBlock2D" for i in reversed(range(levels)))
    return {"sample_size": [int(h), int(w)], "in_channels": in_channels, "out_channels": 2 * in_channels,
            "block_out_channels": list(channels), "layers_per_block": int(p["blocks"]),
            "down_block_types": list(down), "up_block_types": list(up), "attention_head_dim": int(p["head_dim"]),
            "norm_num_groups": groups, "resnet_time_scale_shift": "scale_shift",
            "add_attention": bool(p["mid_attention"]), "dropout": float(dropout),
            "flip_sin_to_cos": True, "freq_shift": 0}  # [cos, sin] sinusoidal embedding, as improved DDPM


class DiffusionUNet(nn.Module):
    """``UNet2DModel`` behind a plain ``forward(x, t_model) -> (B, 2C, H, W)`` (t_model: the rescaled time input)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        unknown = sorted(set(kwargs) - set(_UNET_KWARGS))
        if unknown:
            raise UnpoisonError(f"unexpected UNet argument(s): {', '.join(unknown)}")
        self.kwargs = dict(kwargs)
        k = dict(kwargs)
        for key in ("block_out_channels", "down_block_types", "up_block_types", "sample_size"):
            k[key] = tuple(k[key])
        self.unet = UNet2DModel(**k)

    @property
    def in_channels(self) -> int:
        return int(self.kwargs["in_channels"])

    def forward(self, x: torch.Tensor, t_model: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t_model).sample


def build_unet(preset: str | dict[str, Any], in_channels: int, image_size: tuple[int, int],
               dropout: float = 0.0) -> DiffusionUNet:
    return DiffusionUNet(unet_kwargs(preset, in_channels, image_size, dropout))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------------------------------
# Schedule and the diffusion process
# --------------------------------------------------------------------------------------------------------------------
def cosine_betas(T: int) -> torch.Tensor:
    """β_t of the cosine schedule (ᾱ(t) = cos²(((t/T + 0.008)/1.008)·π/2), β capped at 0.999), float64,
    from diffusers."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2").betas.to(torch.float64)


def _t_index(values: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """values[t] as x's dtype on x's device, shaped (B, 1, 1, 1) for broadcasting."""
    out = values.to(x.device)[t.to(x.device)].to(x.dtype)
    return out.reshape(-1, *([1] * (x.dim() - 1)))


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of 8-bit data x in [-1, 1] under N(mean, e^{2·log_scale}) integrated over x's bin of width 2/255;
    the edge bins take the whole tail. Uses the exact normal CDF (improved DDPM uses a tanh approximation of it)."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centered + 1.0 / 255))
    cdf_min = torch.special.ndtr(inv_std * (centered - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GaussianDiffusion:
    """The forward and reverse processes over a (possibly respaced) set of timesteps.

    ``alphas_cumprod[i]`` is ᾱ of the i-th kept step; ``timestep_map[i]`` the original timestep it stands for (what
    the model is told); ``num_train_timesteps`` the original T (for the time rescaling t·1000/T). Index 0 is the
    first noising step (improved DDPM's t = 0, the paper's t = 1). Buffers are float64 and cast on use.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, timestep_map: torch.Tensor | None = None,
                 num_train_timesteps: int | None = None) -> None:
        ac = alphas_cumprod.to(torch.float64).cpu()
        n = len(ac)
        self.num_timesteps = n
        self.num_train_timesteps = int(num_train_timesteps or n)
        self.timestep_map = (torch.arange(n) if timestep_map is None else timestep_map.to(torch.long).cpu())
        self.alphas_cumprod = ac
        prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        self.alphas_cumprod_prev = prev
        self.betas = 1.0 - ac / prev
        self.sqrt_alphas_cumprod = ac.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ac).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / ac).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / ac - 1.0).sqrt()
        # posterior q(x_{t-1} | x_t, x_0): variance β̃_t, mean coef1·x_0 + coef2·x_t
        self.posterior_variance = self.betas * (1.0 - prev) / (1.0 - ac)
        # β̃_0 = 0: its log is replaced by β̃_1's (improved DDPM's "clipped" log-variance)
        pv = self.posterior_variance
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv[1:2], pv[1:]]) if n > 1 else self.betas)
        self.posterior_mean_coef1 = self.betas * prev.sqrt() / (1.0 - ac)
        self.posterior_mean_coef2 = (1.0 - prev) * (1.0 - self.betas).sqrt() / (1.0 - ac)
        self.log_betas = torch.log(self.betas)

    @classmethod
    def cosine(cls, T: int = 4000) -> "GaussianDiffusion":
        if T < 2:
            raise UnpoisonError(f"diffusion_steps must be ≥ 2; got {T}")
        return cls(torch.cumprod(1.0 - cosine_betas(T), 0), num_train_timesteps=T)

    # --- respacing ----------------------------------------------------------------------------------------------
    def respace(self, use_timesteps: Sequence[int]) -> "GaussianDiffusion":
        """The process over a sorted subset of this one's steps, β recomputed so the kept ᾱ are unchanged."""
        keep = sorted(set(int(t) for t in use_timesteps))
        if not keep or keep[0] < 0 or keep[-1] >= self.num_timesteps:
            raise UnpoisonError(f"respaced timesteps must lie in [0, {self.num_timesteps - 1}]")
        idx = torch.tensor(keep)
        return GaussianDiffusion(self.alphas_cumprod[idx], self.timestep_map[idx], self.num_train_timesteps)

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the network is told: the original timestep, rescaled to [0, 1000)."""
        return self.timestep_map.to(t.device)[t].to(torch.float32) * (1000.0 / self.num_train_timesteps)

    # --- forward process ----------------------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε in closed form."""
        return (_t_index(self.sqrt_alphas_cumprod, t, x0) * x0
                + _t_index(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor,
                    t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, variance, clipped log-variance) of q(x_{t-1} | x_t, x_0)."""
        mean = _t_index(self.posterior_mean_coef1, t, xt) * x0 + _t_index(self.posterior_mean_coef2, t, xt) * xt
        return mean, _t_index(self.posterior_variance, t, xt), _t_index(self.posterior_log_variance_clipped, t, xt)

    # --- reverse process ----------------------------------------------------------------------------------------
    def predict_xstart(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (_t_index(self.sqrt_recip_alphas_cumprod, t, xt) * xt
                - _t_index(self.sqrt_recipm1_alphas_cumprod, t, xt) * eps)

    def p_mean_variance(self, model: ModelFn, xt: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True,
                        model_output: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Mean, learned log-variance and x̂_0 of p(x_{t-1} | x_t).

        log σ² = frac·log β_t + (1 − frac)·log β̃_t (clipped), frac = (v + 1)/2; x̂_0 from ε̂ (clipped to [-1, 1] if
        asked); mean = the posterior mean at x̂_0.
        """
        out = model(xt, self.model_time(t)) if model_output is None else model_output
        c = xt.shape[1]
        if out.shape[1] != 2 * c:
            raise UnpoisonError(f"the diffusion model outputs {out.shape[1]} channels; expected {2 * c} (ε and v)")
        eps, v = out[:, :c], out[:, c:]
        min_log = _t_index(self.posterior_log_variance_clipped, t, xt)
        max_log = _t_index(self.log_betas, t, xt)
        frac = (v + 1.0) / 2.0
        log_var = frac * max_log + (1.0 - frac) * min_log
        x0 = self.predict_xstart(xt, t, eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _, _ = self.q_posterior(x0, xt, t)
        return {"mean": mean, "log_variance": log_var, "pred_xstart": x0, "eps": eps}

    def p_sample(self, model: ModelFn, xt: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                 clip_denoised: bool = True) -> torch.Tensor:
        """One ancestral step: x_{t-1} = μ_θ + σ_θ·z, with no noise at t = 0."""
        out = self.p_mean_variance(model, xt, t, clip_denoised)
        nonzero = (t != 0).to(xt.dtype).reshape(-1, *([1] * (xt.dim() - 1)))
        return out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise

    def ddim_step(self, model: ModelFn, xt: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True) -> torch.Tensor:
        """One deterministic DDIM step (η = 0): x_{t-1} = √ᾱ_{t-1}·x̂_0 + √(1−ᾱ_{t-1})·ε̂, ε̂ re-derived
        from x̂_0."""
        out = self.p_mean_variance(model, xt, t, clip_denoised)
        x0 = out["pred_xstart"]
        eps = ((_t_index(self.sqrt_recip_alphas_cumprod, t, xt) * xt - x0)
               / _t_index(self.sqrt_recipm1_alphas_cumprod, t, xt))
        prev = _t_index(self.alphas_cumprod_prev, t, xt)
        return prev.sqrt() * x0 + (1.0 - prev).sqrt() * eps

    # --- training -----------------------------------------------------------------------------------------------
    def vb_term(self, model_output: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_t in bits per dimension, per sample: KL(q(x_{t-1}|x_t,x_0) ‖ p_θ(x_{t-1}|x_t)) for t > 0, the
        discretized Gaussian decoder's NLL of x_0 at t = 0. Not clipped (as in training)."""
        true_mean, _, true_logvar = self.q_posterior(x0, xt, t)
        out = self.p_mean_variance(lambda *_: model_output, xt, t, clip_denoised=False, model_output=model_output)
        kl = _mean_flat(normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, out["mean"],
                                                              0.5 * out["log_variance"])) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    def training_losses(self, model: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                        vlb_weight: float = 0.001) -> dict[str, torch.Tensor]:
        """The hybrid loss per sample: ‖ε − ε̂‖² (mean over pixels) + λ·T·L_t, with ε̂ detached inside L_t.

        Written by hand (diffusers has no learned-variance hybrid loss). λ·T with λ = 0.001 equals improved DDPM's
        ``RESCALED_MSE`` factor T/1000. T is the original number of steps even when t is drawn from a sub-range.
        """
        xt = self.q_sample(x0, t, noise)
        out = model(xt, self.model_time(t))
        c = x0.shape[1]
        eps, v = out[:, :c], out[:, c:]
        mse = _mean_flat((noise - eps) ** 2)
        vb = self.vb_term(torch.cat([eps.detach(), v], dim=1), x0, xt, t)  # stop-gradient on the mean
        loss = mse + vlb_weight * self.num_train_timesteps * vb
        return {"loss": loss, "mse": mse, "vb": vb}


# --------------------------------------------------------------------------------------------------------------------
# Purification: noise to t*, denoise back to 0
# --------------------------------------------------------------------------------------------------------------------
def spaced_steps(start: int, steps: int) -> list[int]:
    """``steps`` timesteps evenly spread over [0, start], always including both ends (start first when reversed)."""
    if steps < 1:
        raise UnpoisonError(f"steps must be ≥ 1; got {steps}")
    if steps >= start + 1:
        return list(range(start + 1))
    if steps == 1:
        return [start]
    return sorted({round(i * start / (steps - 1)) for i in range(steps)})


def reverse_process(diffusion: GaussianDiffusion, t_star: int, sampler: str = "ancestral",
                    steps: int = 0) -> tuple[GaussianDiffusion, list[int]]:
    """(process to run, its step indices from high to low) for denoising from original step index ``t_star - 1``.

    ancestral: every step t*−1 … 0 (the official ECLIPSE loop). respaced / ddim: ``steps`` steps spread over
    [0, t*−1] with β recomputed (respaced keeps learned-variance ancestral sampling; ddim is deterministic).
    """
    start = t_star - 1
    if not 0 <= start < diffusion.num_timesteps:
        raise UnpoisonError(f"t_star must be in [1, {diffusion.num_timesteps}]; got {t_star}")
    if sampler == "ancestral" or (steps <= 0) or steps >= t_star:
        keep = list(range(start + 1))
    else:
        keep = spaced_steps(start, steps)
    proc = diffusion.respace(keep) if len(keep) != diffusion.num_timesteps else diffusion
    return proc, list(reversed(range(len(keep))))


def autocast_model(model: ModelFn, dtype: torch.dtype | None) -> ModelFn:
    """The UNet's forward under autocast, its output back in fp32: the hybrid loss, the posterior and the sampler
    then run in fp32 (bf16's 8-bit mantissa is too coarse for log-variances and 1/255-sized steps)."""
    if dtype is None:
        return model

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=dtype):
            return model(x, t).float()

    return fn


@torch.no_grad()
def purify_batch(model: ModelFn, diffusion: GaussianDiffusion, x0: torch.Tensor, t_star: int, sampler: str,
                 steps: int, generator: torch.Generator) -> torch.Tensor:
    """x0 in [-1, 1] → noised in closed form to step t*−1 of the original process → denoised to [-1, 1].

    Noise is drawn on ``generator``'s device (the CPU for a reproducible stream on every device) and moved to x0's.
    """
    if sampler not in ("ancestral", "respaced", "ddim"):
        raise UnpoisonError(f"sampler must be ancestral, respaced or ddim; got {sampler!r}")
    proc, order = reverse_process(diffusion, t_star, sampler, steps)

    def randn() -> torch.Tensor:
        return torch.randn(x0.shape, generator=generator, device=generator.device).to(x0.device, x0.dtype)

    b = x0.shape[0]
    start = torch.full((b,), t_star - 1, dtype=torch.long, device=x0.device)
    x = diffusion.q_sample(x0, start, randn())
    for i in order:
        t = torch.full((b,), i, dtype=torch.long, device=x0.device)
        if sampler == "ddim":
            x = proc.ddim_step(model, x, t)
        else:
            x = proc.p_sample(model, x, t, randn() if i > 0 else torch.zeros_like(x))
    return x.clamp(-1.0, 1.0)


# --------------------------------------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------------------------------------
class EMA:
    """Exponential moving average of a model's parameters: ema ← d·ema + (1 − d)·θ after every step.

    Hand-written rather than ``torch.optim.swa_utils.AveragedModel``: the state is just a dict of tensors named like
    the model's, so it goes into the same safetensors checkpoint and into the exported model file as is (no deep-copied
    module, no ``n_averaged`` buffer, no pickled state), and the update is a single fused ``_foreach_lerp_``. It starts
    from the initial weights, as improved DDPM's does (no warm-up).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise UnpoisonError(f"ema decay must be in [0, 1); got {decay}")
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().clone() for _, p in model.named_parameters()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = [p.detach() for _, p in model.named_parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if n not in state]
        if missing:
            raise UnpoisonError(f"EMA state lacks {len(missing)} parameter(s), first {missing[0]!r}")
        for n, s in zip(self.names, self.shadow, strict=True):
            s.copy_(state[n])

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for (_, p), s in zip(model.named_parameters(), self.shadow, strict=True):
            p.copy_(s)


# --------------------------------------------------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------------------------------------------------
FORMAT = "unpoison-diffusion"
VERSION = 1


def save_diffusion(model: DiffusionUNet, path: str | os.PathLike[str], info: dict[str, Any]) -> None:
    """Weights to ``path`` (.safetensors) and metadata (the UNet's kwargs, the schedule, ``info``) in it
    and beside it."""
    meta = to_jsonable({"format": FORMAT, "version": VERSION, "unet": model.kwargs, **info})
    write_weights(path, model.state_dict(), meta)


def load_diffusion(path: str | os.PathLike[str],
                   device: str | torch.device = "cpu") -> tuple[DiffusionUNet, dict[str, Any]]:
    """Read a model written by :func:`save_diffusion`: ``(model in eval mode on device, metadata)``."""
    path = Path(path)
    tensors, raw = read_weights(path, "diffusion model")
    if raw is None:
        raise UnpoisonError(f"{path} is a safetensors file but not an unpoison diffusion model (no metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UnpoisonError(f"{path} has invalid metadata: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("unet"), dict):
        raise UnpoisonError(f"{path} is not an unpoison diffusion model (format is not {FORMAT!r})")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise UnpoisonError(f"{path} uses diffusion model format version {meta.get('version')!r}; "
                            f"this reads up to {VERSION}")
    try:
        model = DiffusionUNet(meta["unet"])
    except (TypeError, ValueError) as e:  # UnpoisonError is a ValueError
        raise UnpoisonError(f"{path}: cannot rebuild the UNet: {str(e).splitlines()[0]}") from None
    expected = model.state_dict()
    if set(expected) != set(tensors) or any(tensors[k].shape != v.shape for k, v in expected.items()):
        raise UnpoisonError(f"{path}: weights do not match the UNet its metadata describes")
    model.load_state_dict(tensors)
    return model.to(device).eval(), meta


__all__ = ["UNET_PRESETS", "unet_kwargs", "build_unet", "DiffusionUNet", "count_params", "cosine_betas",
           "GaussianDiffusion", "normal_kl", "discretized_gaussian_log_likelihood", "spaced_steps", "reverse_process",
           "purify_batch", "EMA", "save_diffusion", "load_diffusion"]
