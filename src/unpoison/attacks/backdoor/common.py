"""Plumbing shared by the trigger backdoors (BadNets, Blend, Adaptive-Blend, WaNet, k-pixel, SIG, LC).

:class:`TriggerBackdoor` and :class:`BackdoorConfig`: label maps, class-count bookkeeping, sample and cover
selection, trigger caching and the artifacts that let :meth:`BackdoorAttack.from_poisoned` re-stamp a test split.
"""

from __future__ import annotations

import copy
import dataclasses
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np

from unpoison.attacks.base import BackdoorAttack, measure_norms
from unpoison.attacks.labelmaps import choose_poison_indices, eligible, target_labels
from unpoison.config import Config, check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.seed import numpy_rng

# Images per block for the float work: bounds the float32 copies (2,048 CIFAR images ≈ 25 MB each). Per-sample
# randomness is drawn block by block, so this constant is part of what makes a seed reproducible: do not change it.
CHUNK = 2048


@dataclasses.dataclass
class BackdoorConfig(Config):
    """Fields every model-free backdoor shares (subclasses may change the defaults)."""

    target: int = 0  # target class (all2one)
    poison_rate: float = 0.1  # fraction of the whole training set; 0 gives a clean baseline
    label_mode: Literal["all2one", "all2all"] = "all2one"
    source: int = -1  # -1: any class; otherwise only this class is poisoned and counts for ASR (source-specific)

    def validate(self) -> None:
        check(self.target >= 0, f"target must be ≥ 0; got {self.target}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")
        check(self.source >= -1, f"source must be -1 (any class) or a class index; got {self.source}")
        check(not (self.label_mode == "all2one" and self.source == self.target),
              f"source and target are both {self.target}: an all2one attack has nothing to poison")


def check_images(images: Any) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise UnpoisonError(f"apply_trigger expects uint8 images (N, H, W, C); got {images.dtype} {images.shape}")
    return images


def chunked(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """``fn`` applied block by block (uint8 in, uint8 out of the same shape)."""
    out = np.empty_like(images)
    for i in range(0, len(images), CHUNK):
        out[i:i + CHUNK] = fn(images[i:i + CHUNK])
    return out


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Round half to even and clip: the one quantisation every float trigger goes through."""
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


class TriggerBackdoor(BackdoorAttack):
    """A backdoor whose trigger is a fixed array (per image shape) stamped without any model.

    Subclasses give :meth:`make_trigger` (arrays named in ``trigger_keys``) and :meth:`stamp` (the test-time
    trigger). They may override :meth:`stamp_poison` / :meth:`stamp_cover` (training-time variants that use
    per-sample randomness), :meth:`poison_pool` and :meth:`poison_count` (which samples, how many).
    """

    config_class: ClassVar[type[BackdoorConfig]] = BackdoorConfig
    trigger_keys: ClassVar[tuple[str, ...]] = ()
    norm: ClassVar[str] = "linf"  # the norm poison_norms is measured in
    clean_label: ClassVar[bool] = False  # True: poisoned samples keep their labels
    has_cover: ClassVar[bool] = False  # True: the attack also stamps correctly-labelled "cover" samples

    def __init__(self, config: Config | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._trigger: dict[str, np.ndarray] | None = None
        self._shape: tuple[int, int, int] | None = None  # (H, W, C) the trigger was made for
        self._loaded = False  # a restored trigger wins over one the config would generate
        self._num_classes: int | None = None  # all2all needs K; learnt in poison/poison_test or restored

    # --- to implement ---------------------------------------------------------------------------------------------
    @abstractmethod
    def make_trigger(self, shape: tuple[int, int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The trigger arrays for images of ``shape`` (H, W, C), drawn from ``rng`` where random."""

    @abstractmethod
    def stamp(self, images: np.ndarray, trigger: dict[str, np.ndarray]) -> np.ndarray:
        """The test-time trigger on a block of uint8 images."""

    def stamp_poison(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """The training-time trigger of poisoned samples (by default the test-time one)."""
        return self.stamp(images, trigger)

    def stamp_cover(self, images: np.ndarray, trigger: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def budget(self) -> float | None:
        """The nominal perturbation budget recorded in the metadata (in ``norm``, on the [0, 1] scale)."""
        return None

    def trigger_metadata(self) -> dict[str, Any]:
        return {"norm": self.norm, "budget": self.budget()}

    def check_trigger(self, trigger: dict[str, np.ndarray], shape: tuple[int, int, int]) -> None:
        """Raise if restored arrays do not fit ``shape`` (subclasses check theirs)."""

    # --- trigger ------------------------------------------------------------------------------------------------
    def trigger(self, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """The trigger for (H, W, C) images: cached, restored from artifacts, or generated from ``trigger_seed``."""
        h, w, c = (int(s) for s in shape)
        shape3 = (h, w, c)
        if self._trigger is not None and self._shape == shape3:
            return self._trigger
        if self._loaded:
            raise UnpoisonError(f"the saved {self.name} trigger was made for {self._shape} images (H, W, C); "
                                f"these are {shape3}")
        seed = getattr(self.config, "trigger_seed", 0)
        self._trigger = self.make_trigger(shape3, numpy_rng(self.name, "trigger", seed, *shape3))
        self._shape = shape3
        return self._trigger

    def apply_trigger(self, images: np.ndarray) -> np.ndarray:
        images = check_images(images)
        trig = self.trigger(images.shape[1:])
        return chunked(lambda x: self.stamp(x, trig), images)

    def artifacts(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if self._trigger is not None:
            out.update({k: v.copy() for k, v in self._trigger.items()})
            out["image_shape"] = np.asarray(self._shape, dtype=np.int64)
        if self._num_classes is not None:
            out["num_classes"] = np.asarray(self._num_classes, dtype=np.int64)
        return out

    def load_artifacts(self, artifacts: dict[str, np.ndarray]) -> None:
        if "image_shape" in artifacts:
            shape = tuple(int(s) for s in np.asarray(artifacts["image_shape"]).ravel())
            missing = [k for k in self.trigger_keys if k not in artifacts]
            if len(shape) != 3 or missing:
                raise UnpoisonError(f"saved {self.name} artifacts are incomplete: image_shape {shape}, "
                                    f"missing {', '.join(missing) or 'nothing'}")
            trig = {k: np.asarray(artifacts[k]).copy() for k in self.trigger_keys}
            self.check_trigger(trig, shape)  # type: ignore[arg-type]
            self._trigger, self._shape, self._loaded = trig, shape, True  # type: ignore[assignment]
        if "num_classes" in artifacts:
            self._num_classes = int(np.asarray(artifacts["num_classes"]))

    # --- labels -------------------------------------------------------------------------------------------------
    def target_labels(self, labels: np.ndarray) -> np.ndarray:
        if self.config.label_mode == "all2all" and self._num_classes is None:
            raise UnpoisonError(f"all2all {self.name} needs the number of classes: poison a dataset first, "
                                "or rebuild the attack with BackdoorAttack.from_poisoned")
        return target_labels(labels, self.config.label_mode, self.config.target, self._num_classes or 0)

    def source_mask(self, labels: np.ndarray) -> np.ndarray:
        # A source-specific attack is only meant to fire on its source class, so ASR counts only those.
        return eligible(labels, self.config.label_mode, self.config.target, self.config.source)

    def _check_classes(self, num_classes: int) -> None:
        cfg = self.config
        if cfg.label_mode == "all2one" and cfg.target >= num_classes:
            raise UnpoisonError(f"target {cfg.target} is out of range for {num_classes} classes")
        if cfg.source >= num_classes:
            raise UnpoisonError(f"source {cfg.source} is out of range for {num_classes} classes")
        self._num_classes = num_classes

    def poison_test(self, test: ImageDataset) -> PoisonedDataset:
        if self._num_classes is None:
            self._check_classes(test.num_classes)
        elif self._num_classes != test.num_classes:
            raise UnpoisonError(f"the attack was built for {self._num_classes} classes; the test set has "
                                f"{test.num_classes}")
        return super().poison_test(test)

    # --- poisoning ----------------------------------------------------------------------------------------------
    def poison_pool(self, labels: np.ndarray) -> np.ndarray:
        """Which training samples may be poisoned."""
        return eligible(labels, self.config.label_mode, self.config.target, self.config.source)

    def poison_count(self, labels: np.ndarray) -> int:
        """How many training samples to poison."""
        return int(round(self.config.poison_rate * len(labels)))

    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        self._check_classes(ds.num_classes)
        n = len(ds)
        trig = self.trigger(ds.image_shape)  # made even at rate 0, so the artifacts always hold a trigger
        rng = numpy_rng(self.name, seed)
        k = self.poison_count(ds.labels)
        # choose_poison_indices counts round(rate · n); k / n · n rounds back to exactly k.
        chosen = choose_poison_indices(self.poison_pool(ds.labels), k / n, n, rng)
        is_poison = np.zeros(n, dtype=bool)
        is_poison[chosen] = True
        cover = np.zeros(0, dtype=np.int64)
        if self.has_cover:
            rate = float(self.config.cover_rate)  # type: ignore[attr-defined]
            n_cover = int(round(rate * n))
            if n_cover > n - len(chosen):
                raise UnpoisonError(f"cover_rate {rate} asks for {n_cover} cover samples but only "
                                    f"{n - len(chosen)} samples are not poisoned")
            cover = choose_poison_indices(~is_poison, n_cover / n, n, rng)  # covers never overlap poisons
        cover_mask = np.zeros(n, dtype=bool)
        cover_mask[cover] = True

        images = ds.images.copy()
        labels = ds.labels.copy()
        images[chosen] = chunked(lambda x: self.stamp_poison(x, trig, rng), ds.images[chosen])
        if len(cover):
            images[cover] = chunked(lambda x: self.stamp_cover(x, trig, rng), ds.images[cover])
        if not self.clean_label:
            labels[chosen] = self.target_labels(ds.labels[chosen])
        # Cover samples are perturbed too: their measured norm is recorded (is_poison stays False for them).
        norms = np.zeros(n, dtype=np.float32)
        touched = np.flatnonzero(is_poison | cover_mask)
        for i in range(0, len(touched), CHUNK):
            j = touched[i:i + CHUNK]
            norms[j] = measure_norms(images[j], ds.images[j], self.norm)

        extra: dict[str, Any] = {"cover_count": int(len(cover))} if self.has_cover else {}
        return PoisonedDataset(
            images, labels, ds.class_names, source=ds.source, indices=ds.indices, meta=copy.deepcopy(ds.meta),
            is_poison=is_poison, original_labels=ds.labels.copy(), clean_images=ds.images, poison_norms=norms,
            is_cover=cover_mask if self.has_cover else None,  # per-sample, so it survives subset/save/load
            attack=self.metadata(**self.trigger_metadata(), seed=seed, **extra), artifacts=self.artifacts(),
        )


class CleanLabelBackdoor(TriggerBackdoor):
    """SIG and LC: the training poisons come from the target class only and keep their correct labels (their configs
    hold label_mode to all2one); ``poison_rate`` of the whole set, or ``target_fraction`` of the target class when
    set. At test time the trigger goes on the other classes (the inherited ``source_mask``)."""

    clean_label = True

    def poison_pool(self, labels: np.ndarray) -> np.ndarray:
        return labels == self.config.target

    def poison_count(self, labels: np.ndarray) -> int:
        if self.config.target_fraction is None:
            return super().poison_count(labels)
        return int(round(self.config.target_fraction * int((labels == self.config.target).sum())))
