"""ECLIPSE (Wang et al., ESORICS 2024,
"Expunging Clean-label Indiscriminate Poisons via Sparse Diffusion Purification").

Clean-room reimplementation from the description in ``shared/reference/eclipse.md`` (no code copied).

1. **Sparse set:** ``sparse_fraction`` × N images drawn at random from the clean data the user supplies (labels are
   not used; never a test split — the CLI refuses one), enlarged by ``copies`` exact duplicates, no augmentation:
   (copies + 1)·B training images, as the paper's D_A = D_s ∪ R(D_s, M).
2. **Diffusion model:** an unconditional improved-DDPM UNet (:mod:`unpoison.models.diffusion`) trained on that set with
   the hybrid loss, AdamW and EMA weights. Seeded per step (batch, timesteps and noise come from a generator keyed by
   the step), checkpointed as safetensors + JSON, so a resumed run equals an uninterrupted one. Saved as safetensors
   + JSON and reusable on other data through ``model_path`` (training is then skipped).
3. **Purification:** every image is noised in closed form to t* (paper 100 of T = 4000: noise std ≈ 0.05 on the
   [-1, 1] scale; the CPU default is 300, σ ≈ 0.13, chosen by measurement for the small denoiser) and denoised back
   to 0 — the official 100 ancestral steps with learned variance (``sampler=ancestral``), or fewer respaced
   ancestral steps, or DDIM. Streamed in batches (memory is bounded by ``purify_batch_size``); output rounded to
   uint8 (the official code truncates).
   Before noising, a switching median filter (``despeckle``, :mod:`unpoison.defenses.purify.despeckle`) replaces
   isolated impulse pixels by their neighbours' median. Not in the paper (off in ``paper``): it is what removes
   OPS's one-pixel shortcut, which noise small enough to keep clean images usable cannot.
4. **Corruption compensation:** random grayscale (paper p = 0.4; CPU default 0.6), then Gaussian noise (paper
   σ = 0.05; CPU default 0.025; both CPU values chosen by measurement), clamped, re-quantised to 8 bits. Not applied
   here: it is attached to the purified dataset as ``meta["train_transform"]`` and the trainer applies it afresh to
   every batch of every epoch, as the official code does (``train_on(..., train_transform="once")`` applies it a
   single time, as the paper's Algorithm 1 reads).

The CPU defaults (a 0.93M-parameter UNet, 1,600 steps at batch 128 and lr 1e-3 on timesteps < 500 only, t* = 400,
5 respaced steps) are set by step cost and measured accuracy: fit + purify of the 20,000-image ``cpu`` pool takes
26–28 minutes on 2 cores (a 2-core Intel Xeon VM: 22 min to fit, 4–5 min to purify at t* = 400 eager;
docs/eclipse.md, "Five reverse steps instead of ten"; ``train_steps=800`` halves the fit); ``paper`` holds the
published setting.
See docs/eclipse.md and benchmarks/eclipse_{bench,speed}.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset
from unpoison.defenses.base import Purifier, register_purifier
from unpoison.defenses.purify.despeckle import despeckle_tensor
from unpoison.errors import UnpoisonError
from unpoison.models.diffusion import (EMA, UNET_PRESETS, DiffusionUNet, GaussianDiffusion, autocast_model, build_unet,
                                       count_params, load_diffusion, purify_batch, reverse_process, save_diffusion)
from unpoison.training.transforms import TRAIN_TRANSFORMS
from unpoison.utils.device import autocast_dtype, compiled_or_error, precision_name, select_device
from unpoison.utils.io import (load_optimizer_state, read_run_checkpoint, write_json_atomic,
                               write_run_checkpoint)
from unpoison.utils.progress import Bar
from unpoison.utils.seed import derive_seed, numpy_rng, torch_generator

# --------------------------------------------------------------------------------------------------------------------
# Corruption compensation (the training-time transform)
# --------------------------------------------------------------------------------------------------------------------
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's Grayscale


def eclipse_compensation(gray_p: float = 0.4, noise_std: float = 0.05, quantize: bool = True):  # noqa: ANN201
    """x (B, C, H, W) in [0, 1] → grayscale with probability ``gray_p`` per image (RGB only), plus N(0, σ²) per
    element (independently per channel, so gray images get coloured noise, as the official code), clamped to [0, 1],
    re-quantised to the 8-bit grid if ``quantize``. Vectorised; all randomness from the generator passed in."""
    check_compensation(gray_p, noise_std)

    def apply(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        gdev = generator.device
        if gray_p > 0 and x.shape[1] == 3:
            pick = (torch.rand(x.shape[0], generator=generator, device=gdev) < gray_p).to(x.device)
            w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            gray = (x * w).sum(1, keepdim=True).expand_as(x)
            x = torch.where(pick.view(-1, 1, 1, 1), gray, x)
        if noise_std > 0:
            x = x + noise_std * torch.randn(x.shape, generator=generator, device=gdev).to(x.device, x.dtype)
        x = x.clamp(0.0, 1.0)
        if quantize:
            x = (x * 255.0).round() / 255.0
        return x

    return apply


TRAIN_TRANSFORMS.register("eclipse_compensation", eclipse_compensation)


def check_compensation(gray_p: float, noise_std: float) -> None:
    """The compensation's ranges, checked alike wherever a config or a set's metadata names them."""
    check(0.0 <= gray_p <= 1.0, f"gray_p must be in [0, 1]; got {gray_p}")
    check(noise_std >= 0, f"noise_std must be ≥ 0; got {noise_std}")


def compensation_spec(gray_p: float, noise_std: float) -> dict[str, Any] | None:
    """The ``meta["train_transform"]`` entry a purified set carries for this compensation; None when both are 0.
    Any purifier may attach it (D-VAE does as an option), so ``unpoison train`` applies it as it does ECLIPSE's."""
    if gray_p == 0 and noise_std == 0:
        return None
    return {"name": "eclipse_compensation", "params": {"gray_p": gray_p, "noise_std": noise_std}}


def attach_compensation(purified: ImageDataset, spec: dict[str, Any] | None) -> ImageDataset:
    """Set the training-time transform of a freshly purified set (its own meta copy) to ``spec``, or drop it when
    None: a transform inherited from the input no longer applies to the purified images."""
    if spec is None:
        purified.meta.pop("train_transform", None)
    else:
        purified.meta["train_transform"] = spec
    return purified


# --------------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------------
# Fields that do not change the trained model (so a checkpoint stays valid when they change).
_NOT_TRAINING = ("t_star", "sampler", "steps", "despeckle", "gray_p", "noise_std", "purify_batch_size", "model_path",
                 "save_model", "checkpoint_dir", "checkpoint_every", "device", "progress", "compile")

_PAPER = {"sparse_fraction": 0.04, "sparse_size": 0, "copies": 4, "t_star": 100, "sampler": "ancestral", "steps": 0,
          "diffusion_steps": 4000, "unet": "paper", "dropout": 0.0, "train_steps": 250_000, "batch_size": 128,
          "lr": 1e-4, "weight_decay": 0.0, "ema_decay": 0.9999, "vlb_weight": 0.001, "train_t_max": 0,
          "gray_p": 0.4, "noise_std": 0.05, "despeckle": 0.0}


@dataclasses.dataclass
class EclipseConfig(Config):
    """ECLIPSE's parameters. Defaults: the CPU setting; ``paper``: the published one (batch size, optimiser and
    dropout are not published; improved DDPM's defaults are used)."""

    # sparse set
    sparse_fraction: float = 0.04  # B = fraction × size of the poisoned set (paper 4%)
    sparse_size: int = 0  # B given directly (0 = use sparse_fraction)
    copies: int = 4  # M exact duplicates added to the sparse set: (M + 1)·B images (paper M = 4)
    # purification
    # noise to step t* of T (paper 100). 400 by measurement (docs/eclipse.md, "t* = 400 at σ = 0.025", 2026-12-05,
    # one diffusion model, one classifier seed, despeckle on, σ = 0.025): against t* = 300 average recovery 0.798 →
    # 0.820 over seven attacks (TAP 0.579 → 0.696, SEP 0.639 → 0.764; AR, EM, REM, OPS lose 0.9–1.2 points) at
    # clean-data cost 4.35 points against 4.01 (3.36–4.35 over three classifier seeds, mean 3.81). Earlier steps:
    # 100 → 200 → 300 (sections "Larger t*", "With the filter").
    t_star: int = 400
    sampler: Literal["ancestral", "respaced", "ddim"] = "respaced"  # paper: ancestral, every step t*-1 … 0
    # reverse steps for respaced / ddim (ignored by ancestral). 5 by measurement (docs/eclipse.md, "Five reverse
    # steps instead of ten", 2026-12-07, the default model from t* = 400, eager): purification 228-313 s per 20,000
    # images against 678 s with 10 (fit + purify 26-28 min against 33.7 on a 2-core Intel Xeon VM), seven-attack
    # average recovery 0.847 / 0.851 / 0.853 at classifier seeds 0 / 1 / 2 (mean 0.850) against 0.853 / 0.846 / 0.861
    # (0.853; TAP 1.6 points lower on the mean), clean-data cost 4.08 against 3.84 (mean over three classifier seeds);
    # 10 until this change of 2026-12-07 (--set steps=10 when the time budget allows)
    steps: int = 5
    # not in the paper (0 there): switching median filter before noising, threshold on the [0, 1] scale (0 = off).
    # It removes OPS's one-pixel shortcut, which no useful t* can: OPS 31.47% → 75.63% at t* = 200; the filter alone
    # changes 0.037% of clean pixels and cost nothing measurable on clean data (docs/eclipse.md, "Despeckle")
    despeckle: float = 0.15
    # diffusion model
    diffusion_steps: int = 4000  # T of the cosine schedule
    unet: str = "cpu"  # UNet preset: paper (52.5M) | small | cpu | tiny
    dropout: float = 0.0
    # optimiser steps (paper 250K). 1,600 by measurement (docs/eclipse.md, "The 1,600-step model at the default
    # t* = 400", 2026-12-07, seed 0): against 800 steps average recovery over seven attacks 0.831 → 0.853 (0.849
    # over classifier seeds 0 and 1; TAP +3.7, SEP +4.2, LSP +1.1 points; REM, EM, OPS within 0.3) at a clean-data
    # cost of 3.84 points (mean of three classifier seeds) against 4.25. ≈ 22 min at batch 128 on 2 Intel cores
    # (0.84 s a step)
    train_steps: int = 1600
    batch_size: int = 128
    # AdamW. Paper setting 1e-4 learns nothing in a short run: after 120 steps (batch 32, cpu UNet, t < 100) ε-MSE at
    # t = 99 was 0.99 with 1e-4 (x̂₀ no better than the noisy input) and 0.52 with 1e-3 (x̂₀ error halved).
    lr: float = 1e-3
    # "constant" (the paper's and the default) or "cosine": lr · ½(1 + cos(π·step/train_steps)), decayed to 0 at the
    # last step. Set per step from the step index, so resume needs no scheduler state; with "cosine" train_steps
    # becomes a training setting (a longer run is another schedule). Measured at the defaults (docs/eclipse.md, "The
    # same training compute spent another way", seed 0): TAP 62.81 against 62.94%, SEP 68.00 against 68.51%, and a
    # higher final training loss (0.284 against 0.269): the 1,600-step run is still underfit, and decaying slows it
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = 0.0
    # EMA: 0.9999 averages over ~10K steps; after 1,600 steps 0.9999^1600 ≈ 85% of the EMA would still be the random
    # initial weights. 0.99 averages over the last ~100 steps and leaves 0.99^1600 ≈ 1e-7 of the initialisation.
    ema_decay: float = 0.99
    vlb_weight: float = 0.001  # λ of the hybrid loss
    # train only timesteps < train_t_max (0 = all T): purification visits t < t* only (the default t* = 400 starts at
    # index 399). Training on more than t* visits costs nothing measurable (at t* = 100: clean PSNR 34.01 against
    # 34.08 dB for a model trained on t < 100, docs/eclipse.md "Larger t*"), so one model serves every t* ≤ 500,
    # the default and --preset deep alike; the 1,600-step default was measured with a model trained on t < 500
    train_t_max: int = 500
    # "range": draw training timesteps uniformly from [0, train_t_max); "visited": only from the ones purification
    # runs the model at (t* − 1 and the respaced steps below it, from t_star / sampler / steps), which then become
    # training settings and bind the model to them. Not in the paper. Measured at the defaults (docs/eclipse.md,
    # "Training only the timesteps purification visits", 2026-12-07, seed 0): a better denoiser in image space
    # (clean PSNR 27.49 against 27.01 dB) but seven-attack average recovery 0.845 against 0.847 and clean-data cost
    # 4.28 against 4.54: nothing measurable, so "range" stays, as one such model serves every t* ≤ 500 and step count
    train_timesteps: Literal["range", "visited"] = "range"
    # corruption compensation (training-time transform); both 0 = none (diffusion purification only)
    # paper 0.4. 0.6 (inside the paper's own sweep, 0.3–0.7) by measurement at t* = 400 (docs/eclipse.md, "The
    # compensation at t* = 400", 2026-12-06, one model, training-only variants of the same purified sets): LSP +3.4
    # points, REM +1.2, AR/OPS/EM/TAP within 0.3, SEP −1.5; average recovery over seven attacks 0.820 → 0.831 at a
    # clean-data cost of 4.61 against 4.35 points. 0.8 lifts LSP further but costs 4.94 on clean data.
    gray_p: float = 0.6
    # paper 0.05. 0.025 by measurement at t* = 300 (docs/eclipse.md, "Where the clean-data cost comes from",
    # 2026-12-05, one model, one seed): the diffusion's own noise at t* = 300 already does much of the paper's noise's
    # work, so 0.05 mostly costs accuracy. Against 0.05: clean-data cost 4.01 against 5.98 points, average recovery
    # over seven attacks 0.798 against 0.791 (AR, OPS, EM, REM up 1.0-3.1 points; SEP −2.7, TAP −4.3)
    noise_std: float = 0.025
    # runtime
    # bf16 autocast of the UNet's forward (losses and the sampler's arithmetic stay fp32). "off" until its
    # purification quality is measured; "auto" = bf16 on CUDA and AMX CPUs (1.89x per training step measured there)
    amp: Literal["auto", "off", "bf16"] = "off"
    purify_batch_size: int = 64  # images per purification batch (bounds memory; 64 was the fastest per image on CPU)
    # torch.compile the UNet's forward for purification (inductor; needs a C++ compiler on the CPU): 1.25x per
    # no-grad forward of the cpu UNet, after 45 s of compilation (benchmarks/unet_format_speed.py --compile); a
    # training step gains nothing (1.01x), so training stays eager. Off by default; changes only the rounding.
    compile: bool = False
    seed: int = 0
    model_path: str = ""  # reuse a saved diffusion model: training is skipped
    # write the trained model here (.safetensors + .json); default <checkpoint_dir>/model.safetensors
    save_model: str = ""
    checkpoint_dir: str = ""  # resumable training state (safetensors + JSON); "" = none
    checkpoint_every: int = 100  # steps between checkpoints
    device: str = "auto"
    progress: bool = True  # rich progress bars

    # "deep": purify from t* = 500 with grayscale p = 0.4 (the same model as the default) for sample-wise
    # adversarial poisons (TAP, SEP), which the default t* = 400 leaves in part. Measured with 1,600 steps
    # (docs/eclipse.md, "The 1,600-step model at the default t* = 400"): against t* = 400 (10 steps) TAP +4.9, SEP +1.9
    # points, LSP, AR, OPS, EM, REM 0.6-1.8 points lower (seven-attack average recovery 0.852 against 0.853), at
    # 1.5 points more clean-data cost (mean over three classifier seeds 5.31 against 3.84, over the 5-point target).
    # Pinned to the 10 reverse steps it was measured with.
    PRESETS = {"paper": dict(_PAPER), "deep": {"t_star": 500, "gray_p": 0.4, "steps": 10}}

    def validate(self) -> None:
        check(0.0 < self.sparse_fraction <= 1.0, f"sparse_fraction must be in (0, 1]; got {self.sparse_fraction}")
        check(self.sparse_size >= 0, f"sparse_size must be ≥ 0; got {self.sparse_size}")
        check(self.copies >= 0, f"copies must be ≥ 0; got {self.copies}")
        check(self.diffusion_steps >= 2, f"diffusion_steps must be ≥ 2; got {self.diffusion_steps}")
        check(1 <= self.t_star <= self.diffusion_steps,
              f"t_star must be in [1, diffusion_steps={self.diffusion_steps}]; got {self.t_star}")
        check(self.steps >= 0, f"steps must be ≥ 0; got {self.steps}")
        check(0.0 <= self.despeckle < 1.0, f"despeckle must be in [0, 1) (0 = off); got {self.despeckle}")
        check(self.sampler == "ancestral" or self.steps >= 1, f"sampler {self.sampler} needs steps ≥ 1")
        check(self.unet in UNET_PRESETS, f"unet must be one of {', '.join(UNET_PRESETS)}; got {self.unet!r}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1); got {self.dropout}")
        check(self.train_steps >= 1, f"train_steps must be ≥ 1; got {self.train_steps}")
        check(self.batch_size >= 1, f"batch_size must be ≥ 1; got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0; got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay must be ≥ 0; got {self.weight_decay}")
        check(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1); got {self.ema_decay}")
        check(self.vlb_weight >= 0, f"vlb_weight must be ≥ 0; got {self.vlb_weight}")
        check(0 <= self.train_t_max <= self.diffusion_steps,
              f"train_t_max must be in [0, diffusion_steps={self.diffusion_steps}] (0 = all); got {self.train_t_max}")
        # fail before training, not after it: purification starts at t*, which the model must have been trained on
        check(bool(self.model_path) or self.train_timesteps == "visited" or self.train_t_max == 0
              or self.t_star <= self.train_t_max,
              f"t_star={self.t_star} is above train_t_max={self.train_t_max}: the model would never see the timesteps "
              "purification starts from; set train_t_max ≥ t_star (0 = all)")
        check_compensation(self.gray_p, self.noise_std)
        check(self.purify_batch_size >= 1, f"purify_batch_size must be ≥ 1; got {self.purify_batch_size}")
        check(self.checkpoint_every >= 1, f"checkpoint_every must be ≥ 1; got {self.checkpoint_every}")
        check(not self.save_model.lower().endswith(".json"), f"save_model must not end in .json; got {self.save_model}")

    def training_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_TRAINING}
        if self.train_timesteps == "visited":  # the timesteps trained on then depend on the sampler's settings
            d["visited"] = self.visited_timesteps()
        if self.lr_schedule == "constant":  # left out so that models and checkpoints made before it keep their key
            del d["lr_schedule"]
        return d

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step`` (0-based)."""
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / self.train_steps))

    def visited_timesteps(self) -> list[int]:
        """The original timesteps at which purification runs the model (ascending)."""
        proc, _ = reverse_process(GaussianDiffusion.cosine(self.diffusion_steps), self.t_star, self.sampler,
                                  self.steps)
        return [int(t) for t in proc.timestep_map]

    def compensation(self) -> dict[str, Any] | None:
        return compensation_spec(self.gray_p, self.noise_std)


# --------------------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------------------
def _save_state(ckpt: Path, model: DiffusionUNet, ema: EMA, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    write_run_checkpoint(ckpt / "state.safetensors", tensors, state, optimizer=opt)
    write_json_atomic(ckpt / "state.json", state)  # readable copy; the safetensors metadata is authoritative


def _load_state(ckpt: Path, model: DiffusionUNet, ema: EMA, opt: torch.optim.Optimizer,
                fingerprint: str) -> dict[str, Any] | None:
    found = read_run_checkpoint(ckpt / "state.safetensors", fingerprint)
    if found is None:
        return None
    state, tensors = found
    dev = next(model.parameters()).device
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v.to(dev) for k, v in tensors.items() if k.startswith("ema.")})
    load_optimizer_state(opt, tensors, dev)
    return state


# --------------------------------------------------------------------------------------------------------------------
# The purifier
# --------------------------------------------------------------------------------------------------------------------
@register_purifier
class EclipsePurifier(Purifier):
    name = "eclipse"
    config_class = EclipseConfig
    summary = ("ECLIPSE: diffusion model trained on a sparse clean set, noise-and-denoise, plus grayscale + noise "
               "compensation during training (needs --clean, or model_path)")
    needs_clean_data = True
    config: EclipseConfig

    def __init__(self, config: Config | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.model: DiffusionUNet | None = None
        self.model_info: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []
        self.complete = False
        self.fit_seconds = 0.0
        self._stop_after: int | None = None  # tests: stop after this many steps in this call (simulated interruption)

    @property
    def device(self) -> torch.device:
        return select_device(self.config.device)

    # --- fit ----------------------------------------------------------------------------------------------------
    def sparse_set(self, ds: ImageDataset, clean: ImageDataset) -> ImageDataset:
        """The B clean images the diffusion model learns from (random, seeded; labels unused)."""
        cfg = self.config
        b = cfg.sparse_size or max(1, int(round(cfg.sparse_fraction * len(ds))))
        if clean.image_shape != ds.image_shape:
            raise UnpoisonError(f"clean images have shape {clean.image_shape}; the data has {ds.image_shape}")
        if b > len(clean):
            raise UnpoisonError(f"{self.name} needs {b} clean images (sparse_fraction={cfg.sparse_fraction} of "
                                f"{len(ds)}) but the clean data has {len(clean)}; "
                                "lower sparse_fraction or set sparse_size")
        idx = np.sort(numpy_rng(self.name, "sparse", cfg.seed).choice(len(clean), size=b, replace=False))
        return clean.subset(idx)

    def fit(self, ds: ImageDataset, clean: ImageDataset | None = None) -> "EclipsePurifier":
        cfg = self.config
        t0 = time.perf_counter()
        if cfg.model_path:
            self._load(ds)
        else:
            if clean is None:
                raise UnpoisonError(f"{self.name} needs clean data (--clean SPEC) or a trained model (model_path)")
            self._train(self.sparse_set(ds, clean))
        self.fit_seconds = time.perf_counter() - t0
        return self

    def _load(self, ds: ImageDataset) -> None:
        cfg = self.config
        model, info = load_diffusion(cfg.model_path, self.device)
        h, w, c = ds.image_shape
        if model.in_channels != c:
            raise UnpoisonError(f"{cfg.model_path} was trained on {model.in_channels}-channel images; the data has {c}")
        if list(info.get("image_size", [])) != [h, w]:
            raise UnpoisonError(f"{cfg.model_path} was trained on {info.get('image_size')} images; the data is {h}×{w}")
        T = int(info.get("diffusion", {}).get("steps", 0))
        if T != cfg.diffusion_steps:
            raise UnpoisonError(f"{cfg.model_path} uses T={T} diffusion steps; set diffusion_steps={T}")
        self.model, self.model_info, self.complete = model, info, True

    def _fingerprint(self, sparse: ImageDataset) -> str:
        # with a constant learning rate train_steps is left out: each step draws its randomness from its own index, so
        # a run of N steps is the first N steps of any longer run, and raising train_steps on a finished checkpoint
        # trains on from it (the same model as a longer run from scratch). A decaying schedule depends on the length
        h = hashlib.sha256(sparse.images.tobytes()).hexdigest()
        setting = self.config.training_dict()
        if self.config.lr_schedule == "constant":
            setting = {k: v for k, v in setting.items() if k != "train_steps"}
        return str(derive_seed(self.name, json.dumps(setting, sort_keys=True), h))

    def _train(self, sparse: ImageDataset) -> None:
        cfg, dev = self.config, self.device
        h, w, c = sparse.image_shape
        torch.manual_seed(derive_seed(self.name, "init", cfg.seed))
        model = build_unet(cfg.unet, c, (h, w), cfg.dropout).to(dev)
        ema = EMA(model, cfg.ema_decay)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        diffusion = GaussianDiffusion.cosine(cfg.diffusion_steps)
        fp = self._fingerprint(sparse)
        ckpt = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        state = _load_state(ckpt, model, ema, opt, fp) if ckpt else None
        start = int(state["step"]) if state else 0
        if start > cfg.train_steps:
            raise UnpoisonError(f"checkpoint {ckpt} has trained {start} steps, more than "
                                f"train_steps={cfg.train_steps}; raise train_steps or choose another checkpoint_dir")
        self.history = list(state["history"]) if state else []

        x_sparse = torch.from_numpy(sparse.images).permute(0, 3, 1, 2).contiguous().to(dev)  # uint8 on the device
        b = len(x_sparse)
        n_aug = (cfg.copies + 1) * b  # the enlarged set: duplicates only, so an index is just taken modulo B
        bs = min(cfg.batch_size, n_aug)
        per_epoch = n_aug // bs  # drop_last
        t_hi = cfg.train_t_max or cfg.diffusion_steps
        visited = torch.tensor(cfg.visited_timesteps()) if cfg.train_timesteps == "visited" else None
        if visited is not None:
            t_hi = int(visited.max()) + 1
        bar = Bar(cfg.progress, cfg.train_steps, f"{self.name}: diffusion", done=start)
        amp = autocast_dtype(cfg.amp, dev)
        model_fn = autocast_model(model, amp)
        model.train()
        acc = {"loss": 0.0, "mse": 0.0, "vb": 0.0, "n": 0}
        ran = 0
        try:
            for step in range(start, cfg.train_steps):
                if self._stop_after is not None and ran >= self._stop_after:
                    return  # simulated interruption: the state of the last checkpoint survives
                epoch, j = divmod(step, per_epoch)
                perm = torch.randperm(n_aug, generator=torch_generator(self.name, "epoch", cfg.seed, epoch))
                idx = (perm[j * bs:(j + 1) * bs] % b).to(dev)
                g = torch_generator(self.name, "step", cfg.seed, step)
                if visited is None:
                    t = torch.randint(0, t_hi, (bs,), generator=g).to(dev)
                else:
                    t = visited[torch.randint(0, len(visited), (bs,), generator=g)].to(dev)
                noise = torch.randn((bs, c, h, w), generator=g).to(dev)
                for group in opt.param_groups:
                    group["lr"] = cfg.lr_at(step)
                x0 = x_sparse[idx].float().div(127.5).sub(1.0)
                losses = diffusion.training_losses(model_fn, x0, t, noise, cfg.vlb_weight)
                loss = losses["loss"].mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                ema.update(model)
                ran += 1
                for k in ("loss", "mse", "vb"):
                    acc[k] += float(losses[k].detach().mean())
                acc["n"] += 1
                bar.update(1, info=f"loss {float(loss.detach()):.4f}" if bar.enabled else None)
                done = step + 1
                if done % cfg.checkpoint_every == 0 or done == cfg.train_steps:
                    self.history.append({"step": done, **{k: acc[k] / acc["n"] for k in ("loss", "mse", "vb")}})
                    acc = {"loss": 0.0, "mse": 0.0, "vb": 0.0, "n": 0}
                    if ckpt:
                        _save_state(ckpt, model, ema, opt, {"fingerprint": fp, "step": done, "history": self.history,
                                                            "config": cfg.training_dict()})
        finally:
            bar.close()
        ema.copy_to(model)  # purification uses the EMA weights
        self.model = model.eval()
        self.complete = True
        self.model_info = {"image_size": [h, w], "diffusion": {"schedule": "cosine", "steps": cfg.diffusion_steps},
                           "train_t_max": t_hi, "sparse_size": b, "copies": cfg.copies,
                           **({"trained_timesteps": visited.tolist()} if visited is not None else {}),
                           "steps_trained": cfg.train_steps,
                           "params": count_params(model), "training": cfg.training_dict(), "history": self.history,
                           "precision": precision_name(amp),
                           "purifier": self.name}
        target = cfg.save_model or (str(ckpt / "model.safetensors") if ckpt else "")
        if target:
            save_diffusion(model, target, self.model_info)
            self.model_info["saved_to"] = target

    # --- purify -------------------------------------------------------------------------------------------------
    def purify(self, ds: ImageDataset) -> ImageDataset:
        cfg = self.config
        if self.model is None or not self.complete:
            raise UnpoisonError(f"{self.name}: call fit() first (training did not finish)")
        h, w, c = ds.image_shape
        if self.model.in_channels != c or list(self.model_info.get("image_size", [h, w])) != [h, w]:
            raise UnpoisonError(f"the diffusion model was trained on {self.model_info.get('image_size')}×"
                                f"{self.model.in_channels} images; the data is {h}×{w}×{c}")
        t_hi = int(self.model_info.get("train_t_max", cfg.diffusion_steps))
        if cfg.t_star > t_hi:
            raise UnpoisonError(f"t_star={cfg.t_star} but the model was trained on timesteps < {t_hi} only")
        trained = self.model_info.get("trained_timesteps")
        if trained is not None and not set(cfg.visited_timesteps()) <= set(trained):
            raise UnpoisonError(f"the diffusion model was trained only on timesteps {trained} (train_timesteps="
                                f"visited); t_star={cfg.t_star}, sampler={cfg.sampler}, steps={cfg.steps} visit "
                                f"{cfg.visited_timesteps()}: purify with the settings it was trained for")
        diffusion = GaussianDiffusion.cosine(cfg.diffusion_steps)
        dev = next(self.model.parameters()).device
        amp = autocast_dtype(cfg.amp, dev)
        model_fn = autocast_model(self.model, amp)
        if cfg.compile:
            model_fn = compiled_or_error(model_fn)
        out = np.empty_like(ds.images)
        n, bs = len(ds), cfg.purify_batch_size
        bar = Bar(cfg.progress, n, f"{self.name}: purify")
        t0 = time.perf_counter()
        try:
            for s in range(0, n, bs):
                xb = torch.from_numpy(ds.images[s:s + bs]).to(dev).permute(0, 3, 1, 2).float()
                if cfg.despeckle > 0:
                    xb = despeckle_tensor(xb, cfg.despeckle * 255.0)
                xb = xb.div(127.5).sub(1.0)
                g = torch_generator(self.name, "purify", cfg.seed, s)
                yb = purify_batch(model_fn, diffusion, xb, cfg.t_star, cfg.sampler, cfg.steps, g)
                u8 = ((yb + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
                out[s:s + bs] = u8.permute(0, 2, 3, 1).cpu().numpy()
                bar.update(len(xb))
        finally:
            bar.close()
        secs = time.perf_counter() - t0
        info = {k: v for k, v in self.model_info.items() if k not in ("history", "training")}
        meta: dict[str, Any] = {"purified": self.record(model=info, fit_seconds=round(self.fit_seconds, 2),
                                                        purify_seconds=round(secs, 2),
                                                        purify_precision=precision_name(amp))}
        return attach_compensation(ds.with_images(out, **meta), cfg.compensation())


__all__ = ["EclipseConfig", "EclipsePurifier", "attach_compensation", "compensation_spec", "eclipse_compensation"]
