"""Shared fixtures: small, seeded subsets of the real CIFAR-10 from ../shared/data (unpacked on first use)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# Tests are many small jobs; two threads each is the machine's whole size.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _private_attack_cache(tmp_path_factory):
    """Attack generations made by tests go to a throwaway cache, never into the user's ~/.cache/unpoison (where a
    benchmark's real generations live). Tests that check the environment variable set their own."""
    old = os.environ.get("UNPOISON_CACHE")
    os.environ["UNPOISON_CACHE"] = str(tmp_path_factory.mktemp("unpoison-cache"))
    yield
    if old is None:
        os.environ.pop("UNPOISON_CACHE", None)
    else:
        os.environ["UNPOISON_CACHE"] = old


def _ensure_data() -> Path:
    root = Path(os.environ.get("UNPOISON_DATA") or REPO / ".data")
    if not (root / "cifar10.npz").is_file():
        unpack = REPO.parent / "shared" / "data" / "unpack.py"
        if not unpack.is_file():
            pytest.exit(f"CIFAR-10 not found under {root} and {unpack} is missing; set UNPOISON_DATA", returncode=2)
        subprocess.run([sys.executable, str(unpack), str(root)], check=True)
    os.environ["UNPOISON_DATA"] = str(root)
    return root


@pytest.fixture(scope="session")
def data_root() -> Path:
    return _ensure_data()


@pytest.fixture(scope="session")
def cifar_train(data_root):
    from unpoison.data import load

    return load("cifar10", root=data_root)


@pytest.fixture(scope="session")
def cifar_test(data_root):
    from unpoison.data import load

    return load("cifar10:test", root=data_root)


@pytest.fixture(scope="session")
def cifar_small(cifar_train):
    """500 real training images, 50 per class."""
    from unpoison.data import stratified_subset

    return stratified_subset(cifar_train, per_class=50, seed=0)


@pytest.fixture(scope="session")
def cifar_test_small(cifar_test):
    """500 real test images, 50 per class."""
    from unpoison.data import stratified_subset

    return stratified_subset(cifar_test, per_class=50, seed=0)
