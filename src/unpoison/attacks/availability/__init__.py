"""Availability (unlearnable-example) poisons."""
