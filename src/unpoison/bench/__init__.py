"""Benchmark harness, demo and reports (top layer)."""
