"""Printing is the CLI's job: JSON for machines, rich tables for people."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from unpoison.utils.io import to_jsonable

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, justify="left" if c == columns[0] else "right")
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    console.print(t)


def kv(title: str, items: dict[str, Any]) -> None:
    t = Table(title=title, title_justify="left", show_header=False)
    t.add_column("key")
    t.add_column("value")
    for k, v in items.items():
        t.add_row(k, _fmt(v))
    console.print(t)


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v) if len(v) <= 12 else f"{len(v)} items"
    if isinstance(v, dict):
        return json.dumps(to_jsonable(v))
    return str(v)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"
