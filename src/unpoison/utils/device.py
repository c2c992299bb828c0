"""Device selection in one place."""

from __future__ import annotations

import torch

from unpoison.errors import UnpoisonError


def select_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit name is checked for availability."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UnpoisonError(f"device {name!r} requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UnpoisonError("device 'mps' requested but MPS is not available")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise UnpoisonError(f"invalid device {name!r}: {e}") from None
