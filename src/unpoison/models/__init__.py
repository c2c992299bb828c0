"""Image classifiers: a registry of CIFAR-style architectures and safe (safetensors) model files.

Every model takes images in [0,1], normalizes them itself, and exposes ``features(x)`` and a linear ``head``.
"""

from __future__ import annotations

from unpoison.models.base import ImageClassifier
from unpoison.models.io import load_model, save_model
from unpoison.models.registry import MODELS, create_model, list_models, register_model

# Importing the families registers their architectures.
from unpoison.models import fastnet, resnet, resnet_cifar, vgg  # noqa: E402,F401  isort: skip

__all__ = ["ImageClassifier", "MODELS", "create_model", "list_models", "load_model", "register_model", "save_model"]
