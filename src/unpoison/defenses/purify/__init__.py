"""Purifiers: data → data."""
