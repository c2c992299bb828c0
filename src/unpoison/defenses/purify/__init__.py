"""Purifiers: data → data."""

from unpoison.defenses.purify import avatar, bdr, dvae, eclipse, grayscale, jpeg, rcvae  # noqa: F401  (registration)
