"""Model files: safetensors weights plus JSON metadata that rebuilds the architecture. Never pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from unpoison.errors import UnpoisonError
from unpoison.models.base import ImageClassifier
from unpoison.models.registry import MODELS, create_model
from unpoison.utils.io import check_weights_path, read_weights, to_jsonable, write_weights

FORMAT = "unpoison-model"
VERSION = 1
_CORE = ("format", "version", "arch", "num_classes", "in_channels", "kwargs", "mean", "std")


def model_info(model: ImageClassifier, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The metadata :func:`save_model` writes: what rebuilds ``model``, plus ``extra``."""
    info: dict[str, Any] = {"format": FORMAT, "version": VERSION, "arch": model.arch,
                            "num_classes": model.num_classes, "in_channels": model.in_channels,
                            "kwargs": model.kwargs, "mean": list(model.mean), "std": list(model.std)}
    clash = sorted(set(extra or {}) & set(_CORE))
    if clash:
        raise UnpoisonError(f"extra metadata may not override {', '.join(clash)}")
    return to_jsonable(info | (extra or {}))


def save_model(model: ImageClassifier, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
    """Write ``model`` to ``path`` (.safetensors) and the same metadata, readable, to ``path`` with suffix .json."""
    path = check_weights_path(path)  # before the model and extra: a bad path is the first thing to report
    model = getattr(model, "_orig_mod", model)  # a torch.compile wrapper shares the original's weights
    if not isinstance(model, ImageClassifier):
        raise UnpoisonError(f"can only save an ImageClassifier built by create_model; got {type(model).__name__}")
    if model.arch not in MODELS:
        raise UnpoisonError(f"cannot save a model of unregistered arch {model.arch!r}; build it with create_model")
    write_weights(path, model.state_dict(), model_info(model, extra))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_model(path: str | os.PathLike[str],
               device: str | torch.device = "cpu") -> tuple[ImageClassifier, dict[str, Any]]:
    """Read a model written by :func:`save_model`; returns ``(model in eval mode on device, metadata)``."""
    path = Path(path)
    tensors, raw = read_weights(path)
    info = _parse_info(path, raw)
    try:
        model = create_model(info["arch"], num_classes=info["num_classes"], in_channels=info["in_channels"],
                             mean=info["mean"], std=info["std"], **info["kwargs"])
    except (TypeError, ValueError) as e:  # UnpoisonError is a ValueError
        raise UnpoisonError(f"{path}: cannot rebuild the model: {_first_line(e)}") from None
    _check_state(path, model, tensors, info)
    model.load_state_dict(tensors)
    return model.to(device).eval(), info


def _parse_info(path: Path, raw: str | None) -> dict[str, Any]:
    if raw is None:
        raise UnpoisonError(f"{path} is a safetensors file but not an unpoison model (no 'unpoison' metadata)")
    try:
        info = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UnpoisonError(f"{path} has invalid 'unpoison' metadata: {e}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise UnpoisonError(f"{path} has invalid 'unpoison' metadata: format is not {FORMAT!r}")
    version = info.get("version")
    if not isinstance(version, int) or version < 1:
        raise UnpoisonError(f"{path} has invalid 'unpoison' metadata: bad version {version!r}")
    if version > VERSION:
        raise UnpoisonError(f"{path} uses model format version {version}; this unpoison reads up to {VERSION}")
    types = {"arch": str, "num_classes": int, "in_channels": int, "kwargs": dict, "mean": list, "std": list}
    for key, tp in types.items():
        if not isinstance(info.get(key), tp) or isinstance(info.get(key), bool):
            raise UnpoisonError(f"{path} has invalid 'unpoison' metadata: {key!r} missing or not a {tp.__name__}")
    reserved = sorted(set(info["kwargs"]) & {"num_classes", "in_channels", "mean", "std"})
    if reserved:
        raise UnpoisonError(f"{path} has invalid 'unpoison' metadata: kwargs may not contain {', '.join(reserved)}")
    return info


def _check_state(path: Path, model: ImageClassifier, tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """Name the first difference between the file's tensors and the architecture the metadata describes."""
    expected = model.state_dict()
    what = (f"{info['arch']} (num_classes={info['num_classes']}, in_channels={info['in_channels']}, "
            f"kwargs={json.dumps(info['kwargs'])})")
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), first {missing[0]!r}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first {unexpected[0]!r}")
        raise UnpoisonError(f"{path}: weights do not match {what}: {'; '.join(parts)}")
    for k, v in expected.items():
        if tensors[k].shape != v.shape:
            raise UnpoisonError(f"{path}: weights do not match {what}: shape mismatch at {k!r}: file "
                                f"{tuple(tensors[k].shape)}, model {tuple(v.shape)}")
