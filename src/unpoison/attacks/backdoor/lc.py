"""LC: the Label-Consistent backdoor (Turner, Tsipras & Madry, 2019, "Label-Consistent Backdoor Attacks").

Clean-label. Images *of the target class* are first made hard to learn from their content with an untargeted L∞
PGD perturbation (ε = 16/255 by default, Turner et al.'s strongest L∞ setting) that maximizes a surrogate's loss on
their (correct) label; then a trigger is stamped on them and the labels are left unchanged. A model trained on them
leans on the trigger to classify these images, so at test time the trigger pulls other classes to the target.

Trigger: a 3×3 black-and-white checkerboard in each of the four corners (``corners="four"``; mirrored, so the
trigger is the same after a horizontal flip — the victim's flip augmentation cannot hide it), or bottom-right only
(``corners="one"``). ``amplitude`` scales the trigger for the training images (Turner et al.'s reduced-amplitude
variant: each trigger pixel moves by at most ``amplitude``·255 toward black or white); the test-time trigger uses
``test_amplitude`` (1 = the full pattern). At amplitude 1 the stamp sets the pixels to exactly 0 or 255.

Surrogate: Turner et al. use an adversarially trained model; here (as BackdoorBench's pre-generated data and this
toolkit's CPU budget suggest) a normally trained one, FastNet width 0.25, 4 epochs of the quick recipe by default.
PGD: 10 steps of 2/255 by default (``paper`` preset: 100 steps, ResNet-18 — unverified step count).

Poison count, as SIG: ``poison_rate`` of the whole set, all drawn from the target class (default 0.1, BackdoorBench's
pratio, which on balanced CIFAR-10 is the whole target class), or ``target_fraction`` of the target class when set
(it then overrides ``poison_rate``). ``poison_norms`` holds the L∞ of the whole change (trigger included); the
metadata's ``adv_linf_max`` is the largest change outside the trigger pixels, which is ≤ ``budget``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch

from unpoison.attacks.backdoor.common import CHUNK, BackdoorConfig, CleanLabelBackdoor, chunked, to_uint8
from unpoison.attacks.base import clean_label_result, measure_norms, register_attack
from unpoison.attacks.cache import Checkpoint, run_cached
from unpoison.attacks.labelmaps import choose_poison_indices
from unpoison.attacks.surrogate import (RUN_FIELDS, SurrogateConfig, TrainerSurrogateKey, check_budget,
                                        grey_levels, pgd_sweep, poison_slots, quantise,
                                        train_clean_surrogate)
from unpoison.config import check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.device import select_device
from unpoison.utils.seed import numpy_rng


@dataclasses.dataclass
class LCConfig(SurrogateConfig, BackdoorConfig):
    poison_rate: float = 0.1  # fraction of the whole set, all from the target class (= all of it on CIFAR-10)
    target_fraction: float | None = None  # fraction of the target class poisoned; overrides poison_rate
    budget: float = 16 / 255  # L∞ bound of the adversarial perturbation
    step_size: float = 2 / 255  # PGD step
    steps: int = 10  # PGD steps
    surrogate_epochs: int = 4  # clean surrogate training (quick recipe)
    lr: float = 0.2  # surrogate learning rate (the quick recipe's)
    patch_size: int = 3  # side of each corner patch
    corners: Literal["four", "one"] = "four"
    amplitude: float = 1.0  # trigger amplitude on the poisoned training images (reduced-amplitude variant < 1)
    test_amplitude: float = 1.0  # trigger amplitude at test time

    PRESETS = {
        "paper": {"arch": "resnet18", "width": 1.0, "lr": 0.1, "batch_size": 128, "steps": 100,
                  "step_size": 2 / 255, "surrogate_epochs": 40},
    }

    def validate(self) -> None:
        BackdoorConfig.validate(self)
        SurrogateConfig.validate(self)
        check(self.label_mode == "all2one", f"LC is a clean-label all2one attack; label_mode must be all2one, "
                                            f"got {self.label_mode}")
        check(self.target_fraction is None or 0.0 <= self.target_fraction <= 1.0,
              f"target_fraction must be in [0, 1] or unset; got {self.target_fraction}")
        check_budget(self.budget)
        check(0 < self.step_size <= self.budget, f"step_size must be in (0, budget]; got {self.step_size}")
        check(self.steps >= 0, f"steps must be ≥ 0; got {self.steps}")
        check(self.surrogate_epochs >= 1, f"surrogate_epochs must be ≥ 1; got {self.surrogate_epochs}")
        check(self.patch_size >= 1, f"patch_size must be ≥ 1; got {self.patch_size}")
        check(0 < self.amplitude <= 1, f"amplitude must be in (0, 1]; got {self.amplitude}")
        check(0 < self.test_amplitude <= 1, f"test_amplitude must be in (0, 1]; got {self.test_amplitude}")


def corner_sign(shape: tuple[int, int, int], patch: int, corners: str) -> np.ndarray:
    """int8 (H, W): +1 (white), −1 (black), 0 (untouched); checkerboards mirrored into the chosen corners."""
    h, w, _ = shape
    if 2 * patch > min(h, w) and corners == "four" or patch > min(h, w):
        raise UnpoisonError(f"LC patch_size {patch} does not fit {corners} corner(s) of {h}×{w} images")
    cell = np.where((np.add.outer(np.arange(patch), np.arange(patch)) % 2) == 0, 1, -1).astype(np.int8)
    sign = np.zeros((h, w), dtype=np.int8)
    sign[h - patch:, w - patch:] = cell[::-1, ::-1]
    if corners == "four":
        sign[:patch, :patch] = cell
        sign[:patch, w - patch:] = cell[:, ::-1]
        sign[h - patch:, :patch] = cell[::-1, :]
    return sign


@register_attack
class LabelConsistent(TrainerSurrogateKey, CleanLabelBackdoor):
    name = "lc"
    config_class = LCConfig
    summary = ("Label-consistent clean-label backdoor: PGD-perturbed target-class images + corner checkerboards "
               "(Turner et al. 2019)")
    trigger_keys = ("sign",)
    norm = "linf"
    cache_version = 1
    cache_exclude = RUN_FIELDS
    stop_after: int | None = None  # stop (with a checkpoint) after this many PGD batches

    # --- trigger ----------------------------------------------------------------------------------------------------
    def make_trigger(self, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        return {"sign": corner_sign(shape, self.config.patch_size, self.config.corners)}

    def check_trigger(self, trigger: dict[str, np.ndarray], shape: tuple[int, int, int]) -> None:
        sign = trigger["sign"]
        if sign.shape != shape[:2] or not np.isin(sign, (-1, 0, 1)).all():
            raise UnpoisonError(f"saved LC trigger has shape {sign.shape}; expected {shape[:2]} with values in "
                                "{-1, 0, 1}")

    @staticmethod
    def _stamp(images: np.ndarray, sign: np.ndarray, amplitude: float) -> np.ndarray:
        step = np.float32(amplitude * 255.0) * sign.astype(np.float32)[None, :, :, None]
        return to_uint8(images.astype(np.float32) + step)

    def stamp(self, images: np.ndarray, trigger: dict[str, np.ndarray]) -> np.ndarray:
        return self._stamp(images, trigger["sign"], self.config.test_amplitude)

    def stamp_poison(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        return self._stamp(images, trigger["sign"], self.config.amplitude)

    def budget(self) -> float:
        return self.config.budget

    def trigger_metadata(self) -> dict[str, Any]:
        return {"norm": self.norm, "budget": self.config.budget, "trigger_amplitude": self.config.amplitude,
                "test_amplitude": self.config.test_amplitude}

    # --- poisoning ----------------------------------------------------------------------------------------------
    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        self._check_classes(ds.num_classes)
        trig = self.trigger(ds.image_shape)
        return run_cached(self, ds, seed, lambda ck: self._generate(ds, seed, trig, ck))

    def _generate(self, ds: ImageDataset, seed: int, trig: dict[str, np.ndarray], ck: Checkpoint) -> PoisonedDataset:
        cfg = self.config
        n = len(ds)
        rng = numpy_rng(self.name, seed)
        k = self.poison_count(ds.labels)
        picked = choose_poison_indices(self.poison_pool(ds.labels), k / n, n, rng)
        chosen, is_poison, images, norms = poison_slots(ds, picked)
        adv_max = 0.0
        if len(chosen):
            adv = ds.images[chosen]
            if cfg.steps:
                dev = select_device(cfg.device)
                model = train_clean_surrogate(cfg, ds, seed, self.name, cfg.surrogate_epochs, dev, ck.surrogate_path)
                x_u8 = torch.from_numpy(adv).permute(0, 3, 1, 2).contiguous()
                y = torch.from_numpy(ds.labels[chosen])
                delta = pgd_sweep(model, x_u8, y, ck, eps=cfg.budget, step=cfg.step_size, steps=cfg.steps,
                                  minimize=False, batch_size=cfg.batch_size, seed=seed, tag=self.name,
                                  augment_input=False, device=dev, progress=cfg.progress,
                                  description=f"{self.name}: PGD")
                adv = quantise(adv, delta, cfg.budget)
            images[chosen] = chunked(lambda x: self.stamp_poison(x, trig, rng), adv)
            outside = trig["sign"] == 0
            for i in range(0, len(chosen), CHUNK):
                j = chosen[i:i + CHUNK]
                norms[j] = measure_norms(images[j], ds.images[j], self.norm)
                d = np.abs(images[j].astype(np.int16) - ds.images[j].astype(np.int16))[:, outside]
                adv_max = max(adv_max, float(d.max()) / 255.0 if d.size else 0.0)
        return clean_label_result(
            ds, images, is_poison, norms,
            attack=self.metadata(**self.trigger_metadata(), seed=seed, adv_linf_max=adv_max,
                                 adv_budget_levels=grey_levels(cfg.budget)),
            artifacts=self.artifacts(),
        )
