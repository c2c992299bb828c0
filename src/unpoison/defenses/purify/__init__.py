"""Purifiers: data → data."""

from unpoison.defenses.purify import avatar, bdr, despeckle, dvae, eclipse, grayscale, jpeg, rcvae  # noqa: F401  (registration)
