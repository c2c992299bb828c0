"""One exception type for every problem caused by the user's input.

The CLI turns an :class:`UnpoisonError` into a one-line message and exit status 2; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class UnpoisonError(ValueError):
    """Bad input: a missing or malformed file, an invalid parameter, an unknown method name."""
