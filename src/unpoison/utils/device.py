"""Device selection in one place."""

from __future__ import annotations

import functools
import types
from pathlib import Path
from typing import Any

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


@functools.lru_cache(maxsize=1)
def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX bf16 tiles (Sapphire Rapids and later), where oneDNN runs bf16 convs fast.

    Measured on such a 2-core machine: bf16 autocast trains FastNet 2.64x faster than fp32 at equal accuracy;
    on CPUs without AMX it ran at 0.081x (docs/benchmarks.md). Linux exposes the flag in /proc/cpuinfo; elsewhere
    we say no and stay in fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "amx_bf16" in line.split() for line in text.splitlines())


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """What an ``amp`` setting (auto | off | bf16 | fp16) means on ``device``; None = fp32.

    ``auto``: bf16 on CUDA and on CPUs with AMX (2.64x faster there, same accuracy); fp32 elsewhere, since bf16
    autocast on a CPU without AMX runs at 0.081x fp32 (both measured: docs/benchmarks.md).
    """
    if amp == "off":
        return None
    if amp == "auto" and not (device.type == "cuda" or (device.type == "cpu" and cpu_has_amx_bf16())):
        return None
    return torch.float16 if amp == "fp16" else torch.bfloat16


def precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def compiled_or_error(fn: Any) -> Any:
    """``fn`` (a function or a module) under torch.compile, a compiler failure (no C++ toolchain, an unsupported
    backend) turned into a one-line error rather than a silent eager fallback."""
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import InductorError

    # A fresh copy of the code object per call: dynamo caches compiled graphs per code object and, past 8
    # recompiles (each new model is one), would run the function eagerly with only a warning; each caller (a
    # training stage) compiles its own copy, so a process that fits many times keeps compiling.
    if not isinstance(fn, types.FunctionType):  # a module or another callable: compile a function that calls it
        target = fn
        fn = lambda *args: target(*args)  # noqa: E731
    fresh = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    compiled = torch.compile(fresh)

    def call(*args: Any) -> Any:
        try:
            return compiled(*args)
        except (BackendCompilerFailed, InductorError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnpoisonError(f"compile=true: torch.compile failed ({first}); set compile=false") from None
    return call
