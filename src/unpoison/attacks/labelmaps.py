"""Label maps shared by every backdoor attack: all-to-one, all-to-all, and source-specific."""

from __future__ import annotations

import numpy as np

from unpoison.errors import UnpoisonError


def target_labels(labels: np.ndarray, mode: str, target: int, num_classes: int) -> np.ndarray:
    """all2one → ``target``; all2all → (y + 1) mod K."""
    labels = np.asarray(labels)
    if mode == "all2one":
        return np.full_like(labels, target)
    if mode == "all2all":
        return (labels + 1) % num_classes
    raise UnpoisonError(f"unknown label mode {mode!r}; known: all2one, all2all")


def eligible(labels: np.ndarray, mode: str, target: int, source: int | None) -> np.ndarray:
    """Which samples an attack may poison: not already of the target class, and of ``source`` if one is given."""
    labels = np.asarray(labels)
    ok = labels != target if mode == "all2one" else np.ones(len(labels), bool)
    if source is not None and source >= 0:
        ok &= labels == source
    return ok


def choose_poison_indices(eligible_mask: np.ndarray, rate: float, n_total: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted positions of round(rate · n_total) samples drawn uniformly from the eligible ones.

    The rate is a fraction of the whole training set (the usual convention); 0 is allowed (a clean baseline).
    """
    k = int(round(rate * n_total))
    pool = np.flatnonzero(eligible_mask)
    if k > len(pool):
        raise UnpoisonError(f"poison_rate {rate} asks for {k} poisoned samples but only {len(pool)} are eligible")
    return np.sort(rng.choice(pool, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
