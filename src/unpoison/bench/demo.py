"""``unpoison demo``: the toolkit's main job on an embedded default, end to end on real CIFAR-10."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from unpoison.attacks import create_attack
from unpoison.data import load
from unpoison.defenses import create_purifier
from unpoison.metrics import recovery_ratio
from unpoison.training import TrainConfig, train_on


def run_demo(data_root: str | Path | None = None, seed: int = 0, epochs: int | None = None, progress: bool = False,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """LSP-poison the cpu profile's 20,000 images, then train (quick recipe) on clean, poisoned and JPEG-10 data."""
    say = log or (lambda _msg: None)
    say("loading CIFAR-10 (cpu profile: 20,000 training images, 10,000 test images)")
    train = load("cifar10:cpu", root=data_root, download=True)
    test = load("cifar10:test", root=data_root, download=True)
    cfg = TrainConfig.from_dict({"epochs": epochs} if epochs else {}, preset="quick")
    say("poisoning with LSP (L2 budget 1.30, every training image)")
    poisoned = create_attack("lsp").poison(train, seed=seed)
    say("purifying with JPEG quality 10")
    jpeg = create_purifier("jpeg").fit_purify(poisoned)
    rows = []
    for name, ds in [("clean (reference)", train), ("LSP, no defense", poisoned), ("LSP + JPEG-10", jpeg)]:
        say(f"training on: {name}")
        r = train_on(ds, cfg, test=test, seed=seed, progress=progress)
        rows.append({"name": name, "test_acc": r.test_acc, "seconds": round(r.seconds, 1)})
    clean, pois, defended = (r["test_acc"] for r in rows)
    return {"rows": rows, "recipe": cfg.to_dict(), "seed": seed,
            "recovery_jpeg": recovery_ratio(defended, pois, clean)}
