"""SIG (Barni, Kallas & Tondi, ICIP 2019, "A New Backdoor Attack in CNNs by Training Set Corruption Without Label
Poisoning").

Clean-label: a horizontal sinusoid v(i, j) = δ · sin(2π · j · f / W) (on the 0–255 scale, the same on every row and
channel) is added to training images *of the target class only*, whose labels stay correct. The model learns the
signal as a feature of the target class; at test time adding it to images of other classes flips them to the target.
Defaults δ = 40, f = 6 as BackdoorBench; poison_rate 0.1 of the whole set (BackdoorBench pratio), which on CIFAR-10 is
the whole target class. ``target_fraction`` states the poisoned fraction of the target class directly instead.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from unpoison.attacks.backdoor.common import BackdoorConfig, CleanLabelBackdoor, to_uint8
from unpoison.attacks.base import register_attack
from unpoison.config import check
from unpoison.errors import UnpoisonError


@dataclasses.dataclass
class SIGConfig(BackdoorConfig):
    poison_rate: float = 0.1  # fraction of the whole set, all from the target class (BackdoorBench pratio)
    target_fraction: float | None = None  # fraction of the target class poisoned; overrides poison_rate
    delta: float = 40.0  # amplitude on the 0–255 scale (BackdoorBench)
    f: float = 6.0  # periods across the image width (BackdoorBench)

    def validate(self) -> None:
        super().validate()
        check(self.label_mode == "all2one", f"SIG is a clean-label all2one attack; label_mode must be all2one, "
                                            f"got {self.label_mode}")
        check(self.target_fraction is None or 0.0 <= self.target_fraction <= 1.0,
              f"target_fraction must be in [0, 1] or unset; got {self.target_fraction}")
        check(self.delta > 0, f"delta must be > 0; got {self.delta}")
        check(self.f > 0, f"f must be > 0; got {self.f}")


@register_attack
class SIG(CleanLabelBackdoor):
    name = "sig"
    config_class = SIGConfig
    summary = "Clean-label sinusoidal signal δ·sin(2πjf/W) added to target-class training images (Barni et al. 2019)"
    trigger_keys = ("signal",)
    norm = "linf"  # |Δ| ≤ δ/255

    def make_trigger(self, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        w = shape[1]
        j = np.arange(w, dtype=np.float64)
        return {"signal": (self.config.delta * np.sin(2 * np.pi * j * self.config.f / w)).astype(np.float32)}

    def check_trigger(self, trigger: dict[str, np.ndarray], shape: tuple[int, int, int]) -> None:
        sig = trigger["signal"]
        if sig.dtype != np.float32 or sig.shape != (shape[1],):
            raise UnpoisonError(f"saved SIG signal has shape {sig.shape} and dtype {sig.dtype}; "
                                f"expected float32 ({shape[1]},)")

    def stamp(self, images: np.ndarray, trigger: dict[str, np.ndarray]) -> np.ndarray:
        return to_uint8(images.astype(np.float32) + trigger["signal"][None, None, :, None])

    def budget(self) -> float:
        return self.config.delta / 255.0
