"""Atomic file writes: a crash or a bad run never leaves a half-written file or clobbers the user's data."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=suffix if suffix is not None else target.suffix + ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def to_jsonable(obj: Any) -> Any:
    """Round-trip through json with the project's encoder (numpy scalars, paths, result objects)."""
    return json.loads(json.dumps(obj, default=_json_default))


def check_weights_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, if :func:`write_weights` may write it (its .json sibling holds the metadata)."""
    from unpoison.errors import UnpoisonError

    path = Path(path)
    if path.suffix.lower() == ".json":
        raise UnpoisonError(f"model path {path} must not end in .json (that name is used for the metadata file)")
    return path


def write_weights(path: str | os.PathLike[str], tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    """Write ``tensors`` to ``path`` (.safetensors, atomically) with ``meta`` as its one ``unpoison`` metadata key, and
    the same metadata, readable, beside it as ``path`` with suffix .json.

    One metadata key: safetensors writes its metadata map in a random order (safetensors issue #584), so with two keys
    the same weights would be saved as different bytes from one save to the next."""
    from safetensors.torch import save_file

    path = check_weights_path(path)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path, suffix=".tmp.safetensors") as tmp:
        save_file(cpu, str(tmp), metadata={"unpoison": json.dumps(meta)})
    write_json_atomic(path.with_suffix(".json"), meta)


def read_weights(path: str | os.PathLike[str], what: str = "model") -> tuple[dict[str, Any], str | None]:
    """The tensors of a safetensors file written by :func:`write_weights` and its raw ``unpoison`` metadata (None
    when absent); a missing, non-file or unreadable ``path`` is a one-line error naming ``what`` it should be."""
    from safetensors import safe_open

    from unpoison.errors import UnpoisonError

    path = Path(path)
    if not path.exists():
        raise UnpoisonError(f"{what} file {path} not found")
    if path.is_dir():
        raise UnpoisonError(f"{what} path {path} is a directory; give the .safetensors file inside it")
    if not path.is_file():
        raise UnpoisonError(f"{what} path {path} is not a file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get("unpoison")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several error types for a bad or truncated file
        lines = str(e).strip().splitlines()
        raise UnpoisonError(f"{path} is not a readable safetensors file ({lines[0] if lines else type(e).__name__})"
                            ) from None
    return tensors, raw


def read_run_checkpoint(path: Path, fingerprint: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """A resumable run's safetensors checkpoint: (JSON state from its metadata, tensors), or None if absent.

    One-line errors for an unreadable file and for a checkpoint written by another run (different fingerprint)."""
    from safetensors import safe_open

    from unpoison.errors import UnpoisonError

    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {}).get("state", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several error types for a bad header
        raise UnpoisonError(f"checkpoint {path} is not a readable safetensors file: {str(e).splitlines()[0]}") from None
    if state.get("fingerprint") != fingerprint:
        raise UnpoisonError(f"checkpoint {path} belongs to another run (config, seed or data differ); "
                            "delete it or choose another checkpoint_dir")
    return state, tensors


def write_run_checkpoint(path: Path, tensors: dict[str, Any], state: dict[str, Any],
                         optimizer: Any | None = None) -> None:
    """Write what :func:`read_run_checkpoint` reads, atomically: ``tensors`` plus, given an optimizer, its per-parameter
    state as ``opt.{i}.{key}`` (Adam's moments and step), with ``state`` as JSON metadata."""
    import torch
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    if optimizer is not None:
        for i, st in optimizer.state_dict()["state"].items():
            for key, val in st.items():
                tensors[f"opt.{i}.{key}"] = torch.as_tensor(val).detach().contiguous().cpu()
    with atomic_path(path, suffix=".tmp.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})


def load_optimizer_state(optimizer: Any, tensors: dict[str, Any], device: Any) -> None:
    """Restore the ``opt.{i}.{key}`` tensors :func:`write_run_checkpoint` wrote into ``optimizer`` (on ``device``;
    the step counter stays where the optimizer keeps it, on the CPU)."""
    state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, key = k.split(".", 2)
            state.setdefault(int(i), {})[key] = v if key == "step" else v.to(device)
    sd = optimizer.state_dict()
    sd["state"] = state
    optimizer.load_state_dict(sd)
