"""A tiny name → object registry, shared by models, attacks, defenses, recipes and transforms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from unpoison.errors import UnpoisonError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps lower-case names to objects; unknown names raise a one-line error that lists the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""
        key = name.lower()

        def add(o: T) -> T:
            if key in self._items and self._items[key] is not o:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name.lower()]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnpoisonError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
