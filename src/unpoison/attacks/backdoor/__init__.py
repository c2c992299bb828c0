"""Backdoor poisons."""
