"""One fast, seeded training loop for every place unpoison trains a classifier (airbench-style, in one page).

Data lives on the device as uint8; each epoch draws a permutation and crop/flip offsets from a generator seeded by
(seed, epoch), so a run resumed from an end-of-epoch checkpoint repeats the uninterrupted run exactly. The learning
rate is a pure function of the step (no scheduler state to save). A defense can plug in a training-time batch
transform (applied afresh every epoch) and its own loss.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset
from unpoison.errors import UnpoisonError
from unpoison.models import create_model
from unpoison.training.augment import random_crop, random_flip
from unpoison.training.evaluate import evaluate_accuracy
from unpoison.training.transforms import BatchTransform, resolve_train_transform
from unpoison.utils.device import autocast_dtype, precision_name, select_device
from unpoison.utils.io import atomic_path
from unpoison.utils.progress import Bar
from unpoison.utils.seed import derive_seed, torch_generator


@dataclass
class TrainConfig(Config):
    """Training recipe. Presets ``quick`` (the ``cpu`` profile's) and ``standard``; see docs/benchmarks.md."""

    arch: str = "fastnet"
    width: float = 0.5
    epochs: int = 6
    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.2
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = 0.2  # fraction of steps spent warming up
    crop_pad: int = 4
    pad_mode: Literal["constant", "reflect"] = "constant"
    flip: bool = True
    channels_last: bool = True
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    eval_batch_size: int = 1000
    tta_flip: bool = False

    PRESETS = {
        "quick": {"arch": "fastnet", "width": 0.5, "epochs": 6, "batch_size": 256, "lr": 0.2},  # 244 s, 81.4% (20k)
        "standard": {"arch": "fastnet", "width": 0.5, "epochs": 8, "batch_size": 256, "lr": 0.2,  # 722 s, 89.5% (50k)
                     "tta_flip": True},
    }

    def validate(self) -> None:
        check(self.epochs >= 1, f"epochs must be ≥ 1; got {self.epochs}")
        check(self.batch_size >= 2, f"batch_size must be ≥ 2; got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0; got {self.lr}")
        check(0 <= self.momentum < 1, f"momentum must be in [0, 1); got {self.momentum}")
        check(self.weight_decay >= 0, f"weight_decay must be ≥ 0; got {self.weight_decay}")
        check(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1); got {self.label_smoothing}")
        check(0 <= self.warmup < 1, f"warmup must be in [0, 1); got {self.warmup}")
        check(self.crop_pad >= 0, f"crop_pad must be ≥ 0; got {self.crop_pad}")
        check(self.width > 0, f"width must be > 0; got {self.width}")


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at ``step`` of ``total`` (one-cycle: linear up from lr/10, linear down to 0)."""
    if cfg.schedule == "constant":
        return cfg.lr
    warm = int(cfg.warmup * total)
    if step < warm:
        return cfg.lr * (0.1 + 0.9 * step / warm)
    frac = (step - warm) / max(1, total - warm)
    if cfg.schedule == "onecycle":
        return cfg.lr * (1.0 - frac)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * frac))


@dataclass
class EpochLog:
    epoch: int
    loss: float
    train_acc: float
    lr: float
    seconds: float
    images_per_s: float
    test_acc: float | None = None


@dataclass
class TrainResult:
    model: nn.Module = field(repr=False)
    config: dict[str, Any]
    seed: int
    history: list[EpochLog]
    seconds: float
    test_acc: float | None = None
    resumed_from_epoch: int = 0
    precision: str = "fp32"  # what ``amp`` resolved to on this device: fp32, bf16 or fp16

    @property
    def peak_test_acc(self) -> float | None:
        accs = [h.test_acc for h in self.history if h.test_acc is not None]
        return max(accs) if accs else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config, "seed": self.seed, "seconds": round(self.seconds, 3), "test_acc": self.test_acc,
            "peak_test_acc": self.peak_test_acc, "resumed_from_epoch": self.resumed_from_epoch,
            "precision": self.precision, "history": [vars(h) for h in self.history],
        }


class Trainer:
    """``Trainer(config).fit(train, test=...)``. Hooks: ``batch_transform`` (x in [0,1] → x) and ``loss_fn``."""

    def __init__(self, config: TrainConfig | None = None, *, device: str | torch.device | None = "auto",
                 batch_transform: BatchTransform | None = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 checkpoint: str | Path | None = None, progress: bool = False,
                 on_epoch: Callable[[EpochLog], None] | None = None) -> None:
        self.config = config or TrainConfig()
        self.device = device if isinstance(device, torch.device) else select_device(device)
        self.batch_transform = batch_transform
        self.loss_fn = loss_fn
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.progress = progress
        self.on_epoch = on_epoch

    # --- checkpointing --------------------------------------------------------------------------------------
    def _fingerprint(self, train: ImageDataset, seed: int) -> str:
        return str(derive_seed(json.dumps(self.config.to_dict(), sort_keys=True), seed, len(train),
                               int(train.labels[:1000].sum()), train.images[:8].tobytes().hex()[:64]))

    def _save(self, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, history: list[EpochLog], fp: str) -> None:
        from safetensors.torch import save_file

        assert self.checkpoint is not None
        tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        for i, p in enumerate(opt.param_groups[0]["params"] + sum((g["params"] for g in opt.param_groups[1:]), [])):
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                tensors[f"opt.{i}"] = buf.detach().contiguous().cpu()
        meta = {"epoch": str(epoch), "fingerprint": fp, "history": json.dumps([vars(h) for h in history])}
        with atomic_path(self.checkpoint, suffix=".tmp.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def _load(self, model: nn.Module, opt: torch.optim.Optimizer, fp: str) -> tuple[int, list[EpochLog]]:
        from safetensors import safe_open

        assert self.checkpoint is not None
        if not self.checkpoint.exists():
            return 0, []
        try:
            with safe_open(str(self.checkpoint), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises several error types for a bad header
            raise UnpoisonError(f"checkpoint {self.checkpoint} is not a readable safetensors file: {e}") from None
        if meta.get("fingerprint") != fp:
            raise UnpoisonError(f"checkpoint {self.checkpoint} belongs to another run (config, seed or data differ); "
                                "delete it or choose another --checkpoint")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        params = opt.param_groups[0]["params"] + sum((g["params"] for g in opt.param_groups[1:]), [])
        for i, p in enumerate(params):
            if f"opt.{i}" in tensors:
                opt.state[p]["momentum_buffer"] = tensors[f"opt.{i}"].to(p.device)
        history = [EpochLog(**h) for h in json.loads(meta.get("history", "[]"))]
        return int(meta["epoch"]), history

    # --- training -------------------------------------------------------------------------------------------
    def build_model(self, train: ImageDataset, seed: int) -> nn.Module:
        torch.manual_seed(derive_seed("init", seed))
        h, w, c = train.image_shape
        return create_model(self.config.arch, num_classes=train.num_classes, in_channels=c, width=self.config.width)

    def fit(self, train: ImageDataset, *, test: ImageDataset | None = None, model: nn.Module | None = None,
            seed: int = 0, eval_every: int = 0, stop_after: int | None = None) -> TrainResult:
        """Train on ``train``; evaluate on ``test`` at the end (and every ``eval_every`` epochs if > 0).

        ``stop_after`` ends the run after that many epochs (with a checkpoint), as an interruption would.
        """
        cfg = self.config
        dev = self.device
        if model is None:
            model = self.build_model(train, seed)
        model = model.to(dev)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
        fp = self._fingerprint(train, seed)
        start, history = (self._load(model, opt, fp) if self.checkpoint else (0, []))
        x_all, y_all = train.tensors()
        x_all, y_all = x_all.contiguous().to(dev), y_all.to(dev)
        n = len(train)
        bs = min(cfg.batch_size, n)
        steps_per_epoch = n // bs + (1 if n % bs >= 2 else 0)  # a 1-image tail batch would break BatchNorm
        total = steps_per_epoch * cfg.epochs
        amp_dtype = autocast_dtype(cfg.amp, dev)
        scaler = torch.amp.GradScaler(dev.type) if amp_dtype == torch.float16 else None
        crit = self.loss_fn or (lambda out, y: F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing))
        t_start = time.perf_counter()
        bar = Bar(self.progress, total, f"epoch {start + 1}", done=start * steps_per_epoch)
        model.train()
        try:
            for epoch in range(start, cfg.epochs):
                if stop_after is not None and epoch >= stop_after:
                    break
                t0 = time.perf_counter()
                bar.update(0, description=f"epoch {epoch + 1}")
                g = torch_generator("epoch", seed, epoch)
                perm = torch.randperm(n, generator=g).to(dev)
                loss_sum = torch.zeros((), device=dev)
                correct = torch.zeros((), device=dev, dtype=torch.long)
                seen = 0
                for s in range(steps_per_epoch):
                    idx = perm[s * bs:(s + 1) * bs]
                    xb, yb = x_all[idx], y_all[idx]
                    if cfg.crop_pad:
                        xb = random_crop(xb, cfg.crop_pad, g, cfg.pad_mode)
                    if cfg.flip:
                        xb = random_flip(xb, g)
                    xb = xb.float().div_(255.0)
                    if self.batch_transform is not None:
                        xb = self.batch_transform(xb, g)
                    if cfg.channels_last:
                        xb = xb.contiguous(memory_format=torch.channels_last)
                    lr = lr_at(epoch * steps_per_epoch + s, total, cfg)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                        out = model(xb)
                        loss = crit(out, yb)
                    opt.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.step(opt)
                        scaler.update()
                    else:
                        loss.backward()
                        opt.step()
                    loss_sum += loss.detach() * len(yb)
                    correct += (out.detach().argmax(1) == yb).sum()
                    seen += len(yb)
                    # reading the loss syncs a GPU: refresh it every 10 steps only, and only for a bar that shows
                    bar.update(1, info=f"loss {loss.item():.3f}" if bar.enabled and s % 10 == 0 else None)
                secs = time.perf_counter() - t0
                log = EpochLog(epoch + 1, float(loss_sum) / seen, float(correct) / seen, lr, round(secs, 3),
                               round(seen / secs, 1))
                last = epoch + 1 == cfg.epochs
                if test is not None and (last or (eval_every and (epoch + 1) % eval_every == 0)):
                    log.test_acc = evaluate_accuracy(model, test, batch_size=cfg.eval_batch_size, tta_flip=cfg.tta_flip,
                                                     channels_last=cfg.channels_last)
                    model.train()
                history.append(log)
                if self.on_epoch is not None:
                    self.on_epoch(log)
                if self.checkpoint is not None:
                    self._save(model, opt, epoch + 1, history, fp)
        finally:
            bar.close()
        model.eval()
        done = history[-1].epoch == cfg.epochs if history else False
        return TrainResult(model=model, config=cfg.to_dict(), seed=seed, history=history,
                           seconds=time.perf_counter() - t_start,
                           test_acc=history[-1].test_acc if done else None, resumed_from_epoch=start,
                           precision=precision_name(amp_dtype))


def train_on(ds: ImageDataset, config: TrainConfig | None = None, *, test: ImageDataset | None = None, seed: int = 0,
             train_transform: Literal["auto", "off", "once"] = "auto", **trainer_kw: Any) -> TrainResult:
    """Train a classifier on ``ds``, honouring the training-time transform a defense attached to it.

    ``auto``: the transform in ``ds.meta["train_transform"]`` is applied afresh to every batch (as ECLIPSE's code
    does); ``once``: it is applied a single time to the images before training (as ECLIPSE's Algorithm 1 reads);
    ``off``: ignored.
    """
    spec = ds.meta.get("train_transform")
    tf = resolve_train_transform(spec) if train_transform != "off" else None
    if tf is not None and train_transform == "once":
        x = torch.from_numpy(ds.images).permute(0, 3, 1, 2).float().div(255)
        g = torch_generator("once", seed)
        x = torch.cat([tf(x[i:i + 1000], g) for i in range(0, len(x), 1000)])
        ds = ds.with_images((x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
        tf = None
    return Trainer(config, batch_transform=tf, **trainer_kw).fit(ds, test=test, seed=seed)


__all__ = ["TrainConfig", "Trainer", "TrainResult", "EpochLog", "train_on", "lr_at"]
