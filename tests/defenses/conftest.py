"""The purifiers' shared end-to-end setting: LSP on a small real CIFAR-10 subset, undefended accuracy trained once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class LSPCase:
    clean_pool: object  # the cpu profile's clean remainder (ECLIPSE's sparse set comes from it)
    poisoned: object  # 1,000 images of the cpu pool, LSP at L2 = 4 (bites the tiny recipe)
    test: object  # 500 test images
    cfg: object  # the tiny classifier recipe
    none: float  # undefended test accuracy under that recipe, seed 1

    def accuracy(self, data) -> float:  # noqa: ANN001
        """Test accuracy of the same recipe and seed as ``none``, trained on ``data``."""
        from unpoison.training import train_on

        return train_on(data, self.cfg, test=self.test, seed=1).test_acc


@pytest.fixture(scope="session")
def lsp_case(cifar_train, cifar_test) -> LSPCase:
    from unpoison.attacks import create_attack
    from unpoison.data import profile_split, stratified_subset
    from unpoison.training import TrainConfig, train_on

    pool, clean_pool = profile_split(cifar_train, "cpu")
    train = stratified_subset(pool, per_class=100, seed=0)
    test = stratified_subset(cifar_test, per_class=50, seed=0)
    pds = create_attack("lsp", budget=4.0).poison(train, seed=0)
    cfg = TrainConfig.from_dict({"epochs": 8, "width": 0.25, "batch_size": 64}, preset="quick")
    none = train_on(pds, cfg, test=test, seed=1).test_acc
    return LSPCase(clean_pool, pds, test, cfg, none)
