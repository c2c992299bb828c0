"""Attacks: data → poisoned data. Importing this package registers every built-in attack."""

from unpoison.attacks.base import ATTACKS, Attack, BackdoorAttack, create_attack, register_attack

from unpoison.attacks import availability, backdoor  # noqa: E402,F401  (registration)

__all__ = ["ATTACKS", "Attack", "BackdoorAttack", "create_attack", "register_attack"]
