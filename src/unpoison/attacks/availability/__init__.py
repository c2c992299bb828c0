"""Availability (unlearnable-example) poisons."""

from unpoison.attacks.availability import lsp  # noqa: F401  (registration)
from unpoison.attacks.availability import ar, ops, urp  # noqa: F401  (registration)
from unpoison.attacks.availability import em, rem, sep, tap  # noqa: F401  (registration; surrogate-based, cached)
