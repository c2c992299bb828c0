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

import dataclasses
from typing import Any

import torch
import torch.nn as nn

from unpoison.attacks.availability.tap import TAP, TAPConfig
from unpoison.attacks.base import register_attack
from unpoison.attacks.cache import Checkpoint
from unpoison.attacks.surrogate import surrogate_recipe
from unpoison.config import check
from unpoison.data.dataset import ImageDataset
from unpoison.utils.seed import derive_seed


@dataclasses.dataclass
class SEPConfig(TAPConfig):
    width: float = 0.25
    budget: float = 8 / 255  # L∞ bound ε (ECLIPSE's protocol; the SEP README's default is 2/255)
    steps: int = 10  # PGD steps (each through all K checkpoints)
    surrogate_epochs: int = 5  # the one clean training run the checkpoints come from
    num_models: int = 5  # K checkpoints in the ensemble, evenly spaced over the run (the last is the final model)

    PRESETS = {
        "paper": {"arch": "resnet18", "width": 1.0, "lr": 0.1, "batch_size": 128, "budget": 2 / 255,
                  "num_models": 15, "surrogate_epochs": 120, "steps": 100},  # epochs and steps: unverified
    }

    def validate(self) -> None:
        super().validate()
        check(1 <= self.num_models <= self.surrogate_epochs,
              f"num_models must be in [1, surrogate_epochs={self.surrogate_epochs}] (one checkpoint per epoch at "
              f"most); got {self.num_models}")


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
class SEP(TAP):
    """TAP's generation (class permutation, resumable PGD sweep, quantisation) with the checkpoint ensemble as the
    model it steers."""

    name = "sep"
    config_class = SEPConfig
    summary = ("Self-ensemble protection: targeted PGD against an ensemble of one training run's checkpoints "
               "(Chen et al. 2023; L∞ ≤ budget)")
    cache_version = 1

    def surrogate(self, ds: ImageDataset, seed: int, device: torch.device, ck: Checkpoint) -> CheckpointEnsemble:
        """Train the surrogate once and keep K of its checkpoints (or load them from an interrupted generation)."""
        from safetensors.torch import load_file, save_file

        from unpoison.training import Trainer
        from unpoison.utils.io import atomic_path

        cfg = self.config
        trainer = Trainer(surrogate_recipe(cfg, cfg.surrogate_epochs), device=device, progress=cfg.progress)
        tseed = derive_seed(self.name, "surrogate", seed)
        keep = snapshot_epochs(cfg.surrogate_epochs, cfg.num_models)
        path = None if ck.folder is None else ck.folder / "snapshots.safetensors"

        def fresh() -> nn.Module:
            return trainer.build_model(ds, tseed).to(device)

        if path is not None and path.exists():  # an interrupted generation: the run's checkpoints are kept
            flat = load_file(str(path))
            states = {e: {k.split(".", 1)[1]: v for k, v in flat.items() if k.startswith(f"e{e}.")} for e in keep}
        else:
            model = fresh()
            states = {}

            def on_epoch(log) -> None:  # noqa: ANN001
                if log.epoch in keep:
                    states[log.epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}

            trainer.on_epoch = on_epoch
            trainer.fit(ds, model=model, seed=tseed)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(path, suffix=".tmp.safetensors") as tmp:
                    save_file({f"e{e}.{k}": v.contiguous().cpu() for e, st in states.items() for k, v in st.items()},
                              str(tmp))
        members = []
        for e in keep:
            m = fresh()
            m.load_state_dict(states[e])
            members.append(m)
        return CheckpointEnsemble(members)

    def extra_metadata(self) -> dict[str, Any]:
        return {"checkpoint_epochs": snapshot_epochs(self.config.surrogate_epochs, self.config.num_models)}
