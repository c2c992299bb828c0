"""EM: error-minimizing noise (Huang et al., ICLR 2021, "Unlearnable Examples: Making Personal Data Unexploitable").

Sample-wise, clean-label, L∞ ≤ ε (8/255). The bi-level *min-min* problem
``min_θ E[ min_{‖δ_i‖∞ ≤ ε} L(f_θ(x_i + δ_i), y_i) ]`` is solved by alternation, as in the paper:

1. train the surrogate for ``train_steps`` mini-batch SGD steps on the currently perturbed data x + δ;
2. sweep the whole (poisoned part of the) dataset once, updating every δ_i by ``pgd_steps`` signed-gradient steps of
   size ``step_size`` that *decrease* the loss, projected to the ε-ball and to valid pixels;
3. stop once the surrogate's accuracy on x + δ (measured during the sweep, before each batch's update) exceeds
   ``stop_acc`` (99%), or after ``max_rounds`` rounds.

δ persists across rounds. Paper values (``paper`` preset): ResNet-18, ε = 8/255, 20 PGD steps of 0.8/255, 10 model
steps per round, stop at 99% train accuracy. CPU defaults (field defaults, what ``unpoison attack em`` runs):
FastNet at width 0.25, 5 PGD steps of 1.6/255 (= ε/5, APBench's setting), at most 20 rounds; the stopping rule is
kept (on 1,000 CIFAR-10 images it fired at round 10). The final δ is rounded to whole grey levels and clipped to
⌊255ε⌋, so the measured L∞ is ≤ ε by construction.
With ``poison_rate`` < 1 the min-min runs on the chosen samples only; the others stay clean.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from unpoison.attacks.base import Attack, clean_label_result, measure_norms, register_attack
from unpoison.attacks.cache import Checkpoint, run_cached
from unpoison.attacks.surrogate import (RUN_FIELDS, SurrogateConfig, augment, batches, build_surrogate,
                                        check_budget, linf_pgd, load_surrogate_state, make_optimizer,
                                        open_generation, quantise, sample_batch, surrogate_state, to_float)
from unpoison.config import check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.utils.progress import Bar
from unpoison.utils.seed import torch_generator


@dataclasses.dataclass
class EMConfig(SurrogateConfig):
    budget: float = 8 / 255  # L∞ bound ε on the [0, 1] scale
    step_size: float = 1.6 / 255  # PGD step (paper 0.8/255 with 20 steps)
    pgd_steps: int = 5  # PGD steps per sweep (paper 20)
    train_steps: int = 10  # surrogate SGD steps per round (paper 10)
    max_rounds: int = 20  # cap on rounds (the paper runs until the stopping rule fires)
    stop_acc: float = 0.99  # stop when the surrogate's accuracy on x + δ exceeds this (paper 99%)
    augment: bool = False  # crop/flip the perturbed images while training the surrogate
    poison_rate: float = 1.0  # fraction of the training set poisoned

    PRESETS = {
        "paper": {"arch": "resnet18", "width": 1.0, "batch_size": 512, "lr": 0.1, "step_size": 0.8 / 255,
                  "pgd_steps": 20, "train_steps": 10, "max_rounds": 100, "stop_acc": 0.99},
    }

    def validate(self) -> None:
        super().validate()
        check_budget(self.budget)
        check(0 < self.step_size <= self.budget, f"step_size must be in (0, budget]; got {self.step_size}")
        check(self.pgd_steps >= 1, f"pgd_steps must be ≥ 1; got {self.pgd_steps}")
        check(self.train_steps >= 0, f"train_steps must be ≥ 0; got {self.train_steps}")
        check(self.max_rounds >= 1, f"max_rounds must be ≥ 1; got {self.max_rounds}")
        check(0 < self.stop_acc <= 1, f"stop_acc must be in (0, 1]; got {self.stop_acc}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")


class MinMinAttack(Attack):
    """Alternating surrogate training and error-minimizing PGD sweeps (EM; REM overrides the two inner pieces)."""

    kind = "availability"
    cache_version = 1
    cache_exclude = RUN_FIELDS
    stop_after: int | None = None  # stop (with a checkpoint) after this many rounds: for tests and interruptions

    # --- the two pieces a variant changes ------------------------------------------------------------------------
    def train_step(self, model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor,
                   g: torch.Generator) -> torch.Tensor:
        """Loss of one surrogate step on perturbed images ``xb`` (in [0, 1])."""
        if self.config.augment:
            xb = augment(xb, g)
        return F.cross_entropy(model(xb), yb)

    def noise_step(self, model: torch.nn.Module, x: torch.Tensor, d: torch.Tensor, y: torch.Tensor,
                   g: torch.Generator) -> torch.Tensor:
        """The new δ for one batch of clean images ``x``."""
        cfg = self.config
        return linf_pgd(model, x, d, y, eps=cfg.budget, step=cfg.step_size, steps=cfg.pgd_steps, minimize=True)

    def stop_rule(self) -> float | None:
        return self.config.stop_acc

    def rounds(self) -> int:
        return self.config.max_rounds

    # --- driver ----------------------------------------------------------------------------------------------------
    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        return run_cached(self, ds, seed, lambda ck: self._generate(ds, seed, ck))

    def _generate(self, ds: ImageDataset, seed: int, ck: Checkpoint) -> PoisonedDataset:
        cfg = self.config
        dev, (chosen, is_poison, images, norms) = open_generation(ds, cfg.device, cfg.poison_rate, self.name, seed)
        history: list[dict[str, float]] = []
        if len(chosen):
            delta, history = self._min_min(ds, chosen, seed, ck, dev)
            images[chosen] = quantise(ds.images[chosen], delta, cfg.budget)
            norms[chosen] = measure_norms(images[chosen], ds.images[chosen], "linf")
        return clean_label_result(
            ds, images, is_poison, norms,
            attack=self.metadata(norm="linf", budget=cfg.budget, seed=seed,
                                 generation={"rounds": len(history), "history": history}),
        )

    def _min_min(self, ds: ImageDataset, chosen: np.ndarray, seed: int, ck: Checkpoint,
                 dev: torch.device) -> tuple[torch.Tensor, list[dict[str, float]]]:
        cfg = self.config
        x_u8 = torch.from_numpy(ds.images[chosen]).permute(0, 3, 1, 2).contiguous().to(dev)
        y = torch.from_numpy(ds.labels[chosen]).to(dev)
        m = len(chosen)
        model = build_surrogate(cfg, ds, seed, self.name, dev)
        opt = make_optimizer(model, cfg.lr)
        delta = torch.zeros(x_u8.shape, dtype=torch.float32, device=dev)
        start, history, finished = 0, [], False
        loaded = ck.load()
        if loaded is not None:
            tensors, state = loaded
            delta = tensors["delta"].to(dev)
            load_surrogate_state(model, opt, tensors)
            start, history, finished = int(state["round"]), list(state["history"]), bool(state["finished"])
        total = self.rounds()
        stop = self.stop_rule()
        nb = (m + cfg.batch_size - 1) // cfg.batch_size
        with Bar(cfg.progress and not finished, total * nb, f"{self.name}: round {start + 1}", done=start * nb) as bar:
            for r in range(start, total if not finished else start):
                model.train()
                for s in range(cfg.train_steps):
                    idx = sample_batch(m, cfg.batch_size, self.name, "train", seed, r, s).to(dev)
                    g = torch_generator(self.name, "train-aug", seed, r, s)
                    xb = (to_float(x_u8[idx]) + delta[idx]).clamp_(0, 1)
                    loss = self.train_step(model, xb, y[idx], g)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                model.eval()
                for p in model.parameters():
                    p.requires_grad_(False)
                correct = 0
                for b, sl in batches(m, cfg.batch_size):
                    x = to_float(x_u8[sl])
                    with torch.no_grad():
                        correct += int((model((x + delta[sl]).clamp(0, 1)).argmax(1) == y[sl]).sum())
                    g = torch_generator(self.name, "noise", seed, r, b)
                    delta[sl] = self.noise_step(model, x, delta[sl], y[sl], g)
                    bar.update(1, info=f"acc {correct / min(m, (b + 1) * cfg.batch_size):.3f}",
                               description=f"{self.name}: round {r + 1}/{total}")
                for p in model.parameters():
                    p.requires_grad_(True)
                acc = correct / m
                history.append({"round": r + 1, "train_acc": round(acc, 5)})
                finished = stop is not None and acc > stop
                if finished or ck.due(r + 1, total):
                    ck.save({"delta": delta, **surrogate_state(model, opt)},
                            {"round": r + 1, "history": history, "finished": finished})
                if finished:
                    break
                ck.maybe_stop(r + 1, total)
        return delta.cpu(), history


@register_attack
class EM(MinMinAttack):
    name = "em"
    config_class = EMConfig
    summary = "Error-minimizing sample-wise noise, bi-level min-min on a surrogate (Huang et al. 2021; L∞ ≤ budget)"
