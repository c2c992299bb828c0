"""unpoison: defend image classifiers against data poisoning."""

__version__ = "0.1.0"
