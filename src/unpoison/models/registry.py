"""Model registry: builders register by name; :func:`create_model` validates arguments and records them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from unpoison.errors import UnpoisonError
from unpoison.models.base import ImageClassifier, check_io, check_width
from unpoison.registry import Registry
from unpoison.utils.io import to_jsonable

Builder = Callable[..., ImageClassifier]
B = TypeVar("B", bound=Builder)

MODELS: Registry[Builder] = Registry("model")

# Arguments every builder takes that are saved as their own fields, not in ``kwargs``.
_COMMON = ("num_classes", "in_channels", "mean", "std")


def register_model(fn: B) -> B:
    """Decorator: register a builder ``fn(num_classes, in_channels, *, mean, std, width, ...)`` under its name."""
    MODELS.register(fn.__name__, fn)
    return fn


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return MODELS.names()


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kw: Any) -> ImageClassifier:
    """Build the registered architecture ``name``; ``kw`` are its keyword arguments (``width``, ``mean``, ...)."""
    builder = MODELS.get(name)
    arch = name.lower()
    check_io(num_classes, in_channels)
    if "width" in kw:
        kw["width"] = check_width(kw["width"])
    sig = inspect.signature(builder)
    try:
        bound = sig.bind(num_classes=num_classes, in_channels=in_channels, **kw)
    except TypeError:
        accepted = ", ".join(p for p in sig.parameters if p not in ("num_classes", "in_channels"))
        bad = ", ".join(repr(k) for k in kw if k not in sig.parameters) or repr(sorted(kw))
        raise UnpoisonError(f"model {arch!r} does not take parameter {bad}; accepted: {accepted}") from None
    bound.apply_defaults()
    model = builder(*bound.args, **bound.kwargs)
    model.arch = arch
    # Every resolved argument (defaults included), so a saved model rebuilds identically even if defaults change.
    model.kwargs = to_jsonable({k: v for k, v in bound.arguments.items() if k not in _COMMON})
    return model
