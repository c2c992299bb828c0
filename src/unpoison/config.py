"""Typed, validated configs (dataclasses) with YAML files and ``key=value`` overrides.

Every method's parameters live in a subclass of :class:`Config`. Field defaults are the CPU defaults chosen by
measurement; ``PRESETS["paper"]`` holds the published values. Precedence: defaults < preset < YAML file < CLI.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from unpoison.errors import UnpoisonError

C = TypeVar("C", bound="Config")


def check(condition: bool, message: str) -> None:
    """Raise a one-line :class:`UnpoisonError` when a parameter is invalid."""
    if not condition:
        raise UnpoisonError(message)


def _coerce(value: Any, tp: Any, name: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except UnpoisonError as e:
                errors.append(str(e))
        raise UnpoisonError(errors[0] if errors else f"{name}: invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if isinstance(value, bool) and value not in allowed:
            # YAML 1.1 reads a bare `off`/`no` as False: map it back to the word the choice spells
            words = ("on", "yes", "true") if value else ("off", "no", "false")
            value = next((w for w in words if w in allowed), value)
        check(value in allowed, f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        check(isinstance(value, (list, tuple)), f"{name} must be a list; got {value!r}")
        args = get_args(tp)
        elem = args[0] if args else Any
        out = [_coerce(v, elem, name) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        check(isinstance(value, dict), f"{name} must be a mapping; got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        check(isinstance(value, bool), f"{name} must be true or false; got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise UnpoisonError(f"{name} must be an integer; got {value!r}") from None
        check(isinstance(value, int) and not isinstance(value, bool), f"{name} must be an integer; got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                value = _parse_fraction(value)
            except ValueError:
                raise UnpoisonError(f"{name} must be a number; got {value!r}") from None
        check(isinstance(value, (int, float)) and not isinstance(value, bool),
              f"{name} must be a number; got {value!r}")
        return float(value)
    if tp is str:
        check(isinstance(value, (str, int, float)), f"{name} must be a string; got {value!r}")
        return str(value)
    return value


def _parse_fraction(s: str) -> float:
    """Accept '8/255' as well as '0.031' (budgets are usually written as fractions)."""
    if "/" in s:
        num, den = s.split("/", 1)
        return float(num) / float(den)
    return float(s)


@dataclasses.dataclass
class Config:
    """Base class: subclasses are dataclasses whose ``validate`` raises on bad values."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def __post_init__(self) -> None:
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(getattr(self, f.name), hints[f.name], f.name))
        self.validate()

    def validate(self) -> None:  # overridden by subclasses
        """Check parameter ranges; raise :class:`UnpoisonError` with a one-line message."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None = None, preset: str | None = None) -> C:
        merged: dict[str, Any] = {}
        if preset is not None:
            check(preset in cls.PRESETS,
                  f"unknown preset {preset!r} for {cls.__name__}; known: {', '.join(cls.PRESETS) or 'none'}")
            merged.update(cls.PRESETS[preset])
        merged.update(data or {})
        names = set(cls.field_names())
        unknown = sorted(set(merged) - names)
        check(not unknown,
              f"unknown parameter(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(names))}")
        return cls(**merged)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    def replace(self: C, **changes: Any) -> C:
        return self.from_dict({**self.to_dict(), **changes})

    def with_overrides(self: C, overrides: typing.Sequence[str] | dict[str, Any] | None) -> C:
        return self.replace(**parse_overrides(overrides))


_YAML11_WORDS = {"on", "off", "yes", "no", "y", "n"}


def parse_overrides(overrides: typing.Sequence[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``["lr=0.1", "widths=64,128"]`` → ``{"lr": 0.1, "widths": "64,128"}`` (values parsed as YAML scalars)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        check("=" in item, f"override {item!r} must look like key=value")
        key, raw = item.split("=", 1)
        key = key.strip().replace("-", "_")
        check(bool(key), f"override {item!r} has an empty key")
        if raw.strip().lower() in _YAML11_WORDS:
            out[key] = raw.strip()  # `amp=off` means the choice "off", not False; bool fields accept the word too
            continue
        try:
            val = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            val = raw
        out[key] = val
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    check(p.is_file(), f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "parse error"
        raise UnpoisonError(f"config file {p} is not valid YAML: {first}") from None
    if data is None:
        return {}
    check(isinstance(data, dict), f"config file {p} must hold a mapping of parameter: value")
    return data


def build_config(cls: type[C], *, preset: str | None = None, file: str | Path | None = None,
                 overrides: typing.Sequence[str] | dict[str, Any] | None = None) -> C:
    """defaults < preset < YAML file < overrides."""
    data: dict[str, Any] = {}
    if file is not None:
        data.update(load_yaml(file))
    data.update(parse_overrides(overrides))
    return cls.from_dict(data, preset=preset)
