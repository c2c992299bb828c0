"""Backdoor poisons."""

from unpoison.attacks.backdoor import badnets  # noqa: F401  (registration)
from unpoison.attacks.backdoor import adaptive_blend, blend, pixel, sig, wanet  # noqa: F401  (registration)
from unpoison.attacks.backdoor import lc  # noqa: F401  (registration; surrogate-based, cached)
