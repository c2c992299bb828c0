"""Shared machinery of the surrogate-based attacks (EM, REM, TAP, LC): configs, a resumable surrogate, batched PGD.

Everything works on whole mini-batches at once (no per-image Python loop), on the device chosen by
:func:`~unpoison.utils.device.select_device`, so the same code runs the CPU defaults and the papers' scale on a GPU.
Random streams are derived from (seed, purpose, step), never carried along, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset
from unpoison.models import create_model
from unpoison.training.augment import random_crop, random_flip
from unpoison.utils.device import select_device
from unpoison.utils.progress import Bar
from unpoison.utils.seed import derive_seed, torch_generator

# Config fields that change how a generation runs but not what it produces: left out of the cache key.
RUN_FIELDS = ("device", "progress", "cache", "cache_dir", "checkpoint_every", "batch_size_eval")


@dataclasses.dataclass
class SurrogateConfig(Config):
    """Fields shared by every surrogate-based attack (subclasses change the defaults)."""

    arch: str = "fastnet"  # surrogate architecture (unpoison.models)
    width: float = 0.25  # surrogate width multiplier
    lr: float = 0.1  # surrogate SGD learning rate
    batch_size: int = 256  # mini-batch for surrogate training and for PGD
    device: str = "auto"  # auto | cpu | cuda | mps (not part of the cache key)
    progress: bool = True  # rich progress bar (not part of the cache key)
    cache: bool = True  # reuse / store the result in the generation cache
    cache_dir: str = ""  # cache root; empty = $UNPOISON_CACHE or ~/.cache/unpoison
    checkpoint_every: int = 1  # checkpoint after this many units (rounds or PGD batches)

    def validate(self) -> None:
        check(self.width > 0, f"width must be > 0; got {self.width}")
        check(self.lr > 0, f"lr must be > 0; got {self.lr}")
        check(self.batch_size >= 2, f"batch_size must be ≥ 2; got {self.batch_size}")
        check(self.checkpoint_every >= 1, f"checkpoint_every must be ≥ 1; got {self.checkpoint_every}")


def check_budget(eps: float, name: str = "budget") -> None:
    check(1 / 255 - 1e-9 <= eps <= 1.0, f"{name} must be in [1/255, 1]; got {eps}")


def grey_levels(eps: float) -> int:
    """The largest whole number of grey levels within an L∞ budget ε on the [0, 1] scale."""
    return math.floor(eps * 255 + 1e-6)


def quantise(clean: np.ndarray, delta: torch.Tensor, eps: float) -> np.ndarray:
    """uint8 images (N, H, W, C) = clip(clean + q, 0, 255) with q = clip(round(255·δ), ±⌊255·ε⌋).

    ``delta`` is (N, C, H, W) on the [0, 1] scale. Rounding to the grid and clipping to the budget first means the
    measured L∞ is ≤ ε by construction (clipping to [0, 255] only shrinks a change).
    """
    m = grey_levels(eps)
    q = torch.clamp(torch.round(delta.detach().float().cpu() * 255), -m, m).to(torch.int16)
    q = q.permute(0, 2, 3, 1).numpy()
    return np.clip(clean.astype(np.int16) + q, 0, 255).astype(np.uint8)


def to_float(x_u8: torch.Tensor) -> torch.Tensor:
    return x_u8.float().div_(255.0)


def augment(x: torch.Tensor, g: torch.Generator, crop_pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Random crop (zero padding) and flip on float images; differentiable w.r.t. ``x``."""
    if crop_pad:
        x = random_crop(x, crop_pad, g)
    if flip:
        x = random_flip(x, g)
    return x


def build_surrogate(cfg: SurrogateConfig, ds: ImageDataset, seed: int, tag: str, device: torch.device) -> nn.Module:
    torch.manual_seed(derive_seed(tag, "init", seed))
    model = create_model(cfg.arch, num_classes=ds.num_classes, in_channels=ds.image_shape[2], width=cfg.width)
    return model.to(device)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 5e-4) -> torch.optim.SGD:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                           lr=lr, momentum=0.9, nesterov=True)


def surrogate_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Weights, buffers (BatchNorm statistics) and momentum buffers as flat named tensors."""
    out = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        buf = opt.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[f"opt.{i}"] = buf.detach().clone()
    return out


def load_surrogate_state(model: nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    dev = next(model.parameters()).device
    model.load_state_dict({k[6:]: v.to(dev) for k, v in tensors.items() if k.startswith("model.")})
    params = [p for g in opt.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        if f"opt.{i}" in tensors:
            opt.state[p]["momentum_buffer"] = tensors[f"opt.{i}"].to(dev)


def linf_pgd(model: nn.Module, x: torch.Tensor, delta: torch.Tensor, y: torch.Tensor, *, eps: float, step: float,
             steps: int, minimize: bool,
             loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Signed-gradient PGD on a batch: δ ← Π_ε(δ ∓ step·sign(∇δ L)), keeping x + δ in [0, 1]. Returns δ.

    ``loss_fn(x_adv, y)`` defaults to the cross-entropy of ``model``; ``minimize`` picks descent (error-minimizing,
    targeted) or ascent (error-maximizing). The model's parameters get no gradients.
    """
    sign = -1.0 if minimize else 1.0
    fn = loss_fn or (lambda xa, yy: F.cross_entropy(model(xa), yy))
    delta = delta.detach().clone()
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = fn(x + delta, y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + sign * step * grad.sign()
            delta = delta.clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    return delta.detach()


def batches(n: int, size: int, start: int = 0) -> Iterator[tuple[int, slice]]:
    """(batch number, slice) over ``range(n)`` in order, from batch ``start``."""
    nb = (n + size - 1) // size
    for b in range(start, nb):
        yield b, slice(b * size, min(n, (b + 1) * size))


def num_batches(n: int, size: int) -> int:
    return (n + size - 1) // size


def sample_batch(n: int, size: int, *parts: Any) -> torch.Tensor:
    """A seeded random mini-batch of indices (with replacement across calls), derived from ``parts``."""
    g = torch_generator(*parts)
    return torch.randperm(n, generator=g)[:min(size, n)]


def choose_indices(n: int, rate: float, tag: str, seed: int) -> np.ndarray:
    """Sorted positions of round(rate · n) samples drawn uniformly (all of them at rate 1)."""
    from unpoison.attacks.labelmaps import choose_poison_indices
    from unpoison.utils.seed import numpy_rng

    return choose_poison_indices(np.ones(n, dtype=bool), rate, n, numpy_rng(tag, "select", seed))


class PoisonSlots(NamedTuple):
    """Where a sample-wise generation starts: the chosen positions, their mask, the images to overwrite, zero norms."""

    chosen: np.ndarray
    is_poison: np.ndarray
    images: np.ndarray
    norms: np.ndarray


def poison_slots(ds: ImageDataset, chosen: np.ndarray) -> PoisonSlots:
    n = len(ds)
    is_poison = np.zeros(n, dtype=bool)
    is_poison[chosen] = True
    return PoisonSlots(chosen, is_poison, ds.images.copy(), np.zeros(n, dtype=np.float32))


def open_generation(ds: ImageDataset, device: str, rate: float, tag: str,
                    seed: int) -> tuple[torch.device, PoisonSlots]:
    """The opening of EM/REM/TAP's generation: the device, and ``rate`` of the samples drawn by :func:`choose_indices`.

    LC draws its samples from the target class instead, so it uses :func:`poison_slots` alone.
    """
    dev = select_device(device)
    return dev, poison_slots(ds, choose_indices(len(ds), rate, tag, seed))


def surrogate_recipe(cfg: SurrogateConfig, epochs: int) -> Any:
    """The TrainConfig a clean surrogate is trained with: the quick recipe with ``cfg``'s arch, width, lr, batch."""
    from unpoison.training import TrainConfig

    return TrainConfig.from_dict({"arch": cfg.arch, "width": cfg.width, "epochs": epochs, "lr": cfg.lr,
                                  "batch_size": cfg.batch_size}, preset="quick")


def surrogate_precision(cfg: SurrogateConfig) -> str:
    """The precision the clean surrogate trains in on this machine (``amp=auto``: bf16 on CUDA / AMX, else fp32).

    Part of the generation cache key: a bf16 surrogate gives a different (equally valid) poison than an fp32 one,
    so a cache filled on an AMX machine must not be served as the fp32 result elsewhere.
    """
    from unpoison.utils.device import autocast_dtype, precision_name

    return precision_name(autocast_dtype(surrogate_recipe(cfg, 1).amp, select_device(cfg.device)))  # any epochs


class TrainerSurrogateKey:
    """Mixin for attacks whose clean surrogate trains with the Trainer (TAP, SEP, LC): its resolved precision joins
    the cache key. EM/REM train theirs in fp32 in their own loop, so they must not use it."""

    config: SurrogateConfig

    def cache_context(self) -> dict[str, Any]:
        return {"surrogate_precision": surrogate_precision(self.config)}


def train_clean_surrogate(cfg: SurrogateConfig, ds: ImageDataset, seed: int, tag: str, epochs: int,
                          device: torch.device, checkpoint: Any = None) -> nn.Module:
    """A surrogate trained on clean ``ds`` with the toolkit's Trainer (quick recipe, ``cfg.arch``/``width``/``lr``).

    The Trainer checkpoints every epoch (to ``checkpoint``), so an interrupted surrogate resumes where it stopped.
    """
    from unpoison.training import Trainer

    trainer = Trainer(surrogate_recipe(cfg, epochs), device=device, checkpoint=checkpoint, progress=cfg.progress)
    model = trainer.fit(ds, seed=derive_seed(tag, "surrogate", seed)).model
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def pgd_sweep(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor, ck: Any, *, eps: float, step: float, steps: int,
              minimize: bool, batch_size: int, seed: int, tag: str, augment_input: bool, device: torch.device,
              progress: bool, description: str) -> torch.Tensor:
    """One PGD pass over (N, C, H, W) uint8 images against a fixed model, batch by batch, resumable.

    Returns δ (N, C, H, W) float32 on the CPU. With ``augment_input`` every PGD step sees a fresh random crop/flip of
    x + δ (differentiable augmentation, one draw per step). Checkpoints δ and the next batch through ``ck``.
    """
    n = len(x_u8)
    nb = num_batches(n, batch_size)
    delta = torch.zeros(x_u8.shape, dtype=torch.float32)
    start = 0
    loaded = ck.load()
    if loaded is not None:
        tensors, state = loaded
        delta, start = tensors["delta"].float(), int(state["batch"])
    model.eval()
    with Bar(progress, nb, description, done=start) as bar:
        for b, sl in batches(n, batch_size, start):
            x = to_float(x_u8[sl].to(device))
            yb = y[sl].to(device)
            g = torch_generator(tag, "pgd", seed, b)

            def loss_fn(xa: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
                if augment_input:
                    xa = augment(xa, g)
                return F.cross_entropy(model(xa), yy)

            d = linf_pgd(model, x, delta[sl].to(device), yb, eps=eps, step=step, steps=steps, minimize=minimize,
                         loss_fn=loss_fn)
            delta[sl] = d.cpu()
            bar.update(1)
            if ck.due(b + 1, nb):
                ck.save({"delta": delta}, {"batch": b + 1, "batches": nb})
            ck.maybe_stop(b + 1, nb)
    return delta
