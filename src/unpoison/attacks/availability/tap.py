"""TAP: targeted adversarial poisoning (Fowl et al., NeurIPS 2021, "Adversarial Examples Make Strong Poisons").

Sample-wise, clean-label, L∞ ≤ ε (8/255). A surrogate is trained normally on the *clean* data; then every training
image gets a targeted adversarial perturbation toward a fixed class permutation of its label, t(y), by PGD that
*minimizes* L(f(T(x + δ)), t(y)), each step through a fresh random crop/flip T (differentiable augmentation, as the
paper's forge does). Labels stay correct: a model trained on the result learns the non-robust features of the wrong
class.

Paper-scale values (``paper`` preset): ResNet-18 surrogate, 250 PGD iterations, ε = 8/255 (the step size there comes
from the Witches'-Brew forge with signed Adam; here a plain signed step — unverified equivalence). CPU defaults (field
defaults): a FastNet surrogate at width 0.5 (the ``quick`` recipe's network, so at the cpu profile the attack is
nearly white-box) trained 4 epochs with the quick recipe; 20 PGD steps of 1/255. ``target_map``: ``shift`` maps
y → (y + 1) mod K; ``random`` uses a seeded derangement (no class maps to itself).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch

from unpoison.attacks.base import Attack, clean_label_result, measure_norms, register_attack
from unpoison.attacks.cache import Checkpoint, run_cached
from unpoison.attacks.surrogate import (RUN_FIELDS, SurrogateConfig, TrainerSurrogateKey, check_budget,
                                        open_generation, pgd_sweep, quantise, train_clean_surrogate)
from unpoison.config import check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.utils.seed import numpy_rng


@dataclasses.dataclass
class TAPConfig(SurrogateConfig):
    width: float = 0.5
    lr: float = 0.2  # the quick recipe's
    budget: float = 8 / 255  # L∞ bound ε
    step_size: float = 1 / 255  # PGD step
    steps: int = 20  # PGD steps (paper 250)
    surrogate_epochs: int = 4  # clean surrogate training (quick recipe)
    augment: bool = True  # differentiable crop/flip at every PGD step
    target_map: Literal["shift", "random"] = "shift"
    poison_rate: float = 1.0  # fraction of the training set poisoned

    PRESETS = {
        "paper": {"arch": "resnet18", "width": 1.0, "lr": 0.1, "batch_size": 128, "steps": 250, "step_size": 1 / 255,
                  "surrogate_epochs": 40},
    }

    def validate(self) -> None:
        super().validate()
        check_budget(self.budget)
        check(0 < self.step_size <= self.budget, f"step_size must be in (0, budget]; got {self.step_size}")
        check(self.steps >= 1, f"steps must be ≥ 1; got {self.steps}")
        check(self.surrogate_epochs >= 1, f"surrogate_epochs must be ≥ 1; got {self.surrogate_epochs}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")


def class_permutation(num_classes: int, mode: str, seed: int) -> np.ndarray:
    """t[y]: the target class of class y; never y itself."""
    if mode == "shift":
        return (np.arange(num_classes) + 1) % num_classes
    rng = numpy_rng("tap", "permutation", seed)
    while True:  # rejection sampling of a derangement (expected e ≈ 2.7 draws)
        perm = rng.permutation(num_classes)
        if not (perm == np.arange(num_classes)).any():
            return perm


@register_attack
class TAP(TrainerSurrogateKey, Attack):
    name = "tap"
    kind = "availability"
    config_class = TAPConfig
    summary = "Targeted adversarial poisoning: PGD toward a permuted class on a clean surrogate (Fowl et al. 2021)"
    cache_version = 1
    cache_exclude = RUN_FIELDS
    stop_after: int | None = None  # stop (with a checkpoint) after this many PGD batches

    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        return run_cached(self, ds, seed, lambda ck: self._generate(ds, seed, ck))

    def surrogate(self, ds: ImageDataset, seed: int, device: torch.device, ck: Checkpoint) -> torch.nn.Module:
        """The frozen model the PGD steers toward t(y): here one surrogate trained on the clean data."""
        cfg = self.config
        return train_clean_surrogate(cfg, ds, seed, self.name, cfg.surrogate_epochs, device, ck.surrogate_path)

    def extra_metadata(self) -> dict[str, Any]:
        return {}

    def _generate(self, ds: ImageDataset, seed: int, ck: Checkpoint) -> PoisonedDataset:
        cfg = self.config
        dev, (chosen, is_poison, images, norms) = open_generation(ds, cfg.device, cfg.poison_rate, self.name, seed)
        perm = class_permutation(ds.num_classes, cfg.target_map, seed)
        if len(chosen):
            model = self.surrogate(ds, seed, dev, ck)
            x_u8 = torch.from_numpy(ds.images[chosen]).permute(0, 3, 1, 2).contiguous()
            targets = torch.from_numpy(perm[ds.labels[chosen]])
            delta = pgd_sweep(model, x_u8, targets, ck, eps=cfg.budget, step=cfg.step_size, steps=cfg.steps,
                              minimize=True, batch_size=cfg.batch_size, seed=seed, tag=self.name,
                              augment_input=cfg.augment, device=dev, progress=cfg.progress,
                              description=f"{self.name}: PGD")
            images[chosen] = quantise(ds.images[chosen], delta, cfg.budget)
            norms[chosen] = measure_norms(images[chosen], ds.images[chosen], "linf")
        return clean_label_result(
            ds, images, is_poison, norms,
            attack=self.metadata(norm="linf", budget=cfg.budget, seed=seed, class_permutation=perm.tolist(),
                                 **self.extra_metadata()),
            artifacts={"class_permutation": perm.astype(np.int64)},
        )
