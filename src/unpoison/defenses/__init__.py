"""Defenses. Importing this package registers every built-in method."""

from unpoison.defenses.base import (DETECTORS, PURIFIERS, REPAIRERS, SANITIZERS, DetectResult, Detector, Purifier,
                                    Repairer, SanitizeResult, Sanitizer, create_purifier, register_purifier)

from unpoison.defenses import purify  # noqa: E402,F401  (registration)

__all__ = ["PURIFIERS", "SANITIZERS", "DETECTORS", "REPAIRERS", "Purifier", "Sanitizer", "Detector", "Repairer",
           "SanitizeResult", "DetectResult", "create_purifier", "register_purifier"]
