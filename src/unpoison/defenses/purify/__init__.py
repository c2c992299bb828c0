"""Purifiers: data → data."""

from unpoison.defenses.purify import bdr, grayscale, jpeg  # noqa: F401  (registration)
