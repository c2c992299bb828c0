"""Generation cache and resumable checkpoints for expensive (surrogate-based) attacks.

A poisoned dataset is cached under a key that hashes everything its pixels depend on:

* the attack's name and its parameters (minus run-only fields such as ``device`` or ``progress``),
* a fingerprint of the input dataset (SHA-256 of the image bytes, labels, shape and class names),
* the seed,
* the code version: ``unpoison.__version__`` plus the attack's own ``cache_version`` (bump it when the algorithm
  changes in a way that changes its output).

Layout under the cache root (``$UNPOISON_CACHE``, else ``~/.cache/unpoison``; an attack's ``cache_dir`` parameter
wins over both)::

    attacks/<name>/<key>/poisoned.npz      the finished result (written atomically via unpoison.data.storage)
    attacks/<name>/<key>/key.json          what went into the key (human-readable)
    attacks/<name>/<key>/state.safetensors periodic checkpoint while generating (tensors + JSON state in metadata)
    attacks/<name>/<key>/state.json        a readable copy of the checkpoint's JSON state (informational)
    attacks/<name>/<key>/surrogate.safetensors  the Trainer's per-epoch checkpoint, for attacks that train one

A checkpoint is one safetensors file written atomically, so it is always complete: an interrupted run continues from
the last one. Random streams are derived from (seed, step) rather than carried along, so a resumed run draws the same
numbers as an uninterrupted one; the tensors hold the perturbation and the surrogate's weights and optimizer state.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import unpoison
from unpoison.data.dataset import ImageDataset, PoisonedDataset
from unpoison.errors import UnpoisonError
from unpoison.utils.io import atomic_path, to_jsonable, write_json_atomic

CACHE_ENV = "UNPOISON_CACHE"

# Counters for tests and logs (no timing involved): how often a cached result was reused or generated.
STATS: dict[str, int] = {"hits": 0, "misses": 0, "resumed": 0}


class GenerationInterrupted(UnpoisonError):
    """Raised when a generation is stopped on purpose (``stop_after``) after writing a checkpoint."""


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: ``override``, else ``$UNPOISON_CACHE``, else ``~/.cache/unpoison``."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "unpoison"


def dataset_fingerprint(ds: ImageDataset) -> str:
    """SHA-256 over the image bytes, labels, image shape and class names (not over provenance fields)."""
    h = hashlib.sha256()
    h.update(json.dumps({"shape": list(ds.images.shape), "classes": list(ds.class_names)}).encode())
    h.update(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(ds.labels.astype(np.int64)).tobytes())
    return h.hexdigest()


def cache_key_parts(name: str, params: dict[str, Any], fingerprint: str, seed: int,
                    cache_version: int, context: dict[str, Any] | None = None) -> dict[str, Any]:
    parts = {"attack": name, "params": to_jsonable(params), "data": fingerprint, "seed": int(seed),
             "unpoison": unpoison.__version__, "cache_version": int(cache_version)}
    if context:  # only when present, so entries stored before the context existed keep their key
        parts["context"] = to_jsonable(context)
    return parts


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


class Checkpoint:
    """A resumable generation state: named tensors plus a JSON-able dict, in one atomically written file."""

    def __init__(self, folder: Path | None, every: int = 1) -> None:
        self.folder = folder
        self.every = max(1, int(every))
        self.stop_after: int | None = None  # stop (after saving) once this many units are done: tests, interruption
        self._saves = 0

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / "state.safetensors"

    @property
    def surrogate_path(self) -> Path | None:
        return None if self.folder is None else self.folder / "surrogate.safetensors"

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        if self.path is None or not self.path.exists():
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            state = json.loads(meta["state"])
        except Exception as e:  # safetensors raises several error types for a damaged header
            raise UnpoisonError(f"checkpoint {self.path} is damaged ({type(e).__name__}); "
                                "delete it to start over") from None
        STATS["resumed"] += 1
        return tensors, state

    def save(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        if self.path is None:
            return
        from safetensors.torch import save_file

        text = json.dumps(to_jsonable(state))
        flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        with atomic_path(self.path, suffix=".tmp.safetensors") as tmp:
            save_file(flat, str(tmp), metadata={"state": text})
        write_json_atomic(self.path.with_suffix(".json"), json.loads(text))
        self._saves += 1

    def due(self, done: int, total: int) -> bool:
        """Whether to checkpoint after ``done`` of ``total`` units."""
        return done == total or done % self.every == 0 or (self.stop_after is not None and done >= self.stop_after)

    def maybe_stop(self, done: int, total: int) -> None:
        if self.stop_after is not None and self.stop_after <= done < total:
            raise GenerationInterrupted(f"generation stopped after {done} unit(s); rerun to resume from "
                                        f"{self.path}")

    def clear(self) -> None:
        for p in (self.path, self.surrogate_path):
            if p is not None and p.exists():
                p.unlink()
        if self.path is not None and self.path.with_suffix(".json").exists():
            self.path.with_suffix(".json").unlink()


def _params_for_key(attack: Any) -> dict[str, Any]:
    params = attack.config.to_dict()
    for k in getattr(attack, "cache_exclude", ()):
        params.pop(k, None)
    return params


def run_cached(attack: Any, ds: ImageDataset, seed: int,
               generate: Callable[[Checkpoint], PoisonedDataset]) -> PoisonedDataset:
    """Return the cached result for (attack, ds, seed) or call ``generate(checkpoint)`` and store what it returns.

    ``attack`` needs ``name``, ``config`` (with ``cache: bool``, ``cache_dir: str``, ``checkpoint_every: int``),
    ``cache_version`` and ``cache_exclude``; ``attack.stop_after`` (if set) interrupts generation on purpose.
    ``attack.cache_context()`` (optional) adds what the config does not say but changes the result, e.g. the
    precision a surrogate trains in, which ``amp=auto`` resolves per machine.
    """
    from unpoison.data.storage import load_dataset, save_dataset

    cfg = attack.config
    every = int(getattr(cfg, "checkpoint_every", 1))
    if not getattr(cfg, "cache", True):
        ck = Checkpoint(None, every)
        ck.stop_after = getattr(attack, "stop_after", None)
        STATS["misses"] += 1
        return generate(ck)
    context = attack.cache_context() if hasattr(attack, "cache_context") else None
    parts = cache_key_parts(attack.name, _params_for_key(attack), dataset_fingerprint(ds), seed,
                            getattr(attack, "cache_version", 1), context)
    key = cache_key(parts)
    folder = cache_root(getattr(cfg, "cache_dir", None) or None) / "attacks" / attack.name / key
    result = folder / "poisoned.npz"
    if result.exists():
        try:
            pds = load_dataset(result)
        except UnpoisonError:
            pds = None  # a damaged cache entry is regenerated, never trusted
        if isinstance(pds, PoisonedDataset) and len(pds) == len(ds):
            STATS["hits"] += 1
            # Provenance and meta of the caller's dataset (not part of the key) are the caller's.
            pds.source, pds.indices, pds.meta = ds.source, ds.indices.copy(), dict(ds.meta)  # type: ignore[union-attr]
            return pds
    STATS["misses"] += 1
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "key.json", parts | {"key": key})
    ck = Checkpoint(folder, every)
    ck.stop_after = getattr(attack, "stop_after", None)
    pds = generate(ck)
    pds.attack["cache_key"] = key
    save_dataset(pds, result)
    ck.clear()  # the finished result supersedes the checkpoints
    return pds


def clear_cache(root: str | os.PathLike[str] | None = None, name: str | None = None) -> None:
    """Delete cached attack results (all, or one attack's)."""
    base = cache_root(root) / "attacks"
    target = base / name if name else base
    if target.exists():
        shutil.rmtree(target)
