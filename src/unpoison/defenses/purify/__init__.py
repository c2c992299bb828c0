"""Purifiers: data → data."""

from unpoison.defenses.purify import (  # noqa: F401  (registration)
    avatar, bdr, despeckle, dvae, eclipse, grayscale, jpeg, rcvae)
