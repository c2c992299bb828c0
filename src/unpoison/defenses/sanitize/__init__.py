"""Sanitize methods (see the issues for what lands here)."""
