"""Detect methods (see the issues for what lands here)."""
