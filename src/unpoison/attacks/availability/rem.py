"""REM: robust error-minimizing noise (Fu et al., ICLR 2022, "Robust Unlearnable Examples: Protecting Data Against
Adversarial Learning").

Sample-wise, clean-label, L∞ ≤ ε (8/255). EM's min-min becomes a min-min-max: the noise δ minimizes the loss of an
*adversarially trained* surrogate under a defensive adversarial perturbation ρ of radius ρ_a < ε, in expectation over
data augmentations T (EOT):

    min_θ E[ min_{‖δ‖∞≤ε} E_T max_{‖ρ‖∞≤ρ_a} L(f_θ(T(x + δ) + ρ), y) ].

Solved by the same alternation as :mod:`~unpoison.attacks.availability.em`: rounds of ``train_steps`` adversarial
training steps of the surrogate (ρ from ``adv_steps``-step PGD, zero start) on T(x + δ), then a sweep over the data in
which every δ takes ``pgd_steps`` signed-gradient descent steps on the loss averaged over ``eot_samples`` random
crops/flips, each with its own inner maximisation over ρ. A fixed number of ``rounds`` (REM has no accuracy-based
stop: robust accuracy seldom reaches 99%).

Paper-scale values (``paper`` preset; as we recall them from the official repository's defaults — unverified here):
ResNet-18, ε = 8/255 with 10 steps of 1.6/255, ρ_a = 4/255 with 10 steps of 0.8/255, 5 EOT samples, 5,000 surrogate
steps in all (here: 50 rounds × 100 steps; the official schedule interleaves noise updates with training steps
differently). CPU defaults (field defaults): FastNet width 0.25; 3 rounds × 10 surrogate steps; 5 PGD steps of
1.6/255; ρ_a = 4/255 kept, with 2 inner steps of 2/255; 2 EOT samples. This cuts the cost of a sweep from
10·5·11 = 550 to 5·2·3 = 30 forward/backward passes per image.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from unpoison.attacks.availability.em import MinMinAttack
from unpoison.attacks.base import register_attack
from unpoison.attacks.surrogate import SurrogateConfig, augment, check_budget, linf_pgd
from unpoison.config import check


@dataclasses.dataclass
class REMConfig(SurrogateConfig):
    budget: float = 8 / 255  # L∞ bound ε of the unlearnable noise δ
    step_size: float = 1.6 / 255  # PGD step for δ
    pgd_steps: int = 5  # PGD steps for δ per sweep (paper 10)
    adv_radius: float = 4 / 255  # ρ_a, the defensive perturbation radius (paper's CIFAR-10 main setting 4/255)
    adv_step_size: float = 2 / 255  # PGD step for ρ (paper 0.8/255 with 10 steps)
    adv_steps: int = 2  # PGD steps for ρ (paper 10)
    eot_samples: int = 2  # augmentations averaged per δ step (paper 5)
    train_steps: int = 10  # adversarial-training steps of the surrogate per round
    rounds: int = 3  # rounds of (train_steps, one δ sweep)
    poison_rate: float = 1.0  # fraction of the training set poisoned

    PRESETS = {
        "paper": {"arch": "resnet18", "width": 1.0, "batch_size": 128, "lr": 0.1, "step_size": 1.6 / 255,
                  "pgd_steps": 10, "adv_radius": 4 / 255, "adv_step_size": 0.8 / 255, "adv_steps": 10,
                  "eot_samples": 5, "train_steps": 100, "rounds": 50},
    }

    def validate(self) -> None:
        super().validate()
        check_budget(self.budget)
        check(0 < self.step_size <= self.budget, f"step_size must be in (0, budget]; got {self.step_size}")
        check(self.pgd_steps >= 1, f"pgd_steps must be ≥ 1; got {self.pgd_steps}")
        check(0 <= self.adv_radius <= 1, f"adv_radius must be in [0, 1]; got {self.adv_radius}")
        check(self.adv_step_size > 0, f"adv_step_size must be > 0; got {self.adv_step_size}")
        check(self.adv_steps >= 0, f"adv_steps must be ≥ 0; got {self.adv_steps}")
        check(self.eot_samples >= 1, f"eot_samples must be ≥ 1; got {self.eot_samples}")
        check(self.train_steps >= 0, f"train_steps must be ≥ 0; got {self.train_steps}")
        check(self.rounds >= 1, f"rounds must be ≥ 1; got {self.rounds}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")


@register_attack
class REM(MinMinAttack):
    name = "rem"
    config_class = REMConfig
    summary = ("Robust error-minimizing noise: min-min-max against an adversarially trained surrogate with EOT "
               "(Fu et al. 2022; L∞ ≤ budget)")

    def _rho(self, model: torch.nn.Module, xt: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inner maximisation: a defensive perturbation of radius ρ_a for (already augmented) images ``xt``."""
        cfg = self.config
        if cfg.adv_steps == 0 or cfg.adv_radius == 0:
            return torch.zeros_like(xt)
        was_training = model.training
        model.eval()
        rho = linf_pgd(model, xt.detach(), torch.zeros_like(xt), y, eps=cfg.adv_radius, step=cfg.adv_step_size,
                       steps=cfg.adv_steps, minimize=False)
        model.train(was_training)
        return rho

    def train_step(self, model: torch.nn.Module, xb: torch.Tensor, yb: torch.Tensor,
                   g: torch.Generator) -> torch.Tensor:
        xt = augment(xb, g)
        return F.cross_entropy(model(xt + self._rho(model, xt, yb)), yb)

    def noise_step(self, model: torch.nn.Module, x: torch.Tensor, d: torch.Tensor, y: torch.Tensor,
                   g: torch.Generator) -> torch.Tensor:
        cfg = self.config

        def loss_fn(xa: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
            total = 0.0
            for _ in range(cfg.eot_samples):
                xt = augment(xa, g)
                total = total + F.cross_entropy(model(xt + self._rho(model, xt, yy)), yy)
            return total / cfg.eot_samples

        return linf_pgd(model, x, d, y, eps=cfg.budget, step=cfg.step_size, steps=cfg.pgd_steps, minimize=True,
                        loss_fn=loss_fn)

    def stop_rule(self) -> float | None:
        return None

    def rounds(self) -> int:
        return self.config.rounds
