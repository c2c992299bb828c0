"""The one progress bar of every long loop (training, attack generation, fitting and purification)."""

from __future__ import annotations

from typing import Any


class Bar:
    """A rich progress bar: ``description``, bar, done/total, an ``info`` text (a loss, an accuracy), time left.

    A no-op when ``enabled`` is false, so a loop calls it unconditionally. ``update`` leaves the info and the
    description as they are unless given, so a loop can refresh the loss every few steps only (reading a loss can
    synchronise a device)."""

    def __init__(self, enabled: bool, total: int, description: str, done: int = 0) -> None:
        self._p = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
        self._task = self._p.add_task(description, total=total, completed=done, info="")
        self._p.start()

    @property
    def enabled(self) -> bool:
        """Whether the bar shows: a loop computes its info text only then (reading a loss can sync a device)."""
        return self._p is not None

    def update(self, n: int = 1, info: str | None = None, description: str | None = None) -> None:
        if self._p is None:
            return
        kw: dict[str, Any] = {"advance": n}
        if info is not None:
            kw["info"] = info
        if description is not None:
            kw["description"] = description
        self._p.update(self._task, **kw)

    def close(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
