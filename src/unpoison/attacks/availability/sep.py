"""SEP: self-ensemble protection (Chen et al., ICLR 2023, "Self-Ensemble Protection: Training Checkpoints Are Good
Data Protectors").

Sample-wise, clean-label, L∞ ≤ ε. One surrogate is trained normally on the *clean* data and K of its checkpoints
along that single run form an ensemble; every training image then gets a targeted perturbation toward a fixed class
permutation of its label, t(y), by PGD that minimizes the cross-entropy of the ensemble, each step through a fresh
random crop/flip. It is TAP with the gradient of many training stages instead of one final model: the paper's point
is that checkpoints from one run are as diverse as separately trained models, and far cheaper.

Reading of the method (the official ``ens.py`` is not available here; these points are our reading, unverified):
the ensemble averages the checkpoints' logits; the checkpoints are spaced evenly over the run; the target map is
TAP's. The ``paper`` preset keeps what the official README gives (15 models, ε = 2/255) with a ResNet-18 surrogate;
ECLIPSE evaluates SEP at ε = 8/255, which is this tool's default. CPU defaults: a FastNet×0.25 surrogate trained
5 epochs with the quick recipe, a checkpoint after every epoch (K = 5), 10 PGD steps of 1/255.

Resume: the K checkpoints are written to the generation's cache folder once the surrogate run ends, and the PGD
sweep checkpoints after every batch. An interruption during the surrogate run (about a minute at the cpu profile)
retrains it; the snapshots cannot come from a resumed run, whose earlier epochs are gone.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Literal

import numpy as np
import torch
import torch.nn as nn

from unpoison.attacks.availability.tap import class_permutation
from unpoison.attacks.base import Attack, measure_norms, register_attack
from unpoison.attacks.cache import Checkpoint, run_cached
from unpoison.attacks.surrogate import RUN_FIELDS, SurrogateConfig, check_budget, open_generation, pgd_sweep, quantise
from unpoison.config import check
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.utils.seed import derive_seed


@dataclasses.dataclass
class SEPConfig(SurrogateConfig):
    lr: float = 0.2  # the quick recipe's
    budget: float = 8 / 255  # L∞ bound ε (ECLIPSE's protocol; the SEP README's default is 2/255)
    step_size: float = 1 / 255  # PGD step
    steps: int = 10  # PGD steps
    surrogate_epochs: int = 5  # the one clean training run the checkpoints come from
    num_models: int = 5  # K checkpoints in the ensemble, evenly spaced over the run (the last is the final model)
    augment: bool = True  # differentiable crop/flip at every PGD step
    target_map: Literal["shift", "random"] = "shift"
    poison_rate: float = 1.0  # fraction of the training set poisoned

    PRESETS = {
        "paper": {"arch": "resnet18", "width": 1.0, "lr": 0.1, "batch_size": 128, "budget": 2 / 255,
                  "num_models": 15, "surrogate_epochs": 120, "steps": 100},  # epochs and steps: unverified
    }

    def validate(self) -> None:
        super().validate()
        check_budget(self.budget)
        check(0 < self.step_size <= self.budget, f"step_size must be in (0, budget]; got {self.step_size}")
        check(self.steps >= 1, f"steps must be ≥ 1; got {self.steps}")
        check(self.surrogate_epochs >= 1, f"surrogate_epochs must be ≥ 1; got {self.surrogate_epochs}")
        check(1 <= self.num_models <= self.surrogate_epochs,
              f"num_models must be in [1, surrogate_epochs={self.surrogate_epochs}] (one checkpoint per epoch at "
              f"most); got {self.num_models}")
        check(0.0 <= self.poison_rate <= 1.0, f"poison_rate must be in [0, 1]; got {self.poison_rate}")


class CheckpointEnsemble(nn.Module):
    """The mean of K models' logits; the models are frozen (PGD needs gradients with respect to the input only)."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(models)
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


def snapshot_epochs(epochs: int, k: int) -> list[int]:
    """The K epochs (1-based) after which a checkpoint is kept: evenly spaced, the last one the final epoch."""
    return sorted({round(epochs * (i + 1) / k) for i in range(k)})


@register_attack
class SEP(Attack):
    name = "sep"
    kind = "availability"
    config_class = SEPConfig
    summary = ("Self-ensemble protection: targeted PGD against an ensemble of one training run's checkpoints "
               "(Chen et al. 2023; L∞ ≤ budget)")
    cache_version = 1
    cache_exclude = RUN_FIELDS
    stop_after: int | None = None  # stop (with a checkpoint) after this many PGD batches

    def poison(self, ds: ImageDataset, seed: int = 0) -> PoisonedDataset:
        return run_cached(self, ds, seed, lambda ck: self._generate(ds, seed, ck))

    def checkpoints(self, ds: ImageDataset, seed: int, device: torch.device, ck: Checkpoint) -> CheckpointEnsemble:
        """Train the surrogate once and keep K of its checkpoints (or load them from an interrupted generation)."""
        from safetensors.torch import load_file, save_file

        from unpoison.training import TrainConfig, Trainer
        from unpoison.utils.io import atomic_path

        cfg = self.config
        tcfg = TrainConfig.from_dict(preset="quick").replace(arch=cfg.arch, width=cfg.width, epochs=cfg.surrogate_epochs,
                                                              lr=cfg.lr, batch_size=cfg.batch_size)
        trainer = Trainer(tcfg, device=device, progress=cfg.progress)
        tseed = derive_seed(self.name, "surrogate", seed)
        keep = snapshot_epochs(cfg.surrogate_epochs, cfg.num_models)
        path = None if ck.folder is None else ck.folder / "snapshots.safetensors"

        def fresh() -> nn.Module:
            return trainer.build_model(ds, tseed).to(device)

        if path is not None and path.exists():
            flat = load_file(str(path))
            models = []
            for e in keep:
                m = fresh()
                m.load_state_dict({k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(f"e{e}.")})
                models.append(m)
            return CheckpointEnsemble(models)
        model = fresh()
        states: dict[int, dict[str, torch.Tensor]] = {}

        def on_epoch(log) -> None:  # noqa: ANN001
            if log.epoch in keep:
                states[log.epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        trainer.on_epoch = on_epoch
        trainer.fit(ds, model=model, seed=tseed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path, suffix=".tmp.safetensors") as tmp:
                save_file({f"e{e}.{k}": v.contiguous().cpu() for e, s in states.items() for k, v in s.items()},
                          str(tmp))
        models = []
        for e in keep:
            m = fresh()
            m.load_state_dict(states[e])
            models.append(m)
        return CheckpointEnsemble(models)

    def _generate(self, ds: ImageDataset, seed: int, ck: Checkpoint) -> PoisonedDataset:
        cfg = self.config
        dev, (chosen, is_poison, images, norms) = open_generation(ds, cfg.device, cfg.poison_rate, self.name, seed)
        perm = class_permutation(ds.num_classes, cfg.target_map, seed)
        if len(chosen):
            ensemble = self.checkpoints(ds, seed, dev, ck)
            x_u8 = torch.from_numpy(ds.images[chosen]).permute(0, 3, 1, 2).contiguous()
            targets = torch.from_numpy(perm[ds.labels[chosen]])
            delta = pgd_sweep(ensemble, x_u8, targets, ck, eps=cfg.budget, step=cfg.step_size, steps=cfg.steps,
                              minimize=True, batch_size=cfg.batch_size, seed=seed, tag=self.name,
                              augment_input=cfg.augment, device=dev, progress=cfg.progress,
                              description=f"{self.name}: PGD ({len(ensemble.members)} checkpoints)")
            images[chosen] = quantise(ds.images[chosen], delta, cfg.budget)
            norms[chosen] = measure_norms(images[chosen], ds.images[chosen], "linf")
        return PoisonedDataset(
            images, ds.labels.copy(), ds.class_names, source=ds.source, indices=ds.indices,
            meta=copy.deepcopy(ds.meta), is_poison=is_poison, original_labels=ds.labels.copy(),
            clean_images=ds.images, poison_norms=norms,
            attack=self.metadata(norm="linf", budget=cfg.budget, seed=seed, class_permutation=perm.tolist(),
                                 checkpoint_epochs=snapshot_epochs(cfg.surrogate_epochs, cfg.num_models)),
            artifacts={"class_permutation": perm.astype(np.int64)},
        )
